"""Data steps (the paper's gradient/data module, GDM) and their per-stage positive parameters.

- PGD: z = x - rho_k A^T (A x - y); the denoiser then runs at noise level sqrt(rho_k lambda_k).
- HQS: x = argmin 1/2||A x - y||^2 + mu_k/2||x - w||^2 = prox_l2(w, y, 1/mu_k); the denoiser
  then runs at noise level sqrt(lambda_k / mu_k).

Step parameters start at 0.5 and stay positive and finite by construction: each is stored as
softplus^-1 of its value (a parametrisation, not a clamp).

>>> import torch
>>> step = PGDStep(K=3)
>>> step.rho(0).item()
0.5
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .operators.base import prox_l2_cg

__all__ = ["PositiveScalars", "PGDStep", "HQSStep", "DataStep", "STEPS"]

CG_ITERATIONS = 20  # fixed CG steps for HQS on operators without prox_l2


class PositiveScalars(nn.Module):
    """K learnable positive scalars, value_k = softplus(raw_k), all initialised to ``init``."""

    def __init__(self, K: int, init: float = 0.5) -> None:  # noqa: N803
        super().__init__()
        self.raw = nn.Parameter(torch.full((K,), math.log(math.expm1(init))))

    def forward(self, k: int) -> torch.Tensor:
        return F.softplus(self.raw[k])


class DataStep(Protocol):
    def __call__(self, k: int, x: torch.Tensor, y: torch.Tensor, operator: Any) -> torch.Tensor: ...

    def noise_sigma(self, k: int) -> torch.Tensor: ...


class PGDStep(nn.Module):
    """Proximal-gradient data step: z = x - rho_k A^T (A x - y)."""

    def __init__(self, K: int, noise_level: bool = False) -> None:  # noqa: N803
        super().__init__()
        self.rho = PositiveScalars(K)
        self.lam = PositiveScalars(K) if noise_level else None

    def forward(self, k: int, x: torch.Tensor, y: torch.Tensor, operator: Any) -> torch.Tensor:
        return x - self.rho(k) * operator.A_adjoint(operator.A(x) - y)

    def noise_sigma(self, k: int) -> torch.Tensor:
        return torch.sqrt(self.rho(k) * self.lam(k))


class HQSStep(nn.Module):
    """Half-quadratic-splitting data step: x = (A^T A + mu_k I)^-1 (A^T y + mu_k w).

    Uses the operator's ``prox_l2(w, y, 1/mu_k)`` when it has one, otherwise ``CG_ITERATIONS``
    differentiable conjugate-gradient steps.
    """

    def __init__(self, K: int, noise_level: bool = False) -> None:  # noqa: N803
        super().__init__()
        self.mu = PositiveScalars(K)
        self.lam = PositiveScalars(K) if noise_level else None

    def forward(self, k: int, w: torch.Tensor, y: torch.Tensor, operator: Any) -> torch.Tensor:
        gamma = 1.0 / self.mu(k)
        if hasattr(operator, "prox_l2"):
            return operator.prox_l2(w, y, gamma)
        return prox_l2_cg(operator.A, operator.A_adjoint, w, y, gamma, CG_ITERATIONS)

    def noise_sigma(self, k: int) -> torch.Tensor:
        return torch.sqrt(self.lam(k) / self.mu(k))


STEPS: dict[str, type[nn.Module]] = {"pgd": PGDStep, "hqs": HQSStep}
