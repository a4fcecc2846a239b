"""Small differentiable linear-algebra helpers shared by data steps and operators."""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["conjugate_gradient", "batch_dot"]


def batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner product <a_n, b_n>, shaped (N, 1, ..., 1) to broadcast against a and b."""
    dims = tuple(range(1, a.dim()))
    return (a * b).sum(dim=dims, keepdim=True)


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    iterations: int = 30,
    tol: float = 0.0,
) -> torch.Tensor:
    """Solve matvec(x) = b for a symmetric positive definite operator, one system per sample.

    Runs a fixed number of iterations (so it is differentiable and its cost is predictable);
    ``tol`` > 0 stops early once every sample's residual norm is below ``tol * ||b||``.

    >>> M = torch.tensor([[4.0, 1.0], [1.0, 3.0]])
    >>> b = torch.tensor([[1.0, 2.0]])
    >>> x = conjugate_gradient(lambda v: v @ M, b, iterations=2)
    >>> torch.allclose(x @ M, b, atol=1e-5)
    True
    """
    x = torch.zeros_like(b) if x0 is None else x0
    r = b - matvec(x) if x0 is not None else b.clone()
    p = r
    rs = batch_dot(r, r)
    b_norm2 = batch_dot(b, b)
    tiny = torch.finfo(b.dtype).tiny
    for _ in range(iterations):
        Ap = matvec(p)
        alpha = rs / batch_dot(p, Ap).clamp_min(tiny)
        x = x + alpha * p
        r = r - alpha * Ap
        rs_new = batch_dot(r, r)
        if tol > 0 and bool((rs_new <= tol**2 * b_norm2).all()):
            break
        p = r + (rs_new / rs.clamp_min(tiny)) * p
        rs = rs_new
    return x
