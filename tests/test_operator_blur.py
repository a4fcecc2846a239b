"""Blur (deblurring with a known kernel): adjointness, VJP, closed-form prox, conventions, errors,
unfolded networks, agreement with deepinv's BlurFFT and ONNX export."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TinyDenoiser
from operator_checks import check_adjoint, check_half_precision, check_onnx_export, check_prox, check_vjp, relative_error, run_in_child

import lorun_peft
from lorun_peft.errors import InvalidArgumentError
from lorun_peft.operators import Blur, BlurDownsample
from lorun_peft.operators.base import operator_from_config
from lorun_peft.operators.kernels import gaussian_kernel, kernel_bank


def random_kernel(shape, seed=0):
    k = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return k / k.sum()


# image shapes (N, C, H, W): even and odd sizes, gray and RGB, H != W
SHAPES = [(2, 1, 12, 18), (1, 3, 15, 21), (2, 3, 16, 8), (1, 2, 7, 9)]
KERNEL_SHAPES = [(5, 5), (4, 6), (3, 2), (25, 25)]  # odd, even, mixed, larger than the image


@pytest.mark.parametrize("kernel_shape", KERNEL_SHAPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_adjoint(shape, kernel_shape):
    check_adjoint(Blur(random_kernel(kernel_shape)).double(), shape, tol=1e-10)


@pytest.mark.parametrize("kernel_shape", [(5, 5), (4, 6)])
@pytest.mark.parametrize("shape", SHAPES)
def test_vjp(shape, kernel_shape):
    check_vjp(Blur(random_kernel(kernel_shape, seed=1)).double(), shape)


@pytest.mark.parametrize("kernel_index", [0, 5, 9])
@pytest.mark.parametrize("shape", SHAPES)
def test_prox_matches_cg(shape, kernel_index):
    check_prox(Blur(kernel_bank(size=9)[kernel_index]).double(), shape, gamma=0.7, tol=1e-8)


@pytest.mark.parametrize("gamma", [0.01, 30.0])
def test_prox_matches_cg_small_and_large_gamma(gamma):
    check_prox(Blur(random_kernel((10, 12), seed=3)).double(), (1, 2, 6, 9), gamma=gamma, tol=1e-8)


def test_prox_per_sample_gamma_and_gradient():
    op = Blur(gaussian_kernel(7, 1.5, 0.8, angle=0.4)).double()
    g = torch.Generator().manual_seed(4)
    z = torch.randn(3, 2, 8, 11, generator=g, dtype=torch.float64)
    y = torch.randn(3, 2, 8, 11, generator=g, dtype=torch.float64)
    gammas = torch.tensor([0.1, 1.0, 7.0], dtype=torch.float64)
    batched = op.prox_l2(z, y, gammas)
    one_by_one = torch.cat([op.prox_l2(z[i : i + 1], y[i : i + 1], float(gammas[i])) for i in range(3)])
    assert relative_error(batched, one_by_one) < 1e-12
    gamma = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    inputs = (z[:1, :1, :5, :4].clone().requires_grad_(), y[:1, :1, :5, :4].clone().requires_grad_(), gamma)
    assert torch.autograd.gradcheck(lambda zz, yy, gg: op.prox_l2(zz, yy, gg), inputs, fast_mode=True)


@pytest.mark.parametrize("kernel_shape", [(5, 5), (5, 4), (4, 6)])
@pytest.mark.parametrize("where", [(6, 8), (0, 0), (14, 1)])
def test_impulse_lands_on_kernel_centre_as_in_blur_downsample(kernel_shape, where):
    """A delta at (p, q) blurs into the kernel with its centre (kh // 2, kw // 2) on (p, q)."""
    kernel = random_kernel(kernel_shape, seed=5)
    H, W = 15, 12
    x = torch.zeros(1, 1, H, W, dtype=torch.float64)
    x[0, 0, where[0], where[1]] = 1.0
    expected = torch.zeros(H, W, dtype=torch.float64)
    kh, kw = kernel_shape
    for a in range(kh):
        for b in range(kw):
            expected[(where[0] + a - kh // 2) % H, (where[1] + b - kw // 2) % W] += kernel[a, b]
    assert torch.allclose(Blur(kernel).double().A(x)[0, 0], expected, atol=1e-12)
    x = torch.rand(2, 3, 16, 12, dtype=torch.float64)
    assert torch.allclose(Blur(kernel).double().A(x), BlurDownsample(kernel, 2).double().blur(x), atol=1e-12)


def test_constant_image_is_unchanged_and_initial_estimate_is_y():
    op = Blur(kernel_bank()[7])
    assert torch.allclose(op.A(torch.full((1, 3, 9, 10), 0.4)), torch.full((1, 3, 9, 10), 0.4), atol=1e-6)
    y = torch.rand(2, 1, 8, 8)
    assert op.initial_estimate(y) is y


def test_kernel_near_one_is_kept_as_given_and_normalize_divides():
    near = torch.full((3, 3), 1 / 9) * (1 + 5e-4)
    assert torch.equal(Blur(near).kernel, near.float())
    op = Blur(torch.full((2, 2), 3.0), normalize=True)
    assert torch.equal(op.kernel, torch.full((2, 2), 0.25))
    assert Blur(op.config()["kernel"]).config() == op.config()  # the stored kernel sums to 1


def test_config_and_state_dict_round_trip():
    op = Blur(kernel_bank(size=15)[9], channels=3)
    config = json.loads(json.dumps(op.config()))
    assert config["type"] == "Blur" and config["channels"] == 3 and len(config["kernel"]) == 15
    twin = operator_from_config(config)
    twin.load_state_dict(op.state_dict())
    fresh = operator_from_config(config)  # without the state dict: the same kernel too
    x = torch.rand(2, 3, 18, 23)
    y = op.A(x)
    for other in (twin, fresh):
        assert torch.equal(other.kernel, op.kernel)
        assert torch.equal(other.A(x), y) and torch.equal(other.A_adjoint(y), op.A_adjoint(y))
        assert torch.equal(other.prox_l2(x, y, 0.3), op.prox_l2(x, y, 0.3))
    assert list(op.state_dict()) == ["kernel"] and not list(op.parameters())


def test_cache_follows_kernel_changes_and_inference_mode():
    op = Blur(gaussian_kernel(5, 1.0))
    x = torch.rand(1, 1, 8, 8)
    with torch.inference_mode():
        before = op.A(x)
    other = Blur(gaussian_kernel(5, 2.0))
    op.load_state_dict(other.state_dict())
    assert torch.equal(op.A(x), other.A(x)) and not torch.allclose(op.A(x), before)
    xg = x.clone().requires_grad_()
    op.prox_l2(xg, op.A(x), 0.5).sum().backward()
    assert xg.grad is not None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    check_half_precision(Blur(kernel_bank()[0], channels=1), x, dtype)


# ------------------------------------------------------------------------------- unfolded networks
@pytest.mark.parametrize("algorithm", ["hqs", "pgd"])
def test_unfolded_network_backpropagates_to_every_stage_adapter(algorithm):
    torch.manual_seed(0)
    op = Blur(gaussian_kernel(7, 1.2))
    net = lorun_peft.unfold(TinyDenoiser(), op, K=3, algorithm=algorithm)
    x = torch.rand(2, 1, 16, 15)
    loss = torch.mean((net(op.A(x)) - x) ** 2)
    loss.backward()
    grads = {name: p.grad for name, p in net.named_parameters() if "lora_B" in name}
    for k in range(3):
        stage = [g for name, g in grads.items() if f"stage_{k}" in name]
        assert stage and all(g is not None and float(g.abs().sum()) > 0 for g in stage), k


# ------------------------------------------------------------------------------------ deepinv
@pytest.mark.parametrize("kernel_shape", [(5, 5), (4, 6), (3, 2), (4, 4)])
@pytest.mark.parametrize("size", [(12, 15), (16, 16)])
def test_matches_deepinv_blur_fft(kernel_shape, size):
    """deepinv's BlurFFT puts the kernel's centre where Blur does, (kh // 2, kw // 2): the shift
    between the two is zero for odd and even kernels alike (deepinv 0.5)."""
    dinv = pytest.importorskip("deepinv")
    kernel = random_kernel(kernel_shape, seed=7)
    x = torch.rand(2, 3, *size, dtype=torch.float64)
    physics = dinv.physics.BlurFFT(img_size=(3, *size), filter=kernel[None, None], device="cpu")
    ours = Blur(kernel).double()
    shifts = [(a, b) for a in range(-2, 3) for b in range(-2, 3)
              if torch.allclose(torch.roll(ours.A(x), (a, b), (-2, -1)), physics.A(x).double(), atol=1e-10)]
    assert shifts == [(0, 0)]
    y = torch.rand(2, 3, *size, dtype=torch.float64)
    assert torch.allclose(ours.A_adjoint(y), physics.A_adjoint(y).double(), atol=1e-10)


# ------------------------------------------------------------------------------------ ONNX export
def export_and_compare(path: str) -> None:
    """The export check of tests/operator_checks.py over Blur (odd width), in a child process."""
    op = Blur(gaussian_kernel(7, 1.2), channels=1)
    assert torch.equal(check_onnx_export(op, (24, 31), path).operator.kernel, op.kernel)


def test_onnx_export(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    run_in_child(f"import test_operator_blur as t; t.export_and_compare({str(tmp_path / 'blur.onnx')!r})", tmp_path)
    assert (tmp_path / "blur.onnx").is_file()


# ------------------------------------------------------------------------------------ bad input
def test_empty_kernel():
    with pytest.raises(InvalidArgumentError, match=r"kernel is empty \(shape \(0, 3\)\); give at least one tap"):
        Blur(torch.ones(0, 3))


def test_negative_entry_says_where():
    kernel = torch.full((3, 3), 1 / 8)
    kernel[2, 1] = -0.125
    kernel[0, 0] = 0.375
    with pytest.raises(InvalidArgumentError, match=r"negative entry -0.125 at \(row 2, column 1\)"):
        Blur(kernel)


@pytest.mark.parametrize("scale,sum_text", [(2.0, "2"), (0.99, "0.99")])
def test_kernel_not_summing_to_one_says_its_sum(scale, sum_text):
    with pytest.raises(InvalidArgumentError, match=rf"kernel sums to {sum_text}, not 1 \(within 0.001\); divide it by its sum or pass normalize=True"):
        Blur(torch.full((2, 2), 0.25 * scale))


def test_zero_kernel_cannot_be_normalised():
    with pytest.raises(InvalidArgumentError, match="kernel sums to 0 and cannot be normalised"):
        Blur(torch.zeros(3, 3), normalize=True)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_kernel(bad):
    kernel = torch.full((2, 2), 0.25)
    kernel[1, 0] = bad
    with pytest.raises(InvalidArgumentError, match=r"kernel holds a non-finite value .* at \(row 1, column 0\)"):
        Blur(kernel)


@pytest.mark.parametrize("kernel", [torch.full((4,), 0.25), torch.full((1, 2, 2), 0.25), 0.5])
def test_kernel_not_2d(kernel):
    with pytest.raises(InvalidArgumentError, match=r"kernel must be 2-D \(kh x kw\), got \d dimension"):
        Blur(kernel)


def test_kernel_not_numbers():
    with pytest.raises(InvalidArgumentError, match="kernel must be a 2-D array of numbers"):
        Blur([["a", "b"]])


def test_normalize_not_bool():
    with pytest.raises(InvalidArgumentError, match="normalize must be True or False"):
        Blur(torch.full((2, 2), 0.25), normalize="yes")


def test_channels_and_shapes():
    op = Blur(torch.full((3, 3), 1 / 9), channels=3)
    with pytest.raises(InvalidArgumentError, match="x must have 3 channels"):
        op.A(torch.rand(1, 1, 8, 8))
    with pytest.raises(InvalidArgumentError, match="channels must be None or a positive integer"):
        Blur(torch.full((3, 3), 1 / 9), channels=0)
    with pytest.raises(InvalidArgumentError, match=r"y must be shaped like z \(1, 3, 8, 8\)"):
        op.prox_l2(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 7), 0.5)
    with pytest.raises(InvalidArgumentError, match="gamma must be"):
        op.prox_l2(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), torch.ones(3))
