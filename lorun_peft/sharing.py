"""How the K stages share their denoiser: one trainable copy (Block-1), K copies (Block-K), or one
frozen base with K adapters (LoRun, in ``adapters.StageAdapters``). Every variant is called as
``denoisers(k, z, *extra)`` and runs stage k's denoiser.

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

__all__ = ["SharedDenoiser", "IndependentDenoisers", "SHARE_MODES"]

SHARE_MODES = ("lora", "base", "none")


class SharedDenoiser(nn.Module):
    """Block-1: every stage calls the same trainable denoiser."""

    adapter_names: list[str] = []

    def __init__(self, denoiser: nn.Module) -> None:
        super().__init__()
        self.denoiser = denoiser

    def forward(self, k: int, *args: Any) -> torch.Tensor:
        return self.denoiser(*args)


class IndependentDenoisers(nn.Module):
    """Block-K: K independent trainable copies of the denoiser, one per stage."""

    adapter_names: list[str] = []

    def __init__(self, denoiser: nn.Module | list[nn.Module], K: int) -> None:  # noqa: N803
        """``denoiser``: one module copied K times, or K modules used as they are."""
        super().__init__()
        given = isinstance(denoiser, list)
        self.denoisers = nn.ModuleList(denoiser if given else (copy.deepcopy(denoiser) for _ in range(K)))

    def forward(self, k: int, *args: Any) -> torch.Tensor:
        return self.denoisers[k](*args)
