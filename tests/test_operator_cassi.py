"""Tests of the CASSI operator: exact model, adjoint, prox, gradients, config round trip, mask files, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lorun_peft.errors import CorruptFileError, InvalidArgumentError
from lorun_peft.operators.base import operator_from_config
from lorun_peft.operators.cassi import CASSI, load_mask
from operator_checks import check_adjoint, check_half_precision, check_prox, check_vjp, relative_error

SHARED_MASK = Path(__file__).resolve().parents[2] / "shared" / "data" / "cassi_tsa" / "simu" / "mask.mat"

# (bands, H, W, step): even and odd sizes, steps 0..3
SIZES = [
    (4, 8, 8, 1),
    (4, 8, 8, 2),
    (4, 8, 8, 3),
    (5, 9, 7, 1),
    (5, 9, 7, 2),
    (5, 9, 7, 3),
    (1, 6, 5, 2),
    (3, 4, 6, 0),
]


def random_mask(h: int, w: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Non-binary mask with values in (0.005, 1], like the real TSA-Net aperture."""
    g = torch.Generator().manual_seed(seed)
    return (0.005 + 0.995 * torch.rand(h, w, generator=g)).to(dtype)


def make_op(bands: int, h: int, w: int, step: int, learnable: bool = False, seed: int = 0) -> CASSI:
    return CASSI(random_mask(h, w, seed), step=step, bands=bands, learnable_mask=learnable).double()


def reference_A(x: torch.Tensor, mask: torch.Tensor, step: int) -> torch.Tensor:  # noqa: N802
    """The model written out band by band: y[..., j + step k] += mask * x_k."""
    n, bands, h, w = x.shape
    y = x.new_zeros(n, 1, h, w + step * (bands - 1))
    for k in range(bands):
        y[:, 0, :, step * k : step * k + w] += x[:, k] * mask
    return y


# ---- the model ------------------------------------------------------------------------------------


def test_paper_size_shapes() -> None:
    op = CASSI(torch.rand(256, 256), step=2, bands=28)
    y = op.A(torch.rand(1, 28, 256, 256))
    assert y.shape == (1, 1, 256, 310)
    assert op.measurement_width == 310
    assert op.A_adjoint(y).shape == (1, 28, 256, 256)
    assert op.A_adjoint(y).is_contiguous()


@pytest.mark.parametrize("bands,h,w,step", SIZES)
def test_matches_band_by_band_reference(bands: int, h: int, w: int, step: int) -> None:
    op = make_op(bands, h, w, step)
    x = torch.randn(3, bands, h, w, dtype=torch.float64)
    torch.testing.assert_close(op.A(x), reference_A(x, op.mask, step))


@pytest.mark.parametrize("step", [1, 2, 3])
@pytest.mark.parametrize("k,i,j", [(0, 0, 0), (2, 3, 5), (4, 8, 6), (1, 4, 0)])
def test_impulse_lands_shifted_and_scaled(step: int, k: int, i: int, j: int) -> None:
    bands, h, w = 5, 9, 7
    op = make_op(bands, h, w, step)
    x = torch.zeros(1, bands, h, w, dtype=torch.float64)
    x[0, k, i, j] = 1.0
    y = op.A(x)
    expected = torch.zeros_like(y)
    expected[0, 0, i, j + step * k] = op.mask[i, j]
    assert torch.equal(y, expected)


def test_mask_is_copied_and_stored_as_buffer() -> None:
    mask = torch.rand(6, 5)
    op = CASSI(mask, step=1, bands=3)
    mask.zero_()
    assert float(op.mask.abs().sum()) > 0
    assert "mask" in dict(op.named_buffers()) and not list(op.parameters())
    learnable = CASSI(torch.rand(6, 5), step=1, bands=3, learnable_mask=True)
    assert isinstance(learnable.mask, torch.nn.Parameter)
    assert list(learnable.state_dict()) == ["mask"] == list(op.state_dict())


@pytest.mark.parametrize(
    "mask", [np.random.default_rng(0).random((6, 5)).astype(np.float32), np.eye(6, 5, dtype=bool), [[1, 0], [0, 1]]]
)
def test_accepts_arrays(mask) -> None:
    op = CASSI(mask, step=1, bands=2)
    assert op.mask.is_floating_point() and op.mask.shape == np.asarray(mask).shape
    torch.testing.assert_close(op.mask, torch.as_tensor(np.asarray(mask, dtype=np.float32)))


def test_output_dtype_follows_input() -> None:
    op = CASSI(torch.rand(4, 4), step=1, bands=2)  # float32 mask
    x = torch.rand(1, 2, 4, 4, dtype=torch.float64)
    assert op.A(x).dtype == torch.float64
    assert op.A_adjoint(op.A(x)).dtype == torch.float64


