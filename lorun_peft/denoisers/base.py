"""What every reference denoiser shares: building from ``config()`` and from named presets."""

from __future__ import annotations

from typing import Any, ClassVar

from lorun_peft.errors import InvalidArgumentError

__all__ = ["Buildable", "check_flags"]


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
