"""Data steps (the paper's gradient/data module, GDM) and their per-stage positive parameters.

- PGD: z = x - rho_k A^T (A x - y); the denoiser then runs at noise level sqrt(rho_k lambda_k).
- HQS: x = argmin 1/2||A x - y||^2 + mu_k/2||x - w||^2 = prox_l2(w, y, 1/mu_k); the denoiser
  then runs at noise level sqrt(lambda_k / mu_k).

Step parameters start at 0.5 and stay positive and finite by construction: each is stored as
softplus^-1 of its value (a parametrisation, not a clamp). ``initialise(step=..., sigma=...)``
sets them to suit a pretrained denoiser: the step size (rho_k or mu_k) and the noise level the
denoiser sees at each stage (lambda_k follows from both).

>>> import torch
>>> step = PGDStep(K=3, noise_level=True)
>>> step.rho(0).item()
0.5
>>> _ = step.initialise(step=1.0, sigma=geometric(0.04, 0.01, 3))
>>> [round(step.noise_sigma(k).item(), 4) for k in range(3)]
[0.04, 0.02, 0.01]
"""

from __future__ import annotations

import math
from typing import Any, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InvalidArgumentError
from .operators.base import prox_l2_cg

__all__ = ["PositiveScalars", "PGDStep", "HQSStep", "DataStep", "STEPS", "geometric"]

CG_ITERATIONS = 20  # fixed CG steps for HQS on operators without prox_l2

Values = float | Sequence[float] | torch.Tensor  # one value for every stage, or K of them


class PositiveScalars(nn.Module):
    """K learnable positive scalars, value_k = softplus(raw_k), all initialised to ``init``."""

    def __init__(self, K: int, init: float = 0.5) -> None:  # noqa: N803
        super().__init__()
        self.raw = nn.Parameter(torch.full((K,), math.log(math.expm1(init))))

    def forward(self, k: int) -> torch.Tensor:
        return F.softplus(self.raw[k])

    def values(self) -> torch.Tensor:
        """All K values (detached)."""
        return F.softplus(self.raw.detach())

    @torch.no_grad()
    def set(self, values: Values) -> None:
        """Set the K values: one positive number for all stages or K positive numbers."""
        values = stage_values(values, self.raw.numel())
        # softplus^-1(v) = v + log(1 - exp(-v)), stable for large v
        self.raw.copy_((values + torch.log(-torch.expm1(-values))).to(self.raw.dtype))


def stage_values(values: Values, K: int, what: str = "values") -> torch.Tensor:  # noqa: N803
    """K positive finite float64 values from one number or K numbers."""
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    if values.numel() == 1:
        values = values.expand(K)
    if values.numel() != K or not bool(torch.isfinite(values).all()) or not bool((values > 0).all()):
        raise InvalidArgumentError(f"{what}: need one positive finite value or {K} of them, got {values.tolist()}")
    return values


def geometric(first: float, last: float, K: int) -> list[float]:  # noqa: N803
    """K values falling (or rising) geometrically from ``first`` to ``last``: a noise schedule.

    >>> [round(v, 6) for v in geometric(0.1, 0.001, 3)]
    [0.1, 0.01, 0.001]
    """
    if not (first > 0 and last > 0) or isinstance(K, bool) or not isinstance(K, int) or K < 1:
        raise InvalidArgumentError(f"geometric needs first, last > 0 and K >= 1, got {first!r}, {last!r}, {K!r}")
    if K == 1:
        return [float(first)]
    return [float(first * (last / first) ** (k / (K - 1))) for k in range(K)]


def _initialise(module: nn.Module, size: PositiveScalars, step: Values | None, sigma: Values | None, lam_from: Any) -> nn.Module:
    """Set the step size and/or the per-stage noise level; lambda = lam_from(sigma, step).
    Everything is checked before anything changes."""
    K = size.raw.numel()  # noqa: N806
    step = None if step is None else stage_values(step, K, "step")
    if sigma is not None:
        if module.lam is None:
            raise InvalidArgumentError("sigma needs a network built with noise_level=True (the denoiser takes sigma)")
        sigma = stage_values(sigma, K, "sigma")
    if step is not None:
        size.set(step)
    if sigma is not None:
        module.lam.set(lam_from(sigma, size.values().double()))
    return module


class DataStep(Protocol):
    def __call__(self, k: int, x: torch.Tensor, y: torch.Tensor, operator: Any) -> torch.Tensor: ...

    def noise_sigma(self, k: int) -> torch.Tensor: ...

    def initialise(self, step: Values | None = None, sigma: Values | None = None) -> nn.Module: ...


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

    def initialise(self, step: Values | None = None, sigma: Values | None = None) -> "PGDStep":
        """Set rho_k (``step``) and the denoiser's noise level sigma_k (lambda_k = sigma_k^2 / rho_k);
        each a positive number or K of them. Returns self."""
        return _initialise(self, self.rho, step, sigma, lambda s, rho: s**2 / rho)


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

    def initialise(self, step: Values | None = None, sigma: Values | None = None) -> "HQSStep":
        """Set mu_k (``step``) and the denoiser's noise level sigma_k (lambda_k = sigma_k^2 mu_k);
        each a positive number or K of them. Returns self."""
        return _initialise(self, self.mu, step, sigma, lambda s, mu: s**2 * mu)


STEPS: dict[str, type[nn.Module]] = {"pgd": PGDStep, "hqs": HQSStep}