# ---- generic operator properties -------------------------------------------------------------------


@pytest.mark.parametrize("bands,h,w,step", SIZES)
def test_adjoint(bands: int, h: int, w: int, step: int) -> None:
    check_adjoint(make_op(bands, h, w, step), (2, bands, h, w), tol=1e-10)


def test_adjoint_paper_size() -> None:
    check_adjoint(make_op(28, 256, 256, 2), (1, 28, 256, 256), tol=1e-10)


@settings(max_examples=25, deadline=None)
@given(
    bands=st.integers(1, 6),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    step=st.integers(0, 4),
    seed=st.integers(0, 1000),
)
def test_adjoint_property(bands: int, h: int, w: int, step: int, seed: int) -> None:
    check_adjoint(make_op(bands, h, w, step, seed=seed), (2, bands, h, w), tol=1e-10, seed=seed)


@pytest.mark.parametrize("bands,h,w,step", SIZES)
def test_vjp(bands: int, h: int, w: int, step: int) -> None:
    check_vjp(make_op(bands, h, w, step), (2, bands, h, w))


@pytest.mark.parametrize("bands,h,w,step", SIZES)
@pytest.mark.parametrize("gamma", [0.7, 25.0])
def test_prox_against_cg(bands: int, h: int, w: int, step: int, gamma: float) -> None:
    check_prox(make_op(bands, h, w, step), (2, bands, h, w), gamma=gamma, tol=1e-8)


def test_prox_gamma_forms_agree() -> None:
    op = make_op(4, 8, 8, 2)
    z = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    y = torch.randn(3, 1, 8, 14, dtype=torch.float64)
    scalar = op.prox_l2(z, y, 0.3)
    torch.testing.assert_close(op.prox_l2(z, y, torch.tensor(0.3, dtype=torch.float64)), scalar)
    gammas = torch.tensor([0.3, 2.0, 0.01], dtype=torch.float64)
    per_sample = op.prox_l2(z, y, gammas)
    for n, g in enumerate(gammas.tolist()):
        torch.testing.assert_close(per_sample[n : n + 1], op.prox_l2(z[n : n + 1], y[n : n + 1], g))
    torch.testing.assert_close(op.prox_l2(z, y, gammas.view(3, 1, 1, 1)), per_sample)


def test_prox_solves_the_normal_equations() -> None:
    op = make_op(5, 9, 7, 3)
    z = torch.randn(2, 5, 9, 7, dtype=torch.float64)
    y = torch.randn(2, 1, 9, 19, dtype=torch.float64)
    gamma = 1.7
    x = op.prox_l2(z, y, gamma)
    torch.testing.assert_close(x + gamma * op.A_adjoint(op.A(x)), z + gamma * op.A_adjoint(y))


def test_initial_estimate_is_the_pseudo_inverse() -> None:
    op = make_op(5, 9, 7, 2)
    x = torch.randn(2, 5, 9, 7, dtype=torch.float64)
    y = op.A(x)
    x0 = op.initial_estimate(y)
    assert x0.shape == x.shape
    torch.testing.assert_close(op.A(x0), y)  # A A^+ y = y on the range of A
    d = reference_A(torch.ones(1, 5, 9, 7, dtype=torch.float64), op.mask**2, 2)
    torch.testing.assert_close(op.diagonal(), d)
    torch.testing.assert_close(x0, op.A_adjoint(y / d))
    # x0 is the minimum-norm solution: orthogonal to the null space, so no longer than x
    assert float(x0.norm()) <= float(x.norm())


def test_initial_estimate_with_zero_mask_is_finite() -> None:
    op = CASSI(torch.zeros(4, 4), step=1, bands=2)
    assert torch.equal(op.initial_estimate(torch.zeros(1, 1, 4, 5)), torch.zeros(1, 2, 4, 4))


def test_forward_simulates_noisy_measurement() -> None:
    op = make_op(4, 8, 8, 2)
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(op(x), op.A(x))
    noisy = op(x, noise_sigma=0.1, generator=torch.Generator().manual_seed(0))
    assert noisy.shape == (1, 1, 8, 14) and not torch.equal(noisy, op.A(x))


# ---- gradients -------------------------------------------------------------------------------------


class _UsesEverything(torch.nn.Module):
    """A scalar built from every method of ``op``, so gradcheck can differentiate it w.r.t. the mask."""

    def __init__(self, op: CASSI) -> None:
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        op = self.op
        return (
            op.A(x).square().sum()
            + op.A_adjoint(y).square().sum()
            + op.prox_l2(x, y, 0.5).sum()
            + op.initial_estimate(y).sum()
        )


