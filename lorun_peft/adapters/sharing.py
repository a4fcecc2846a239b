"""How the K stages share their denoiser: one trainable copy (Block-1), K copies (Block-K), or one
frozen base with K adapters (LoRun, in ``adapters.StageAdapters``). Every variant is called as
``denoisers(k, z, *extra)`` and runs stage k's denoiser through :func:`call_stage`, so that under
``torch.compile`` one traced denoiser body serves all K stages.

>>> import torch
>>> from torch import nn
>>> d = IndependentDenoisers(nn.Conv2d(1, 1, 3, padding=1), K=2)
>>> d(1, torch.rand(1, 1, 4, 4)).shape
torch.Size([1, 1, 4, 4])
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["SharedDenoiser", "IndependentDenoisers", "SHARE_MODES", "call_stage"]

SHARE_MODES = ("lora", "base", "none")


def call_stage(denoiser: nn.Module, weights: dict[str, torch.Tensor], args: tuple[Any, ...], region: bool = True) -> torch.Tensor:
    """``denoiser(*args)`` with the tensors in ``weights`` (names as in ``named_parameters``) in
    place of its own (``torch.func.functional_call``); ``{}`` keeps them all.

    Eagerly a plain call. Under ``torch.compile`` with ``region`` and gradients off (inference) a
    nested compile region: dynamo traces it once and reuses that graph for every call whose
    inputs look alike (shapes, dtypes, the module's structure), so the K stages of a network share
    one compiled denoiser body, however their weights differ. A region must trace whole (no graph
    break inside the denoiser; dynamo raises otherwise); ``region=False`` lets dynamo inline the
    call as usual. With gradients on, calls are inlined too: in torch 2.14.1 inductor computes
    wrong gradients through a reused region on CPU (a region called 3 times in a chain: the first
    conv's weight gradient off by 0.06; aot_eager is right), so training graphs unroll the stages.

    >>> conv = nn.Conv2d(1, 1, 1, bias=False)
    >>> call_stage(conv, {"weight": torch.full((1, 1, 1, 1), 2.0)}, (torch.ones(1, 1, 1, 1),)).item()
    2.0
    """
    if not region or torch.is_grad_enabled():
        return _stage(denoiser, weights, args)
    return (_weighted_region if weights else _plain_region)(denoiser, weights, args)


def _stage(denoiser: nn.Module, weights: dict[str, torch.Tensor], args: tuple[Any, ...]) -> torch.Tensor:
    """The call itself, outside any region (eager, or ``region=False``)."""
    return torch.func.functional_call(denoiser, weights, args, strict=False) if weights else denoiser(*args)


def _reuse_key(denoiser: nn.Module, weights: dict[str, torch.Tensor], args: tuple[Any, ...]) -> int:
    """Calls with one key differ only in tensor values: the same module, weight names and weight
    gradient flags, the same argument shapes and gradient flags (the K stages of one forward; their
    weights have equal shapes since they fill the same slots). Sizes are part of the key, so under
    dynamic shapes the region specializes them: each image size compiles its own graph."""
    key = [id(denoiser), *weights, sum(w.requires_grad for w in weights.values())]
    for a in args:
        if isinstance(a, torch.Tensor):
            key += [a.requires_grad, *a.shape]
    return hash(tuple(key))


# Plain calls (Block-1, Block-K): dynamo's automatic reuse, which checks inputs and guards itself.
_plain_region = torch.compiler.nested_compile_region(lambda denoiser, weights, args: denoiser(*args))
# functional_call swaps parameters in and out, a side effect automatic reuse refuses (it would
# retrace every stage): weighted calls are keyed by _reuse_key instead.
_weighted_region = torch.compiler.nested_compile_region(
    lambda denoiser, weights, args: torch.func.functional_call(denoiser, weights, args, strict=False), reuse_hash_fn=_reuse_key
)


class SharedDenoiser(nn.Module):
    """Block-1: every stage calls the same trainable denoiser."""

    adapter_names: list[str] = []
    compile_region = True  # torch.compile: one traced denoiser body for all stages (see call_stage)

    def __init__(self, denoiser: nn.Module) -> None:
        super().__init__()
        self.denoiser = denoiser

    def forward(self, k: int, *args: Any) -> torch.Tensor:
        return call_stage(self.denoiser, {}, args, self.compile_region)


class IndependentDenoisers(nn.Module):
    """Block-K: K independent trainable copies of the denoiser, one per stage."""

    adapter_names: list[str] = []
    compile_region = True  # torch.compile: one traced denoiser body for all stages (see call_stage)

    def __init__(self, denoiser: nn.Module | list[nn.Module], K: int) -> None:  # noqa: N803
        """``denoiser``: one module copied K times, or K modules used as they are."""
        super().__init__()
        given = isinstance(denoiser, list)
        self.denoisers = nn.ModuleList(denoiser if given else (copy.deepcopy(denoiser) for _ in range(K)))

    def forward(self, k: int, *args: Any) -> torch.Tensor:
        return call_stage(self.denoisers[k], {}, args, self.compile_region)
