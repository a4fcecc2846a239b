"""What every reference denoiser shares: building from ``config()`` and from named presets, the
constructor-arguments dict PEFT reads (``DenoiserConfig``), the input check, the noise-level map
and padding to a multiple."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from lorun_peft.errors import InvalidArgumentError

__all__ = ["Buildable", "DenoiserConfig", "Sigma", "check_flags", "check_input", "noise_level_map", "pad_to_multiple"]

Sigma = float | torch.Tensor | None


class Buildable:
    """Mixin: ``cls.from_config(net.config())`` and ``cls.preset(name, **overrides)``.

    >>> from lorun_peft.denoisers import UNet
    >>> UNet.preset("paper-cs", width=8).config()["width"]
    8
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        """Build from ``net.config()`` (a JSON-able dict of constructor arguments)."""
        return cls(**config)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Any:
        """Build a named preset (see ``cls.PRESETS``); keyword arguments override its values."""
        if name not in cls.PRESETS:
            raise InvalidArgumentError(f"name: unknown {cls.__name__} preset {name!r}; available: {sorted(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], **overrides})


def check_flags(in_channels: int, out_channels: int, **flags: Any) -> None:
    """Every flag must be a bool; ``residual=True`` needs as many output as input channels."""
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise InvalidArgumentError(f"{name} must be a bool, got {flag!r}")
    if flags.get("residual") and out_channels != in_channels:
        raise InvalidArgumentError(
            f"residual=True needs out_channels == in_channels, got out_channels={out_channels}"
            f" and in_channels={in_channels}"
        )


def check_input(x: Any, in_channels: int) -> None:
    """``x`` must be an (N, in_channels, H, W) tensor."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != in_channels:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InvalidArgumentError(
            f"x must be a tensor of shape (N, {in_channels}, H, W), got {shape}"
        )


def noise_level_map(sigma: Sigma, x: torch.Tensor) -> torch.Tensor:
    """Expand a noise level into a constant map of shape (N, 1, H, W) like ``x``.

    ``sigma`` may be None (meaning 0), a python number, a 0-dim tensor, or a per-sample tensor
    with N elements, e.g. of shape (N,) or (N, 1, 1, 1) (deepinv's convention). Tensors keep
    their autograd graph, so a learnable noise level gets gradients.

    >>> import torch
    >>> noise_level_map(torch.tensor([0.1, 0.2]), torch.zeros(2, 3, 4, 5)).shape
    torch.Size([2, 1, 4, 5])
    """
    n, _, h, w = x.shape
    if sigma is None:
        return x.new_zeros(n, 1, h, w)
    if isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        return x.new_full((n, 1, h, w), float(sigma))
    if not isinstance(sigma, torch.Tensor):
        raise InvalidArgumentError(
            f"sigma must be None, a number or a tensor, got {type(sigma).__name__}"
        )
    if sigma.numel() not in (1, n):
        raise InvalidArgumentError(
            f"sigma must have 1 or N={n} elements (shape (), (N,) or (N, 1, 1, 1)), "
            f"got shape {tuple(sigma.shape)}"
        )
    return sigma.to(dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1).expand(n, 1, h, w)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom and right of ``x`` (replicating the border) so H and W divide ``multiple``."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


class DenoiserConfig(dict):
    """The constructor arguments of a denoiser: a JSON-able dict that can also be called.

    ``net.config()`` returns a plain-dict copy, ``net.config["width"]`` reads one value. It is a
    dict, not a method, because PEFT reads ``model.config`` as a Hugging Face-style config dict
    (``merge_and_unload`` and ``save_pretrained`` fail on a model whose ``config`` is a method).

    >>> cfg = DenoiserConfig(width=8)
    >>> cfg(), cfg["width"], cfg.get("tie_word_embeddings")
    ({'width': 8}, 8, None)
    """

    def __call__(self) -> dict[str, Any]:
        return dict(self)