def test_gradients_reach_a_learnable_mask() -> None:
    op = make_op(3, 5, 4, 2, learnable=True)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    y = torch.randn(2, 1, 5, 8, dtype=torch.float64)
    probe = _UsesEverything(op)
    probe(x, y).backward()
    assert op.mask.grad is not None and float(op.mask.grad.abs().sum()) > 0

    mask = op.mask.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda m: torch.func.functional_call(probe, {"op.mask": m}, (x, y)), (mask,))


def test_fixed_mask_gets_no_gradient() -> None:
    op = make_op(3, 5, 4, 2)
    x = torch.randn(1, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    op.A(x).sum().backward()
    assert not op.mask.requires_grad and x.grad is not None


@pytest.mark.parametrize("per_sample", [False, True])
def test_gradients_flow_through_gamma(per_sample: bool) -> None:
    op = make_op(4, 6, 5, 2)
    z = torch.randn(2, 4, 6, 5, dtype=torch.float64)
    y = torch.randn(2, 1, 6, 11, dtype=torch.float64)
    gamma = torch.tensor([0.4, 1.3] if per_sample else 0.4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda g: op.prox_l2(z, y, g), (gamma,))
    op.prox_l2(z, y, gamma).square().sum().backward()
    assert gamma.grad is not None and bool((gamma.grad != 0).all())


# ---- config round trip -----------------------------------------------------------------------------


@pytest.mark.parametrize("learnable", [False, True])
def test_config_and_state_dict_round_trip(learnable: bool) -> None:
    op = CASSI(random_mask(9, 7, dtype=torch.float32), step=3, bands=5, learnable_mask=learnable)
    config = json.loads(json.dumps(op.config()))
    assert config == {"type": "CASSI", "step": 3, "bands": 5, "mask_shape": [9, 7], "learnable_mask": learnable}
    rebuilt = operator_from_config(config)
    assert isinstance(rebuilt, CASSI) and rebuilt.config() == op.config()
    rebuilt.load_state_dict(op.state_dict())
    x = torch.rand(2, 5, 9, 7)
    y = op.A(x)
    assert torch.equal(rebuilt.A(x), y)
    assert torch.equal(rebuilt.A_adjoint(y), op.A_adjoint(y))
    assert torch.equal(rebuilt.prox_l2(x, y, 0.5), op.prox_l2(x, y, 0.5))
    assert torch.equal(rebuilt.initial_estimate(y), op.initial_estimate(y))
    assert isinstance(rebuilt.mask, torch.nn.Parameter) == learnable


@pytest.mark.parametrize("shape", [None, [4], [4, 0], [4.0, 4], "4x4"])
def test_from_config_rejects_bad_mask_shape(shape) -> None:
    config = {"type": "CASSI", "step": 2, "bands": 3, "learnable_mask": False}
    if shape is not None:
        config["mask_shape"] = shape
    with pytest.raises(InvalidArgumentError, match="mask_shape"):
        operator_from_config(config)


# ---- mask files ------------------------------------------------------------------------------------


def test_load_mask_round_trip(tmp_path: Path) -> None:
    sio = pytest.importorskip("scipy.io")
    mask = np.random.default_rng(1).random((12, 10)).astype(np.float32)
    path = tmp_path / "mask.mat"
    sio.savemat(path, {"mask": mask, "other": np.zeros(3)})
    loaded = load_mask(path)
    assert loaded.dtype == torch.float32 and loaded.shape == (12, 10)
    assert np.array_equal(loaded.numpy(), mask)
    assert np.array_equal(load_mask(str(path)).numpy(), mask)


def test_load_mask_missing_file(tmp_path: Path) -> None:
    pytest.importorskip("scipy.io")
    path = tmp_path / "nope.mat"
    with pytest.raises(FileNotFoundError, match="nope.mat"):
        load_mask(path)


def test_load_mask_without_mask_key(tmp_path: Path) -> None:
    sio = pytest.importorskip("scipy.io")
    path = tmp_path / "wrong_key.mat"
    sio.savemat(path, {"Phi": np.ones((4, 4))})
    with pytest.raises(CorruptFileError, match="wrong_key.mat") as info:
        load_mask(path)
    assert "'mask'" in str(info.value) and "Phi" in str(info.value)


def test_load_mask_garbage_file(tmp_path: Path) -> None:
    pytest.importorskip("scipy.io")
    path = tmp_path / "garbage.mat"
    path.write_bytes(b"this is not a MATLAB file at all" * 10)
    with pytest.raises(CorruptFileError, match="garbage.mat"):
        load_mask(path)


def test_load_mask_without_scipy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(ImportError, match="pip install scipy"):
        load_mask(tmp_path / "mask.mat")


def test_load_real_tsa_mask() -> None:
    pytest.importorskip("scipy.io")
    if not SHARED_MASK.is_file():
        pytest.skip(f"{SHARED_MASK} not present")
    mask = load_mask(SHARED_MASK)
    assert mask.shape == (256, 256) and mask.dtype == torch.float32
    assert 0 < float(mask.min()) and float(mask.max()) <= 1.0
    assert len(torch.unique(mask)) > 2  # not binary
    op = CASSI(mask, step=2, bands=28)
    assert op.A(torch.ones(1, 28, 256, 256)).shape == (1, 1, 256, 310)


# ---- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [torch.rand(8), torch.rand(2, 8, 8), torch.zeros(0, 4)])
def test_mask_not_2d(mask: torch.Tensor) -> None:
    with pytest.raises(InvalidArgumentError, match="mask"):
        CASSI(mask)


def test_mask_not_an_array() -> None:
    with pytest.raises(InvalidArgumentError, match="mask"):
        CASSI(object())


def test_mask_not_finite() -> None:
    mask = torch.rand(4, 4)
    mask[1, 1] = float("nan")
    with pytest.raises(InvalidArgumentError, match="mask"):
        CASSI(mask)


@pytest.mark.parametrize("step", [-1, 2.0, True, "2"])
def test_bad_step(step) -> None:
    with pytest.raises(InvalidArgumentError, match="step"):
        CASSI(torch.rand(4, 4), step=step)


@pytest.mark.parametrize("bands", [0, -3, 28.0])
def test_bad_bands(bands) -> None:
    with pytest.raises(InvalidArgumentError, match="bands"):
        CASSI(torch.rand(4, 4), bands=bands)


def test_bad_learnable_mask() -> None:
    with pytest.raises(InvalidArgumentError, match="learnable_mask"):
        CASSI(torch.rand(4, 4), learnable_mask="yes")


def test_cube_of_wrong_size() -> None:
    op = CASSI(torch.rand(8, 8), step=2, bands=4)
    with pytest.raises(InvalidArgumentError, match=r"x .*\(N, 4, 8, 8\)"):
        op.A(torch.rand(1, 4, 8, 9))


def test_cube_with_wrong_band_count() -> None:
    op = CASSI(torch.rand(8, 8), step=2, bands=4)
    with pytest.raises(InvalidArgumentError, match=r"x has 3 bands.*bands=4.*\(N, 4, 8, 8\)"):
        op.A(torch.rand(1, 3, 8, 8))


def test_cube_not_4d() -> None:
    op = CASSI(torch.rand(8, 8), step=2, bands=4)
    with pytest.raises(InvalidArgumentError, match=r"x .*\(N, 4, 8, 8\)"):
        op.A(torch.rand(4, 8, 8))


@pytest.mark.parametrize("shape", [(1, 1, 8, 13), (1, 2, 8, 14), (1, 8, 14), (1, 1, 7, 14)])
def test_measurement_of_wrong_shape(shape: tuple[int, ...]) -> None:
    op = CASSI(torch.rand(8, 8), step=2, bands=4)
    with pytest.raises(InvalidArgumentError, match=r"y must have shape \(N, 1, 8, 14\)"):
        op.A_adjoint(torch.rand(shape))
    with pytest.raises(InvalidArgumentError, match=r"y must have shape"):
        op.initial_estimate(torch.rand(shape))


def test_prox_bad_arguments() -> None:
    op = CASSI(torch.rand(8, 8), step=2, bands=4)
    z, y = torch.rand(2, 4, 8, 8), torch.rand(2, 1, 8, 14)
    with pytest.raises(InvalidArgumentError, match="gamma"):
        op.prox_l2(z, y, torch.ones(3))
    with pytest.raises(InvalidArgumentError, match="gamma"):
        op.prox_l2(z, y, "big")
    with pytest.raises(InvalidArgumentError, match="z "):
        op.prox_l2(torch.rand(2, 3, 8, 8), y, 0.5)
    with pytest.raises(InvalidArgumentError, match="y must"):
        op.prox_l2(z, torch.rand(2, 1, 8, 8), 0.5)


def test_relative_error_helper_sanity() -> None:
    # guards the shared checks: A really changes with the mask, so the checks are not vacuous
    a, b = make_op(4, 8, 8, 2, seed=0), make_op(4, 8, 8, 2, seed=1)
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    assert relative_error(a.A(x), b.A(x)) > 1e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_a_adjoint_and_prox(dtype):
    from lorun_peft.operators import CASSI

    g = torch.Generator().manual_seed(0)
    check_half_precision(CASSI(torch.rand(16, 16, generator=g), step=2, bands=4), torch.rand(1, 4, 16, 16, generator=g), dtype)
