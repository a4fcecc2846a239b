"""Property checks every linear operator must pass; used by the operator test modules.

Each helper takes an operator (already in float64 where precision matters) and an input shape.
"""

from __future__ import annotations

import torch

from lorun_peft.operators.linalg import conjugate_gradient


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def check_adjoint(op, x_shape, tol: float = 1e-5, seed: int = 0) -> None:
    """<A x, y> == <x, A^T y> for random x and y."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(x_shape, generator=g, dtype=torch.float64)
    Ax = op.A(x)
    y = torch.randn(Ax.shape, generator=g, dtype=torch.float64)
    lhs = (Ax * y).sum()
    rhs = (x * op.A_adjoint(y)).sum()
    assert abs(float(lhs - rhs)) <= tol * max(abs(float(lhs)), abs(float(rhs)), 1e-12), (lhs, rhs)


def check_vjp(op, x_shape, tol: float = 1e-6, seed: int = 1) -> None:
    """The vector-Jacobian product of A (autograd) equals A^T."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(x_shape, generator=g, dtype=torch.float64, requires_grad=True)
    Ax = op.A(x)
    v = torch.randn(Ax.shape, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad(Ax, x, v)
    assert relative_error(grad, op.A_adjoint(v).detach()) <= tol


def check_prox(op, x_shape, gamma: float = 0.7, tol: float = 1e-6, seed: int = 2) -> None:
    """prox_l2(z, y, gamma) equals the CG solution of (I + gamma A^T A) x = z + gamma A^T y."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(x_shape, generator=g, dtype=torch.float64)
    y = op.A(torch.randn(x_shape, generator=g, dtype=torch.float64))
    y = y + 0.1 * torch.randn(y.shape, generator=g, dtype=torch.float64)
    with torch.no_grad():
        ours = op.prox_l2(z, y, gamma)
        rhs = z + gamma * op.A_adjoint(y)
        ref = conjugate_gradient(lambda v: v + gamma * op.A_adjoint(op.A(v)), rhs, iterations=500, tol=1e-13)
    assert relative_error(ours, ref) <= tol, relative_error(ours, ref)


def check_half_precision(op, x: torch.Tensor, dtype: torch.dtype, tolerance: float = 0.02) -> None:
    """A, A_adjoint and prox_l2 of ``op`` moved to ``dtype`` return ``dtype`` and stay within
    ``tolerance`` of the float32 prox (the operator is moved back to float32 afterwards)."""
    reference = op.prox_l2(x, op.A(x), 0.5)
    half = op.to(dtype)
    try:
        y = half.A(x.to(dtype))
        out = half.prox_l2(x.to(dtype), y, 0.5)
        assert y.dtype == half.A_adjoint(y).dtype == out.dtype == dtype
        assert (out.float() - reference).abs().max() < tolerance
    finally:
        op.float()


def check_onnx_export(op, size: tuple[int, int], path: str):
    """Export an unfolded HQS network (K = 2) over ``op`` at ``size`` and check onnxruntime against
    PyTorch on a batch of three; returns the file's runner. Run it in a child process (a process that
    has exported breaks the autograd of children it forks later: tests/conftest.py)."""
    import lorun_peft
    from lorun_peft.denoisers import UNet
    from lorun_peft.export import OnnxNetwork, to_onnx

    net = lorun_peft.unfold(UNet(in_channels=1, width=4, depth=1), op, K=2, algorithm="hqs").eval()
    report = to_onnx(net, path, image_size=size)
    runner = OnnxNetwork(report.path)
    x = torch.rand(3, 1, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(op.A(x)).clamp(0, 1)
    assert report.max_abs_diff <= 1e-4 and float((runner(op.A(x)) - expected).abs().max()) <= 1e-4
    return runner


def run_in_child(code: str, cwd) -> None:
    """Run Python ``code`` in a child process with tests/ and the repository on its path; fail with its stderr."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), str(tests.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
