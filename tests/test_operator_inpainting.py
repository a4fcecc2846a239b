"""Inpainting (pixels missing at random): adjointness, VJP, prox, the mask (random, given, saved,
sized), the hole-filling first estimate, errors, unfolded networks, deepinv and ONNX export."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TinyDenoiser
from operator_checks import check_adjoint, check_onnx_export, check_prox, check_vjp, relative_error, run_in_child

import lorun_peft
from lorun_peft.data.images import photographs
from lorun_peft.errors import InvalidArgumentError
from lorun_peft.metrics import psnr
from lorun_peft.operators import Inpainting, fit_operator
from lorun_peft.operators.base import operator_from_config
from lorun_peft.unfold import UnfoldedNetwork

SHAPES = [(2, 1, 12, 18), (1, 3, 15, 21), (2, 3, 16, 8), (1, 2, 7, 9)]  # even and odd sizes


def operators(shape):
    """A random mask of the size, a given one, and one that follows the images."""
    H, W = shape[-2:]
    given = (torch.rand(H, W, generator=torch.Generator().manual_seed(3)) > 0.4).float()
    return [Inpainting(missing=0.7, image_size=(H, W), seed=1), Inpainting(given), Inpainting(missing=0.3)]


@pytest.mark.parametrize("shape", SHAPES)
def test_adjoint_vjp_and_prox(shape):
    for op in operators(shape):
        op = op.double()
        check_adjoint(op, shape, tol=1e-12)
        check_vjp(op, shape)
        for gamma in (0.01, 0.7, 30.0):
            check_prox(op, shape, gamma=gamma, tol=1e-10)


def test_a_keeps_the_masked_pixels_and_the_prox_per_sample_gamma():
    op = Inpainting(missing=0.6, image_size=(10, 13), seed=2).double()
    x = torch.rand(3, 2, 10, 13, dtype=torch.float64)
    y = op.A(x)
    assert torch.equal(y, x * op.mask) and int((op.mask == 0).sum()) == round(0.6 * 130)
    gammas = torch.tensor([0.1, 1.0, 7.0], dtype=torch.float64)
    one_by_one = torch.cat([op.prox_l2(x[i : i + 1], y[i : i + 1], float(gammas[i])) for i in range(3)])
    assert relative_error(op.prox_l2(x, y, gammas), one_by_one) < 1e-14
    gamma = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    inputs = (x[:1, :1].clone().requires_grad_(), y[:1, :1].clone().requires_grad_(), gamma)
    assert torch.autograd.gradcheck(lambda zz, yy, gg: op.prox_l2(zz, yy, gg), inputs, fast_mode=True)


def test_the_random_mask_depends_on_seed_missing_and_size_only():
    a, b = Inpainting(missing=0.8, image_size=(16, 12), seed=5), Inpainting(missing=0.8, image_size=(16, 12), seed=5)
    assert torch.equal(a.mask, b.mask) and a.mask.dtype == torch.get_default_dtype()
    assert not torch.equal(a.mask, Inpainting(missing=0.8, image_size=(16, 12), seed=6).mask)
    assert set(a.mask.unique().tolist()) == {0.0, 1.0} and int(a.mask.sum()) == 16 * 12 - round(0.8 * 16 * 12)
    assert torch.equal(Inpainting(missing=0.0, image_size=(4, 5)).mask, torch.ones(4, 5))


def test_initial_estimate_beats_zero_fill():
    """On the seven built-in photographs (gray, 128 px), 80% missing: about 26.8 dB against 7.4 dB
    for the zero-filled y; at least 10 dB better on every photograph, measured pixels kept."""
    gains = []
    for i, x in enumerate(photographs(channels=1, size=128)):
        x = x[None]
        op = Inpainting(missing=0.8, image_size=x.shape[-2:], seed=i)
        y = op.A(x)
        x0 = op.initial_estimate(y)
        assert x0.dtype == y.dtype and torch.equal(x0 * op.mask, y)
        gains.append(float(psnr(x0, x) - psnr(y, x)))
    assert min(gains) > 10, gains


def test_initial_estimate_fills_a_constant_and_handles_rgb_odd_sizes():
    op = Inpainting(missing=0.9, image_size=(15, 22), seed=4)
    x0 = op.initial_estimate(op.A(torch.full((2, 3, 15, 22), 0.3)))
    assert torch.allclose(x0, torch.full_like(x0, 0.3), atol=1e-5)
    x = torch.rand(1, 3, 15, 22, dtype=torch.float64)
    assert op.double().initial_estimate(op.A(x)).dtype == torch.float64


@pytest.mark.parametrize("given", [False, True])
def test_config_and_state_dict_round_trip(given):
    mask = (torch.rand(9, 14, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    op = Inpainting(mask, channels=3, seed=7) if given else Inpainting(missing=0.75, image_size=(9, 14), channels=3, seed=7)
    config = json.loads(json.dumps(op.config()))
    assert config == {"type": "Inpainting", "missing": pytest.approx(op.missing), "image_size": [9, 14], "channels": 3, "seed": 7}
    twin = operator_from_config(config)
    twin.load_state_dict(op.state_dict())
    assert torch.equal(twin.mask, op.mask) and list(op.state_dict()) == ["mask"] and not list(op.parameters())
    x = torch.rand(2, 3, 9, 14)
    assert torch.equal(twin.A(x), op.A(x)) and torch.equal(twin.initial_estimate(op.A(x)), op.initial_estimate(op.A(x)))
    assert int(operator_from_config(config).mask.sum()) == int(op.mask.sum())  # the config alone: as many pixels kept


def test_a_saved_network_restores_the_given_mask_exactly(tmp_path):
    mask = (torch.rand(16, 16, generator=torch.Generator().manual_seed(2)) > 0.3).float()
    from lorun_peft.denoisers import UNet

    net = lorun_peft.unfold(UNet(in_channels=1, width=4, depth=1), Inpainting(mask), K=2, algorithm="hqs").eval()
    again = UnfoldedNetwork.from_pretrained(net.save_pretrained(tmp_path / "net"))
    assert torch.equal(again.operator.mask, mask)
    y = net.operator.A(torch.rand(1, 1, 16, 16))
    with torch.no_grad():
        assert torch.equal(again(y), net(y))


def test_a_fixed_mask_refuses_other_sizes_and_a_following_mask_is_drawn_per_size():
    fixed = Inpainting(missing=0.5, image_size=(8, 10))
    message = "mask of size 8 x 10 does not fit an image of 12 x 10; crop or pad the image to 8 x 10"
    for call in (lambda: fixed.A(torch.rand(1, 1, 12, 10)), lambda: fixed.initial_estimate(torch.rand(1, 1, 12, 10)),
                 lambda: fixed.prox_l2(torch.rand(1, 1, 8, 10), torch.rand(1, 1, 12, 10), 0.5)):
        with pytest.raises(InvalidArgumentError, match=message):
            call()
    with pytest.raises(InvalidArgumentError, match=message):
        with fit_operator(fixed, (12, 10)):
            pass
    with fit_operator(fixed, (8, 10)):
        assert fixed.image_size == (8, 10)
    follow = Inpainting(missing=0.5, seed=3)
    assert follow.image_size is None and follow.config()["image_size"] is None
    y = follow.A(torch.rand(1, 1, 12, 10))
    assert torch.equal(follow.mask, Inpainting(missing=0.5, image_size=(12, 10), seed=3).mask)
    with fit_operator(follow, (6, 7)):
        assert follow.mask.shape == (6, 7)
    assert follow.A_adjoint(y).shape == y.shape  # drawn again for 12 x 10: the same mask
    assert "mask" not in follow.state_dict()  # the seed redraws it: nothing to save
    twin = operator_from_config(follow.config())
    twin.load_state_dict(follow.state_dict())
    twin.A(torch.rand(1, 1, 12, 10))
    assert torch.equal(twin.mask, follow.mask)


def test_use_mask_puts_in_a_mask_of_any_size():
    op = Inpainting(missing=0.5)
    mask = torch.ones(5, 6)
    mask[2, 3] = 0
    assert op.use_mask(mask) is op and op.image_size == (5, 6) and op.missing == pytest.approx(1 / 30)
    with pytest.raises(InvalidArgumentError, match="mask of size 5 x 6 does not fit an image of 5 x 7"):
        op.A(torch.rand(1, 1, 5, 7))


# ------------------------------------------------------------------------------- unfolded networks
@pytest.mark.parametrize("algorithm", ["hqs", "pgd"])
def test_unfolded_network_backpropagates_to_every_stage_adapter(algorithm):
    torch.manual_seed(0)
    op = Inpainting(missing=0.6, image_size=(16, 15))
    net = lorun_peft.unfold(TinyDenoiser(), op, K=3, algorithm=algorithm)
    x = torch.rand(2, 1, 16, 15)
    torch.mean((net(op.A(x)) - x) ** 2).backward()
    grads = {name: p.grad for name, p in net.named_parameters() if "lora_B" in name}
    for k in range(3):
        stage = [g for name, g in grads.items() if f"stage_{k}" in name]
        assert stage and all(g is not None and float(g.abs().sum()) > 0 for g in stage), k


# ------------------------------------------------------------------------------------ deepinv
@pytest.mark.parametrize("size", [(12, 15), (16, 16)])
def test_matches_deepinv_inpainting(size):
    dinv = pytest.importorskip("deepinv")
    mask = (torch.rand(*size, generator=torch.Generator().manual_seed(4)) > 0.5).double()
    physics = dinv.physics.Inpainting(img_size=(3, *size), mask=mask[None])
    ours = Inpainting(mask).double()
    x = torch.rand(2, 3, *size, dtype=torch.float64)
    assert torch.equal(ours.A(x), physics.A(x).double()) and torch.equal(ours.A_adjoint(x), physics.A_adjoint(x).double())


# ------------------------------------------------------------------------------------ ONNX export
def export_and_compare(path: str) -> None:
    """The export check of tests/operator_checks.py over Inpainting (odd width), in a child process."""
    op = Inpainting(missing=0.7, image_size=(24, 31), channels=1)
    assert torch.equal(check_onnx_export(op, (24, 31), path).operator.mask, op.mask)


def test_onnx_export(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    run_in_child(f"import test_operator_inpainting as t; t.export_and_compare({str(tmp_path / 'inpaint.onnx')!r})", tmp_path)
    assert (tmp_path / "inpaint.onnx").is_file()


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("missing", [-0.1, 1.0, 1.5, float("nan"), "0.5", True])
def test_missing_outside_zero_one(missing):
    with pytest.raises(InvalidArgumentError, match=r"missing must be the fraction of pixels removed, a number in \[0, 1\)"):
        Inpainting(missing=missing, image_size=(8, 8))


def test_missing_that_removes_every_pixel():
    with pytest.raises(InvalidArgumentError, match="missing=0.99 removes every pixel of a 4 x 4 image; lower it"):
        Inpainting(missing=0.99, image_size=(4, 4))


@pytest.mark.parametrize("mask", [torch.ones(8), torch.ones(1, 8, 8), torch.ones(0, 4)])
def test_mask_not_2d(mask):
    with pytest.raises(InvalidArgumentError, match=r"mask must be a non-empty 2-D array \(H x W\), one mask for every channel"):
        Inpainting(mask)


def test_mask_values_not_0_or_1():
    mask = torch.ones(4, 5)
    mask[1, 3] = 0.5
    with pytest.raises(InvalidArgumentError, match=r"mask values must be 0 \(missing\) or 1 \(kept\), got 0.5 at \(row 1, column 3\)"):
        Inpainting(mask)
    mask[1, 3] = float("nan")
    with pytest.raises(InvalidArgumentError, match="mask values must be 0"):
        Inpainting(mask)


def test_mask_keeping_nothing_or_given_with_missing_or_another_size():
    with pytest.raises(InvalidArgumentError, match="mask of size 3 x 4 keeps no pixel"):
        Inpainting(torch.zeros(3, 4))
    with pytest.raises(InvalidArgumentError, match="give either a mask or missing"):
        Inpainting(torch.ones(3, 4), missing=0.5)
    with pytest.raises(InvalidArgumentError, match="mask of size 3 x 4 does not fit image_size 4 x 3"):
        Inpainting(torch.ones(3, 4), image_size=(4, 3))


@pytest.mark.parametrize("size", [(8,), "8x8", (8, 0), (8.5, 8)])
def test_bad_image_size(size):
    with pytest.raises(InvalidArgumentError, match="image_size"):
        Inpainting(image_size=size)


def test_channels_and_inputs():
    op = Inpainting(missing=0.5, image_size=(8, 8), channels=3)
    with pytest.raises(InvalidArgumentError, match="x must have 3 channels"):
        op.A(torch.rand(1, 1, 8, 8))
    with pytest.raises(InvalidArgumentError, match=r"y must be a tensor shaped \(N, C, H, W\)"):
        op.A_adjoint([1.0, 2.0])
    with pytest.raises(InvalidArgumentError, match="gamma must be"):
        op.prox_l2(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), torch.ones(3))
    with pytest.raises(InvalidArgumentError, match="seed must be an int >= 0"):
        Inpainting(missing=0.5, image_size=(8, 8), seed=-1)
