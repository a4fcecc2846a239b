"""The paper's rank rule and the rank table: which layers get a per-stage adapter, at what rank.

>>> gamma_rank(64, 32, 10)
4
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from torch import nn

from ..errors import InvalidArgumentError

__all__ = ["gamma_rank", "check_gamma", "layer_dims", "LayerRank", "RankTable"]


def gamma_rank(in_dim: int, out_dim: int, gamma: float) -> int:
    """The paper's rank rule r = ceil(min(in_dim, out_dim) * gamma / 100).

    ``gamma`` is a percentage in (0, 100]; dims are channels (convolutions) or features (linear).
    Computed with exact fractions so that, e.g., 30 channels at gamma 10 give 3, not 4.

    >>> gamma_rank(64, 32, 10)
    4
    >>> gamma_rank(30, 30, 10)
    3
    """
    check_gamma(gamma)
    for name, dim in (("in_dim", in_dim), ("out_dim", out_dim)):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise InvalidArgumentError(f"{name} must be a positive int, got {dim!r}")
    return max(1, math.ceil(Fraction(min(in_dim, out_dim)) * Fraction(str(gamma)) / 100))


def check_gamma(gamma: Any) -> None:
    """Raise InvalidArgumentError unless gamma is a real number in (0, 100]."""
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma <= 100:
        raise InvalidArgumentError(f"gamma must be a number in (0, 100] (a percentage), got {gamma!r}")


def layer_dims(module: nn.Module) -> tuple[int, int]:
    """(in_dim, out_dim) of a conv (channels) or linear (features) layer."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return module.in_channels, module.out_channels


@dataclass(frozen=True)
class LayerRank:
    """One row of the rank table: an adapted layer and its per-stage rank."""

    name: str
    kind: str
    in_dim: int
    out_dim: int
    rank: int


@dataclass(frozen=True)
class RankTable:
    """Every adapted layer with its rank, and the weight layers left shared-only (with why)."""

    gamma: float
    adapter: str
    layers: tuple[LayerRank, ...]
    shared_only: tuple[tuple[str, str, str], ...]  # (name, kind, reason)

    def __str__(self) -> str:
        width = max([len(r.name) for r in self.layers] + [len(n) for n, _, _ in self.shared_only] + [5])
        lines = [f"{self.adapter} adapters, gamma = {self.gamma}%", f"{'layer':<{width}}  {'type':<8} {'in':>5} {'out':>5} {'rank':>4}"]
        lines += [f"{r.name:<{width}}  {r.kind:<8} {r.in_dim:>5} {r.out_dim:>5} {r.rank:>4}" for r in self.layers]
        if self.shared_only:
            lines.append("shared-only (no per-stage adapter):")
            lines += [f"  {name:<{width}}  {kind:<8} {reason}" for name, kind, reason in self.shared_only]
        return "\n".join(lines)
