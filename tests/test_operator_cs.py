"""Tests of the block compressive sensing operator (lorun_peft/operators/cs.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lorun_peft.errors import InvalidArgumentError
from lorun_peft.operators.base import operator_from_config
from lorun_peft.operators.cs import BlockCS
from operator_checks import check_adjoint, check_prox, check_vjp

RATIOS = [0.01, 0.04, 0.10, 0.25, 0.30, 0.40, 0.50]
ISTA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ista_net_sampling_matrix"


def rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def check_all(op: BlockCS, shape: tuple[int, ...]) -> None:
    with torch.no_grad():
        check_adjoint(op, shape)
    check_vjp(op, shape)
    check_prox(op, shape)


# ------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("ratio", RATIOS)
def test_measurements_per_block_and_shapes(ratio: float) -> None:
    op = BlockCS(ratio, block=32, channels=3)
    m = max(1, round(ratio * 1024))
    assert op.measurements == m and tuple(op.phi.shape) == (m, 1024)
    y = op.A(torch.rand(2, 3, 64, 96))
    assert tuple(y.shape) == (2, 3 * m, 2, 3)
    assert tuple(op.A_adjoint(y).shape) == (2, 3, 64, 96)


def test_tiny_ratio_gives_one_measurement() -> None:
    op = BlockCS(1e-4, block=8, image_size=(9, 8)).double()
    assert op.measurements == 1
    check_all(op, (1, 1, 9, 8))


def test_block_layout_is_row_major_and_channels_share_phi() -> None:
    op = BlockCS(0.5, block=4, channels=2).double()
    x = rand(1, 2, 8, 4)
    y = op.A(x)
    m = op.measurements
    for c in range(2):
        for i in range(2):
            block = x[0, c, 4 * i : 4 * i + 4, :4].reshape(-1)  # row-major, like numpy reshape
            assert torch.allclose(y[0, c * m : (c + 1) * m, i, 0], op.phi @ block)


def test_equals_strided_convolution_and_its_transpose() -> None:
    op = BlockCS(0.3, block=5, channels=2, image_size=(12, 9)).double()
    x = rand(2, 2, 12, 9)
    kernel = op.phi.detach().view(-1, 1, 5, 5)
    padded = torch.nn.functional.pad(x, (0, 1, 0, 3)).reshape(4, 1, 15, 10)
    y = op.A(x)
    assert torch.allclose(y, torch.nn.functional.conv2d(padded, kernel, stride=5).reshape(2, -1, 3, 2))
    grid = torch.nn.functional.conv_transpose2d(y.reshape(4, -1, 3, 2), kernel, stride=5).reshape(2, 2, 15, 10)
    assert torch.allclose(op.A_adjoint(y), grid[..., :12, :9])


# ----------------------------------------------------------------- adjoint, VJP, prox
@pytest.mark.parametrize("init", ["gaussian", "orthogonal"])
@pytest.mark.parametrize("channels", [1, 3])
def test_properties_even_size(init: str, channels: int) -> None:
    op = BlockCS(0.25, block=8, channels=channels, init=init).double()
    check_all(op, (2, channels, 24, 32))


@pytest.mark.parametrize("size", [(17, 23), (9, 16), (16, 13), (11, 9)])
@pytest.mark.parametrize("ratio", [0.1, 0.5])
def test_properties_odd_size_with_image_size(size: tuple[int, int], ratio: float) -> None:
    op = BlockCS(ratio, block=8, channels=2, image_size=size).double()
    check_all(op, (2, 2, *size))


@pytest.mark.parametrize("ratio", RATIOS)
def test_adjoint_256_every_ratio(ratio: float) -> None:
    op = BlockCS(ratio, block=32, learnable=False).double()
    check_adjoint(op, (1, 1, 256, 256))


def test_adjoint_odd_size_with_32_blocks() -> None:
    op = BlockCS(0.1, block=32, channels=2, learnable=False, image_size=(75, 50)).double()
    check_adjoint(op, (1, 2, 75, 50))
    check_prox(op, (1, 2, 75, 50))


def test_no_implicit_image_size() -> None:
    op = BlockCS(0.25, block=8)
    y = op.A(torch.rand(1, 1, 10, 12))
    assert op.image_size is None
    assert tuple(op.A_adjoint(y).shape) == (1, 1, 16, 16)  # the whole grid
    op.image_size = (10, 12)
    assert tuple(op.A_adjoint(y).shape) == (1, 1, 10, 12)


def test_prox_solves_the_normal_equations_on_the_image() -> None:
    op = BlockCS(0.5, block=4, image_size=(7, 6)).double()
    z, y, gamma = rand(2, 1, 7, 6, seed=1), rand(2, 8, 2, 2, seed=2), 0.8
    x = op.prox_l2(z, y, gamma)
    residual = x - z + gamma * op.A_adjoint(op.A(x) - y)
    assert residual.abs().max() < 1e-10


def test_prox_gamma_tensor_per_sample_and_float_agree() -> None:
    op = BlockCS(0.25, block=8, channels=2, image_size=(12, 19)).double()
    z, y = rand(3, 2, 12, 19, seed=3), op.A(rand(3, 2, 12, 19, seed=4))
    gammas = [0.1, 1.0, 5.0]
    per_sample = op.prox_l2(z, y, torch.tensor(gammas, dtype=torch.float64))
    for i, g in enumerate(gammas):
        one = op.prox_l2(z[i : i + 1], y[i : i + 1], g)
        assert torch.allclose(per_sample[i : i + 1], one, atol=1e-12)
        zero_dim = op.prox_l2(z[i : i + 1], y[i : i + 1], torch.tensor(g, dtype=torch.float64))
        assert torch.allclose(zero_dim, one, atol=1e-12)


def test_prox_gradients_reach_gamma_and_phi() -> None:
    op = BlockCS(0.5, block=3, image_size=(4, 5)).double()
    z, y = rand(2, 1, 4, 5, seed=5), op.A(rand(2, 1, 4, 5, seed=6)).detach()
    for gamma in (torch.tensor(0.7), torch.tensor([0.3, 2.0])):
        gamma = gamma.double().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda g: op.prox_l2(z, y, g), (gamma,), fast_mode=True)

    # Phi: autograd directional derivative against central finite differences
    weights, direction = rand(2, 1, 4, 5, seed=7), rand(*op.phi.shape, seed=8)

    def loss() -> torch.Tensor:
        return (op.prox_l2(z, y, 0.7) * weights).sum()

    (grad,) = torch.autograd.grad(loss(), op.phi)
    eps = 1e-6
    with torch.no_grad():
        op.phi.add_(eps * direction)
        plus = loss()
        op.phi.sub_(2 * eps * direction)
        minus = loss()
    assert math.isclose(float((grad * direction).sum()), float(plus - minus) / (2 * eps), rel_tol=1e-6)


# ------------------------------------------------------------------ learnable matrix
def test_gradient_reaches_phi_when_learnable() -> None:
    op = BlockCS(0.25, block=8)
    x = torch.rand(2, 1, 16, 16)
    loss = op.prox_l2(op.A_adjoint(op.A(x)), op(x), 0.5).square().mean() + op.A(x).square().mean()
    loss.backward()
    assert op.phi.requires_grad and op.phi.grad is not None and op.phi.grad.abs().sum() > 0


def test_no_gradient_when_not_learnable() -> None:
    op = BlockCS(0.25, block=8, learnable=False)
    assert not op.phi.requires_grad
    assert not op.A(torch.rand(1, 1, 16, 16)).requires_grad
    assert [p for p in op.parameters() if p.requires_grad] == []


def test_seeded_initialisation() -> None:
    assert torch.equal(BlockCS(0.25, block=8, seed=3).phi, BlockCS(0.25, block=8, seed=3).phi)
    assert not torch.equal(BlockCS(0.25, block=8, seed=3).phi, BlockCS(0.25, block=8, seed=4).phi)
    gaussian = BlockCS(0.5, block=32).phi.detach()
    assert abs(float(gaussian.std()) - 1 / 32) < 1e-3
    ortho = BlockCS(0.3, block=8, init="orthogonal").phi.double()
    assert torch.allclose(ortho @ ortho.T, torch.eye(ortho.shape[0], dtype=torch.float64), atol=1e-6)


def test_forward_simulates_noisy_measurement() -> None:
    op = BlockCS(0.25, block=8)
    x = torch.rand(1, 1, 16, 16)
    assert torch.equal(op(x), op.A(x))
    y1 = op(x, noise_sigma=0.1, generator=torch.Generator().manual_seed(0))
    y2 = op(x, noise_sigma=0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y1, y2) and not torch.equal(y1, op.A(x))


def test_initial_estimate_is_adjoint() -> None:
    op = BlockCS(0.25, block=8, image_size=(10, 10))
    y = op.A(torch.rand(1, 1, 10, 10))
    assert torch.equal(op.initial_estimate(y), op.A_adjoint(y))


# ------------------------------------------------------------------- config round trip
def assert_same_outputs(a: BlockCS, b: BlockCS, size: tuple[int, int]) -> None:
    x = torch.rand(2, a.channels, *size, generator=torch.Generator().manual_seed(7))
    y = a.A(x)
    assert torch.equal(y, b.A(x))
    assert torch.equal(a.A_adjoint(y), b.A_adjoint(y))
    assert torch.equal(a.prox_l2(x, y, 0.3), b.prox_l2(x, y, 0.3))


@pytest.mark.parametrize("init", ["gaussian", "orthogonal", "matrix"])
def test_config_and_state_dict_round_trip(init: str) -> None:
    matrix = np.random.default_rng(0).standard_normal((16, 64))
    op = BlockCS(0.25, block=8, channels=2, init=matrix if init == "matrix" else init, image_size=(13, 17), seed=5)
    with torch.no_grad():
        op.phi.add_(0.01)  # as if trained: the values must come from the state_dict
    config = json.loads(json.dumps(op.config()))
    assert config["type"] == "BlockCS" and config["init"] == init and config["image_size"] == [13, 17]
    for rebuilt in (BlockCS.from_config({k: v for k, v in config.items() if k != "type"}), operator_from_config(config)):
        assert isinstance(rebuilt, BlockCS) and rebuilt.config() == op.config()
        rebuilt.load_state_dict(op.state_dict())
        assert_same_outputs(op, rebuilt, (13, 17))


def test_matrix_config_needs_measurements() -> None:
    config = BlockCS(0.25, block=8, init=np.zeros((16, 64))).config()
    del config["measurements"]
    with pytest.raises(InvalidArgumentError, match="measurements"):
        operator_from_config(config)


def test_config_keeps_learnable_flag() -> None:
    op = operator_from_config(BlockCS(0.1, block=8, learnable=False).config())
    assert not op.phi.requires_grad


# -------------------------------------------------------------------- given matrices
def test_init_from_numpy_and_torch_matrix() -> None:
    matrix = np.random.default_rng(1).standard_normal((25, 100))  # floor(25.7): accepted like round's 26
    op = BlockCS(0.257, block=10, init=matrix)
    assert op.measurements == 25 and op.init == "matrix"
    assert torch.allclose(op.phi.double(), torch.from_numpy(matrix), atol=1e-6)
    op_t = BlockCS(0.25, block=10, init=torch.from_numpy(matrix))
    assert torch.equal(op.phi, op_t.phi)
    matrix[0, 0] = 100.0  # the operator holds a copy
    assert op.phi[0, 0] != 100.0


def test_ista_net_matrix() -> None:
    scipy_io = pytest.importorskip("scipy.io")
    path = ISTA_DIR / "phi_0_25_1089.mat"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    phi = scipy_io.loadmat(str(path))["phi"]
    op = BlockCS(0.25, block=33, init=phi, image_size=(256, 256)).double()
    assert op.measurements == 272
    x = rand(1, 1, 256, 256)
    y = op.A(x)
    assert tuple(y.shape) == (1, 272, 8, 8)
    assert torch.allclose(y[0, :, 0, 0], torch.from_numpy(phi) @ x[0, 0, :33, :33].reshape(-1))
    with torch.no_grad():
        check_adjoint(op, (1, 1, 256, 256))
    one_percent = ISTA_DIR / "phi_0_1_1089.mat"
    if one_percent.is_file():  # 10 rows while round(0.01 * 1089) = 11: accepted
        assert BlockCS(0.01, block=33, init=scipy_io.loadmat(str(one_percent))["phi"]).measurements == 10


# ------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("ratio", [0, 1.5, -0.25, float("nan"), "0.25", True])
def test_bad_ratio(ratio: object) -> None:
    with pytest.raises(InvalidArgumentError, match="ratio"):
        BlockCS(ratio)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["block", "channels"])
@pytest.mark.parametrize("value", [0, -1, 2.5])
def test_bad_block_or_channels(name: str, value: object) -> None:
    with pytest.raises(InvalidArgumentError, match=name):
        BlockCS(0.25, **{name: value})  # type: ignore[arg-type]


def test_wrong_channel_count() -> None:
    op = BlockCS(0.25, block=8, channels=3)
    with pytest.raises(InvalidArgumentError, match=r"^x must"):
        op.A(torch.rand(1, 1, 16, 16))
    with pytest.raises(InvalidArgumentError, match=r"^y must"):
        op.A_adjoint(torch.rand(1, 16, 2, 2))
    with pytest.raises(InvalidArgumentError, match=r"^z must"):
        op.prox_l2(torch.rand(1, 1, 16, 16), torch.rand(1, 48, 2, 2), 0.5)


def test_matrix_with_wrong_column_count() -> None:
    with pytest.raises(InvalidArgumentError, match="init matrix"):
        BlockCS(0.25, block=8, init=np.zeros((16, 63)))


def test_matrix_with_wrong_row_count() -> None:
    with pytest.raises(InvalidArgumentError, match="init matrix has 30 rows"):
        BlockCS(0.25, block=8, init=np.zeros((30, 64)))


@pytest.mark.parametrize("init", ["gauss", "matrix", 3])
def test_bad_init(init: object) -> None:
    with pytest.raises(InvalidArgumentError, match="init"):
        BlockCS(0.25, block=8, init=init)  # type: ignore[arg-type]


def test_image_size_mismatch() -> None:
    op = BlockCS(0.25, block=8, image_size=(17, 23))
    with pytest.raises(InvalidArgumentError, match="image_size"):
        op.A(torch.rand(1, 1, 16, 16))
    with pytest.raises(InvalidArgumentError, match="image_size"):
        op.prox_l2(torch.rand(1, 1, 16, 16), op.A(torch.rand(1, 1, 17, 23)), 0.5)
    with pytest.raises(InvalidArgumentError, match=r"^y has a block grid"):
        op.A_adjoint(torch.rand(1, 16, 2, 2))


@pytest.mark.parametrize("size", [(16,), (0, 4), "16x16", (4.5, 4)])
def test_bad_image_size(size: object) -> None:
    with pytest.raises(InvalidArgumentError, match="image_size"):
        BlockCS(0.25, block=8, image_size=size)  # type: ignore[arg-type]


def test_bad_gamma() -> None:
    op = BlockCS(0.25, block=8)
    z, y = torch.rand(2, 1, 8, 8), torch.rand(2, 16, 1, 1)
    for gamma in (-1.0, torch.ones(3)):
        with pytest.raises(InvalidArgumentError, match="gamma"):
            op.prox_l2(z, y, gamma)


def test_measurement_count_formula_matches_docs() -> None:
    for ratio in RATIOS:
        assert BlockCS(ratio, block=33).measurements == max(1, round(ratio * 33**2))
    assert math.isclose(BlockCS(0.25).ratio, 0.25)


def test_image_smaller_than_a_block() -> None:
    op = BlockCS(0.25, block=8)
    with pytest.raises(InvalidArgumentError, match=r"x is \(5, 12\), smaller than one 8 x 8 block"):
        op.A(torch.rand(1, 1, 5, 12))
    with pytest.raises(InvalidArgumentError, match="image_size .* smaller than one 8 x 8 block"):
        op.image_size = (7, 30)


# ---- prox_l2: Gram matrices factored once per version of Phi; half precision ---------------------
def _prox_pair(size=(40, 56), ratio=0.3, per_sample=False):
    torch.manual_seed(0)
    op = BlockCS(ratio, block=16)
    z = torch.rand(2, 1, *size)
    y = op.A(torch.rand(2, 1, *size))
    gamma = torch.tensor([0.3, 2.0]) if per_sample else 0.7
    with torch.no_grad():
        factored = op.prox_l2(z, y, gamma)  # Phi fixed here: the eigendecomposition path
    solved = op.prox_l2(z, y, gamma)  # Phi trains (requires_grad, grad enabled): the LU path
    return op, factored, solved


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("size", [(32, 48), (40, 56)])  # whole blocks, and all four kinds of edge block
def test_factored_prox_equals_the_solved_one(size, per_sample):
    _, factored, solved = _prox_pair(size, per_sample=per_sample)
    assert torch.allclose(factored, solved.detach(), atol=1e-5, rtol=1e-5)


def test_gram_factors_are_reused_until_phi_changes(monkeypatch):
    op = BlockCS(0.25, block=8, learnable=False)
    calls = []
    original = op._grams
    monkeypatch.setattr(op, "_grams", lambda kinds: calls.append(1) or original(kinds))
    z, y = torch.rand(1, 1, 16, 16), op.A(torch.rand(1, 1, 16, 16))
    first = op.prox_l2(z, y, 0.5)
    op.prox_l2(z, y, 2.0)  # another gamma: the same factors
    assert len(calls) == 1
    with torch.no_grad():
        op.phi.mul_(2.0)  # an in-place update, as an optimizer step makes
    assert not torch.allclose(op.prox_l2(z, y, 0.5), first) and len(calls) == 2
    op.load_state_dict({k: v.clone() for k, v in op.state_dict().items()})
    op.prox_l2(z, y, 0.5)
    assert len(calls) == 3


def test_factored_prox_gradient_in_gamma_is_exact():
    op = BlockCS(0.3, block=8, learnable=False).double()
    z, y = torch.rand(1, 1, 16, 24, dtype=torch.float64), op.A(torch.rand(1, 1, 16, 24, dtype=torch.float64))
    gamma = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda g: op.prox_l2(z, y, g), (gamma,))


def test_learnable_phi_gets_exact_gradients_through_prox():
    """Phi trains: prox_l2 differentiates through its Gram matrices (checked by central differences)."""
    torch.manual_seed(0)
    op = BlockCS(0.3, block=8).double()
    z, y = torch.rand(1, 1, 16, 24, dtype=torch.float64), torch.rand(1, op.measurements, 2, 3, dtype=torch.float64)
    loss = lambda: (op.prox_l2(z, y, 0.6) ** 2).sum()  # noqa: E731
    loss().backward()
    eps = 1e-6
    for i, j in ((0, 0), (3, 17), (op.measurements - 1, 63)):
        with torch.no_grad():
            op.phi[i, j] += eps
            up = loss().item()
            op.phi[i, j] -= 2 * eps
            down = loss().item()
            op.phi[i, j] += eps
        assert abs((up - down) / (2 * eps) - op.phi.grad[i, j].item()) < 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_a_adjoint_and_prox(dtype):
    torch.manual_seed(0)
    op = BlockCS(0.25, block=8)
    x, z = torch.rand(2, 1, 16, 24), torch.rand(2, 1, 16, 24)
    reference = op.prox_l2(z, op.A(x), 0.5).detach()
    half = op.to(dtype)
    y = half.A(x.to(dtype))
    assert y.dtype == dtype and half.A_adjoint(y).dtype == dtype
    for grad in (False, True):  # the factored path and the solved one
        with torch.set_grad_enabled(grad):
            out = half.prox_l2(z.to(dtype), y, 0.5)
        assert out.dtype == dtype
        assert (out.float() - reference).abs().max() < 0.05
