"""Parameter accounting for an unfolded network: base, adapters, steps, operator, and the Block-K equivalent.

>>> r = ParameterReport(K=9, share="lora", base=1000, adapters={"stage_0": 30}, step=18, operator=0,
...                     trainable=48, total=1048, block_k=9018)
>>> round(r.fraction_of_block_k, 3)
0.116
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch

__all__ = ["ParameterReport", "count"]


def count(params: Iterable[torch.nn.Parameter]) -> int:
    """Number of scalars in ``params``, each tensor counted once."""
    seen: dict[int, int] = {}
    for p in params:
        seen[id(p)] = p.numel()
    return sum(seen.values())


@dataclass(frozen=True)
class ParameterReport:
    """Counts of an unfolded network's parameters, and what Block-K would cost."""

    K: int  # noqa: N815
    share: str
    base: int  # one copy of the denoiser's weights (frozen in LoRun)
    adapters: dict[str, int] = field(default_factory=dict)  # per stage
    step: int = 0  # rho/mu/lambda per stage
    operator: int = 0  # learnable operator state (e.g. the CS sampling matrix)
    trainable: int = 0
    total: int = 0
    block_k: int = 0  # K independent denoisers + step + operator

    @property
    def fraction_of_block_k(self) -> float:
        """total / block_k: what this network costs relative to Block-K."""
        return self.total / self.block_k

    def __str__(self) -> str:
        rows = [("base denoiser", self.base)]
        rows += [(f"adapter {name}", n) for name, n in self.adapters.items()]
        rows += [
            ("step parameters", self.step),
            ("operator", self.operator),
            ("trainable", self.trainable),
            ("total", self.total),
            (f"Block-{self.K} equivalent", self.block_k),
        ]
        width = max(len(r[0]) for r in rows)
        lines = [f"share={self.share!r}, K={self.K}"]
        lines += [f"{name:<{width}}  {n:>12,}" for name, n in rows]
        lines.append(f"{'total / Block-' + str(self.K):<{width}}  {self.fraction_of_block_k:>12.3f}")
        return "\n".join(lines)
