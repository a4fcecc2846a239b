"""CASSI's mask is data: a network trained on mask crops restores measurements of any size with
the full mask it is given, exactly against the operator; bad masks and measurements are clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lorun_peft import unfold
from lorun_peft.cli.parser import main
from lorun_peft.denoisers import UNet
from lorun_peft.errors import CorruptFileError, InvalidArgumentError
from lorun_peft.operators.base import operator_from_config
from lorun_peft.operators.cassi import CASSI
from lorun_peft.data.spectral import GeneratedCubes, render_rgb, sam, scale_real_measurement
from lorun_peft.training.loop import fit_operator, train
from lorun_peft.unfold import UnfoldedNetwork

BANDS = 4


def identity_net(crop_mask: torch.Tensor, crop: int, K: int = 2) -> UnfoldedNetwork:
    """An HQS network whose denoiser is the identity (residual U-Net, output convolution zero)."""
    torch.manual_seed(0)
    denoiser = UNet(BANDS, width=4, depth=1)
    with torch.no_grad():
        denoiser.conv_out.weight.zero_()
        denoiser.conv_out.bias.zero_()
    operator = CASSI(crop_mask, step=2, bands=BANDS, crop=crop, mask_file="masks/full.mat")
    return unfold(denoiser, operator, K=K, algorithm="hqs", share="base", noise_level=True)


def dense(op: CASSI, h: int, w: int) -> torch.Tensor:
    """The operator as a matrix, column by column."""
    eye = torch.eye(BANDS * h * w, dtype=torch.float64).view(-1, BANDS, h, w)
    return op.double().A(eye).flatten(1).T


def test_restore_at_another_size_is_exact_against_the_operator() -> None:
    net = identity_net(torch.rand(20, 24, generator=torch.Generator().manual_seed(1)), crop=8).double()
    full = torch.rand(7, 9, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    net.operator.use_mask(full)
    x = torch.rand(1, BANDS, 7, 9, dtype=torch.float64)
    y = net.operator.A(x)
    assert y.shape == (1, 1, 7, 9 + 2 * (BANDS - 1))
    x_hat, stages = net.eval()(y, return_stages=True)
    assert x_hat.shape == x.shape and net.operator.A(x_hat).shape == y.shape
    # zero denoiser update: the network's output is its closed-form start, consistent with y
    x0 = net.operator.initial_estimate(y)
    assert torch.allclose(stages[0], x0, atol=1e-9)
    # the HQS step at this size is the closed-form prox: checked against a dense solve
    z = torch.rand_like(x)
    gamma = 1 / float(net.steps.mu(0).detach())
    phi = dense(net.operator, 7, 9)
    solve = torch.linalg.solve(torch.eye(phi.shape[1], dtype=phi.dtype) + gamma * phi.T @ phi,
                               z.flatten() + gamma * phi.T @ y.flatten())
    assert torch.allclose(net.steps(0, z, y, net.operator).flatten(), solve, atol=1e-9)
    assert torch.allclose(x_hat, x0, atol=1e-9)
    assert torch.allclose(net.operator.A(x0), y, atol=1e-9)


def test_crops_are_drawn_per_training_batch_only() -> None:
    full = torch.rand(30, 30, generator=torch.Generator().manual_seed(3))
    op = CASSI(full, step=2, bands=BANDS, crop=8, mask_file="m.mat", seed=5)
    first = op.mask.clone()
    assert op.mask.shape == (8, 8) and op.full_mask is not None
    with fit_operator(op, (8, 8)):
        second = op.mask.clone()
    assert not torch.equal(first, second)
    op.eval()
    with fit_operator(op, (8, 8)):
        assert torch.equal(op.mask, second)
    config = op.config()
    assert config["crop"] == 8 and config["mask_file"] == "m.mat" and config["mask_shape"] == [8, 8]
    rebuilt = operator_from_config(config)
    assert rebuilt.config() == config and rebuilt.full_mask is None
    again = CASSI(full, step=2, bands=BANDS, crop=8, seed=5)
    assert torch.equal(again.mask, first)  # the same seed, the same first window


def test_training_on_crops_then_restoring_the_full_mask() -> None:
    net = identity_net(torch.rand(24, 24, generator=torch.Generator().manual_seed(4)), crop=8)
    data = GeneratedCubes([torch.rand(1, 16, 16)], patch_size=8, wavelengths=[460.0, 500.0, 550.0, 600.0])
    train(net, data, steps=2, batch_size=2, progress=False)
    assert net.operator.mask.shape == (8, 8)
    net.operator.use_mask(torch.rand(24, 24))
    y = net.operator.A(torch.rand(2, BANDS, 24, 24))
    assert net.eval()(y).shape == (2, BANDS, 24, 24)


def test_bad_masks_and_measurements() -> None:
    op = CASSI(torch.rand(6, 6), step=2, bands=BANDS)
    with pytest.raises(InvalidArgumentError, match="2-D"):
        op.use_mask(torch.rand(6))
    with pytest.raises(InvalidArgumentError, match="crop 40 is larger than the 6 x 6 mask"):
        CASSI(torch.rand(6, 6), bands=BANDS, crop=40)
    with pytest.raises(InvalidArgumentError, match="needs a fixed mask"):
        CASSI(torch.rand(16, 16), bands=BANDS, crop=8, learnable_mask=True)
    learnt = CASSI(torch.rand(6, 6), step=2, bands=BANDS, learnable_mask=True)
    with pytest.raises(InvalidArgumentError, match="learnt its 6 x 6 mask .* cannot be replaced by a 9 x 9 mask"):
        learnt.use_mask(torch.rand(9, 9))
    learnt.use_mask(torch.ones(6, 6))  # the same size: its values are replaced
    assert isinstance(learnt.mask, torch.nn.Parameter) and float(learnt.mask.detach().min()) == 1.0
    op.use_mask(torch.rand(10, 10))
    with pytest.raises(InvalidArgumentError, match=r"must have shape \(N, 1, 10, 16\).*give the 10 x 14 mask"):
        op.A_adjoint(torch.rand(1, 1, 10, 20))


def test_mask_file_without_mask_key(tmp_path: Path) -> None:
    sio = pytest.importorskip("scipy.io")
    sio.savemat(tmp_path / "nomask.mat", {"Phi": np.ones((4, 4))})
    with pytest.raises(CorruptFileError, match="nomask.mat has no 'mask' variable"):
        CASSI(torch.rand(6, 6), bands=BANDS).use_mask(tmp_path / "nomask.mat")


def test_cli_restores_a_measurement_of_another_size_with_mask(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "train_mask.npy", rng.random((24, 24)).astype(np.float32))
    photos = tmp_path / "photos"  # gray images: cassi training generates cubes from them
    photos.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(photos / f"p{i}.png")
    out = tmp_path / "run"
    tiny = ["--K", "2", "--width", "4", "--depth", "1", "--patch", "8", "--steps", "1", "--batch-size", "2", "--no-progress"]
    assert main(["train", "--task", "cassi", "--bands", str(BANDS), "--mask", str(tmp_path / "train_mask.npy"),
                 "--data", str(photos), "--phase", "backbone", "--out", str(out), *tiny]) == 0
    assert "spectral cubes generated from the images" in capsys.readouterr().out
    np.save(tmp_path / "full.npy", rng.random((12, 14)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.random((12, 14 + 2 * (BANDS - 1))).astype(np.float32))
    args = ["restore", "--model", str(out), "--measurement", str(tmp_path / "y.npy"), str(tmp_path / "x.npy")]
    capsys.readouterr()
    assert main(args) == 2
    assert "trained on 8 x 8 crops of" in capsys.readouterr().err
    assert main([*args, "--mask", str(tmp_path / "full.npy"), "--real-scale"]) == 0
    assert np.load(tmp_path / "x.npy").shape == (BANDS, 12, 14)
    np.save(tmp_path / "narrow.npy", rng.random((12, 17)).astype(np.float32))
    args[4] = str(tmp_path / "narrow.npy")
    capsys.readouterr()
    assert main([*args, "--mask", str(tmp_path / "full.npy")]) == 2
    assert "must have shape (N, 1, 12, 20)" in capsys.readouterr().err
    (tmp_path / "cubes").mkdir()
    np.save(tmp_path / "cubes" / "cube.npy", rng.random((BANDS, 12, 14)).astype(np.float32))
    assert main(["eval", "--model", str(out), "--data", str(tmp_path / "cubes"), "--mask", str(tmp_path / "full.npy")]) == 0
    assert "cube.npy" in capsys.readouterr().out


def test_spectral_helpers() -> None:
    cubes = GeneratedCubes([torch.rand(1, 12, 12)], seed=3)
    assert torch.equal(cubes.full(0), cubes.full(0)) and cubes.full(0).shape == (28, 12, 12)
    flat = torch.full((28, 2, 2), 0.5)
    rgb = render_rgb(flat, exposure=1.0)
    assert torch.allclose(rgb[0], rgb[1], atol=1e-4) and torch.allclose(rgb[1], rgb[2], atol=1e-4)  # flat is grey
    x = torch.rand(1, 28, 4, 4)
    assert float(sam(x, x)) < 1e-3
    assert float(scale_real_measurement(torch.tensor([[0.25, 0.5, 2.0]])).max()) == pytest.approx(11.2)
