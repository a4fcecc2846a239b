"""BlurDownsample (super-resolution): adjointness, VJP, closed-form prox, conventions, errors."""

from __future__ import annotations

import json

import pytest
import torch
from operator_checks import check_adjoint, check_half_precision, check_prox, check_vjp, relative_error

from lorun_peft.errors import InvalidArgumentError
from lorun_peft.operators.kernels import gaussian_kernel, kernel_bank
from lorun_peft.operators.base import operator_from_config
from lorun_peft.operators.sr import BlurDownsample


def random_kernel(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# (image shape (N, C, H, W), scale): even and odd sizes, gray and RGB, H != W
SHAPES = [
    ((2, 1, 12, 18), 2),
    ((1, 3, 12, 18), 2),
    ((2, 1, 15, 21), 3),
    ((1, 3, 15, 21), 3),
    ((2, 3, 16, 8), 4),
]
KERNEL_SHAPES = [(5, 5), (4, 6), (3, 2), (25, 25)]  # odd, even, mixed, larger than the image


@pytest.mark.parametrize("kernel_shape", KERNEL_SHAPES)
@pytest.mark.parametrize("shape,scale", SHAPES)
def test_adjoint(shape, scale, kernel_shape):
    op = BlurDownsample(random_kernel(kernel_shape), scale).double()
    check_adjoint(op, shape, tol=1e-10)


@pytest.mark.parametrize("kernel_shape", [(5, 5), (4, 6)])
@pytest.mark.parametrize("shape,scale", SHAPES[:3])
def test_vjp(shape, scale, kernel_shape):
    op = BlurDownsample(random_kernel(kernel_shape, seed=1), scale).double()
    check_vjp(op, shape)


@pytest.mark.parametrize("kernel_index", [0, 5, 9])
@pytest.mark.parametrize("shape,scale", [((2, 1, 12, 18), 2), ((1, 3, 15, 21), 3), ((1, 1, 16, 24), 4)])
def test_prox_matches_cg(shape, scale, kernel_index):
    kernel = kernel_bank(size=9)[kernel_index]
    op = BlurDownsample(kernel, scale).double()
    check_prox(op, shape, gamma=0.7, tol=1e-8)


@pytest.mark.parametrize("gamma", [0.01, 30.0])
def test_prox_matches_cg_small_and_large_gamma(gamma):
    op = BlurDownsample(kernel_bank(size=9)[3], 3).double()
    check_prox(op, (1, 2, 12, 15), gamma=gamma, tol=1e-8)


def test_prox_with_even_kernel_larger_than_image():
    op = BlurDownsample(random_kernel((10, 12), seed=3), 2).double()
    check_prox(op, (2, 3, 6, 8), gamma=2.0, tol=1e-8)


def test_prox_per_sample_gamma_and_gradient():
    op = BlurDownsample(gaussian_kernel(7, 1.5, 0.8, angle=0.4), 2).double()
    g = torch.Generator().manual_seed(4)
    z = torch.randn(3, 2, 8, 10, generator=g, dtype=torch.float64)
    y = torch.randn(3, 2, 4, 5, generator=g, dtype=torch.float64)
    gammas = torch.tensor([0.1, 1.0, 7.0], dtype=torch.float64)
    batched = op.prox_l2(z, y, gammas)
    one_by_one = torch.cat([op.prox_l2(z[i : i + 1], y[i : i + 1], float(gammas[i])) for i in range(3)])
    assert relative_error(batched, one_by_one) < 1e-12
    assert torch.allclose(op.prox_l2(z, y, gammas.view(3, 1, 1, 1)), batched, rtol=0, atol=1e-12)
    # a 0-dim gamma, z and y all get correct gradients through the closed form
    gamma = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    inputs = (z[:1, :1, :4, :4].clone().requires_grad_(), y[:1, :1, :2, :2].clone().requires_grad_(), gamma)
    assert torch.autograd.gradcheck(lambda zz, yy, gg: op.prox_l2(zz, yy, gg), inputs, fast_mode=True)


def test_prox_float32_close_to_float64():
    kernel = kernel_bank()[7]
    op32, op64 = BlurDownsample(kernel, 4), BlurDownsample(kernel, 4).double()
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    y = op64.A(x)
    ours = op32.prox_l2(x.float(), y.float(), 0.5)
    assert ours.dtype == torch.float32
    assert relative_error(ours.double(), op64.prox_l2(x, y, 0.5)) < 1e-5


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_paper_size_all_kernels(scale):
    """256x256 (255x255 for x3), x2/x3/x4, the 12 kernels: adjointness, prox optimality."""
    g = torch.Generator().manual_seed(scale)
    size = 256 // scale * scale
    x = torch.randn(1, 1, size, size, generator=g, dtype=torch.float64)
    for index, kernel in enumerate(kernel_bank()):
        op = BlurDownsample(kernel, scale).double()
        check_adjoint(op, x.shape, tol=1e-10, seed=scale)
        if index % 4 != scale - 2:  # the prox on one kernel of each kind (isotropic, anisotropic, motion)
            continue
        y = op.A(x) + 0.1 * torch.randn(1, 1, size // scale, size // scale, generator=g, dtype=torch.float64)
        z = torch.randn(x.shape, generator=g, dtype=torch.float64)
        gamma = 3.0
        prox = op.prox_l2(z, y, gamma)
        normal_lhs = prox + gamma * op.A_adjoint(op.A(prox))  # (I + gamma A^T A) x
        assert relative_error(normal_lhs, z + gamma * op.A_adjoint(y)) < 1e-10


@pytest.mark.parametrize("kernel_shape", [(5, 5), (5, 4), (4, 6)])
@pytest.mark.parametrize("where", [(6, 8), (0, 0), (15, 1)])
def test_impulse_lands_on_kernel_centre(kernel_shape, where):
    """A delta at (p, q) blurs into the kernel with its centre (kh // 2, kw // 2) on (p, q)."""
    kernel = random_kernel(kernel_shape, seed=5)
    kernel = kernel / kernel.sum()
    op = BlurDownsample(kernel, 2).double()
    H, W = 16, 12
    x = torch.zeros(1, 1, H, W, dtype=torch.float64)
    x[0, 0, where[0], where[1]] = 1.0
    expected = torch.zeros(H, W, dtype=torch.float64)
    kh, kw = kernel_shape
    for a in range(kh):
        for b in range(kw):
            expected[(where[0] + a - kh // 2) % H, (where[1] + b - kw // 2) % W] += kernel[a, b]
    assert torch.allclose(op.blur(x)[0, 0], expected, atol=1e-12)
    assert torch.allclose(op.A(x)[0, 0], expected[::2, ::2], atol=1e-12)


def test_decimation_starts_at_pixel_zero_and_kernel_is_normalised():
    op = BlurDownsample(torch.full((1, 1), 5.0), 3).double()  # normalised to the identity blur
    assert float(op.kernel.sum()) == pytest.approx(1.0)
    x = torch.randn(2, 3, 9, 12, dtype=torch.float64)
    assert torch.allclose(op.A(x), x[..., ::3, ::3], atol=1e-12)
    up = op.A_adjoint(op.A(x))
    assert torch.allclose(up[..., ::3, ::3], x[..., ::3, ::3], atol=1e-12)
    assert float(up[..., 1::3, :].abs().max()) < 1e-12


def test_kernel_larger_than_image_wraps():
    """A kernel wider than the image folds onto it: same result as the folded kernel."""
    kernel = random_kernel((9, 9), seed=6)
    folded = torch.zeros(4, 4, dtype=torch.float64)
    for a in range(9):
        for b in range(9):
            folded[(a - 4 + 2) % 4, (b - 4 + 2) % 4] += kernel[a, b]  # centre 4 -> centre 2
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    big, small = BlurDownsample(kernel, 2).double(), BlurDownsample(folded, 2).double()
    assert torch.allclose(big.A(x), small.A(x), atol=1e-12)


def test_initial_estimate():
    op = BlurDownsample(kernel_bank()[2], 4)
    rows = torch.linspace(0, 6.283, 64).sin()[:, None]
    cols = torch.linspace(0, 6.283, 48).cos()[None, :]
    x = (rows * cols).expand(2, 3, 64, 48)
    y = op.A(x)
    x0 = op.initial_estimate(y)
    assert x0.shape == x.shape and x0.dtype == y.dtype
    assert torch.allclose(x0[..., ::4, ::4], y, atol=1e-5)  # keeps the measured pixels
    assert relative_error(x0, x) < 0.5 * relative_error(op.A_adjoint(y), x)
    constant = torch.full((1, 1, 5, 7), 0.3)
    assert torch.allclose(op.initial_estimate(constant), torch.full((1, 1, 20, 28), 0.3), atol=1e-6)


def test_config_and_state_dict_round_trip():
    kernel = 3.0 * kernel_bank(size=15)[9]
    op = BlurDownsample(kernel, 3, channels=3)
    config = json.loads(json.dumps(op.config()))
    assert config["type"] == "BlurDownsample" and config["scale"] == 3 and config["channels"] == 3
    twin = operator_from_config(config)
    twin.load_state_dict(op.state_dict())
    fresh = operator_from_config(config)  # without the state dict: the same kernel too
    x = torch.rand(2, 3, 18, 24)
    y = op.A(x)
    for other in (twin, fresh):
        assert torch.equal(other.kernel, op.kernel)
        assert torch.equal(other.A(x), y)
        assert torch.equal(other.A_adjoint(y), op.A_adjoint(y))
        assert torch.equal(other.prox_l2(x, y, 0.3), op.prox_l2(x, y, 0.3))
        assert torch.equal(other.initial_estimate(y), op.initial_estimate(y))
    assert "kernel" in op.state_dict()
    assert not any(p.requires_grad for p in op.parameters())


def test_cache_follows_kernel_changes():
    op = BlurDownsample(gaussian_kernel(5, 1.0), 2)
    x = torch.rand(1, 1, 8, 8)
    before = op.A(x)
    other = BlurDownsample(gaussian_kernel(5, 2.0), 2)
    op.load_state_dict(other.state_dict())
    assert torch.equal(op.A(x), other.A(x))
    assert not torch.allclose(op.A(x), before)
    assert op.config() == other.config()  # the config describes the kernel in use


def test_cache_after_in_place_edit_and_inference_mode():
    op = BlurDownsample(gaussian_kernel(5, 1.0), 2)
    x = torch.rand(1, 1, 8, 8)
    with torch.inference_mode():
        op.A(x)  # fills the cache with inference tensors
    xg = x.clone().requires_grad_()
    op.prox_l2(xg, op.A(x), 0.5).sum().backward()  # autograd must not see them
    assert xg.grad is not None
    with torch.no_grad():
        op.kernel.copy_(gaussian_kernel(5, 2.0))
    assert torch.allclose(op.A(x), BlurDownsample(gaussian_kernel(5, 2.0), 2).A(x), atol=1e-7)


def test_forward_adds_noise():
    op = BlurDownsample(gaussian_kernel(5, 1.0), 2)
    x = torch.rand(1, 1, 8, 8)
    noisy = op(x, noise_sigma=0.1, generator=torch.Generator().manual_seed(0))
    assert noisy.shape == (1, 1, 4, 4) and not torch.equal(noisy, op.A(x))


# ------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("scale", [1, 0, -2])
def test_scale_below_two(scale):
    with pytest.raises(InvalidArgumentError, match="scale"):
        BlurDownsample(torch.ones(3, 3), scale)


@pytest.mark.parametrize("scale", [2.5, "2", True, float("nan")])
def test_scale_not_integer(scale):
    with pytest.raises(InvalidArgumentError, match="scale"):
        BlurDownsample(torch.ones(3, 3), scale)


def test_integral_float_scale_is_accepted():
    assert BlurDownsample(torch.ones(3, 3), 2.0).scale == 2


@pytest.mark.parametrize("kernel", [torch.zeros(3, 3), -torch.ones(3, 3), torch.tensor([[1.0, -1.0]])])
def test_kernel_sum_not_positive(kernel):
    with pytest.raises(InvalidArgumentError, match="kernel"):
        BlurDownsample(kernel, 2)


@pytest.mark.parametrize("kernel", [torch.ones(5), torch.ones(2, 3, 3), torch.ones(0, 3), "abc"])
def test_kernel_not_2d(kernel):
    with pytest.raises(InvalidArgumentError, match="kernel"):
        BlurDownsample(kernel, 2)


def test_kernel_not_finite():
    with pytest.raises(InvalidArgumentError, match="kernel"):
        BlurDownsample(torch.tensor([[1.0, float("nan")]]), 2)


@pytest.mark.parametrize("size", [(13, 18), (12, 17)])
def test_image_not_divisible_by_scale(size):
    op = BlurDownsample(torch.ones(3, 3), 2)
    with pytest.raises(InvalidArgumentError, match="divisible by scale=2"):
        op.A(torch.rand(1, 1, *size))
    with pytest.raises(InvalidArgumentError, match="divisible by scale=2"):
        op.prox_l2(torch.rand(1, 1, *size), torch.rand(1, 1, 6, 8), 0.5)


def test_channels_mismatch():
    op = BlurDownsample(torch.ones(3, 3), 2, channels=3)
    with pytest.raises(InvalidArgumentError, match="channels"):
        op.A(torch.rand(1, 1, 8, 8))
    with pytest.raises(InvalidArgumentError, match="channels"):
        BlurDownsample(torch.ones(3, 3), 2, channels=0)


def test_prox_bad_gamma_or_y_shape():
    op = BlurDownsample(torch.ones(3, 3), 2)
    z = torch.rand(2, 1, 8, 8)
    with pytest.raises(InvalidArgumentError, match="gamma"):
        op.prox_l2(z, torch.rand(2, 1, 4, 4), torch.ones(3))
    with pytest.raises(InvalidArgumentError, match="y must be shaped"):
        op.prox_l2(z, torch.rand(2, 1, 4, 5), 0.5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_a_adjoint_and_prox(dtype):
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    check_half_precision(BlurDownsample(kernel_bank()[0], scale=2, channels=1), x, dtype)
