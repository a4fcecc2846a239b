"""A network on a deepinv physics does what one on our own operators does, from the command line
and the app: evaluate (measurements simulated by the physics, its noise model included), restore,
measure, export to ONNX and run the file. Saving and reloading each physics bit-exact is in
tests/test_physics_io.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lorun_peft import unfold
from lorun_peft.cli.parser import main
from lorun_peft.denoisers import UNet
from lorun_peft.tasks import task_of

dinv = pytest.importorskip("deepinv")


def lorun(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    return out


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, Path]:
    """An inpainting network on deepinv's physics (half the pixels, Gaussian noise 0.05), saved,
    and a folder of two 40 x 48 photographs (larger than the physics' 32 x 32)."""
    root = tmp_path_factory.mktemp("deepinv")
    torch.manual_seed(0)
    physics = dinv.physics.Inpainting(img_size=(1, 32, 32), mask=0.5, noise_model=dinv.physics.GaussianNoise(0.05))
    folder = unfold(UNet(in_channels=1, width=4, depth=1), physics, K=2, algorithm="hqs").save_pretrained(root / "net")
    images = root / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 48), dtype=np.uint8)).save(images / f"p{i}.png")
    return folder, images


def test_the_physics_simulates_with_its_noise_model():
    physics = dinv.physics.Inpainting(img_size=(1, 16, 16), mask=0.5, noise_model=dinv.physics.GaussianNoise(0.1))
    task, x = task_of(physics), torch.rand(1, 1, 16, 16)
    assert task.name == "deepinv"
    first, again = (task.simulate(physics, x, 0.0, torch.Generator().manual_seed(3)) for _ in range(2))
    other = task.simulate(physics, x, 0.0, torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert 0.05 < float((first - physics.A(x)).std()) < 0.2  # the physics' own noise
    assert physics.noise_model.rng is None  # the generator was lent, not kept


def test_eval_restore_and_measure_on_a_deepinv_physics(saved, tmp_path, capsys):
    folder, images = saved
    out = lorun(capsys, "eval", "--model", folder, "--data", images)
    assert "deepinv model" in out and "p0.png" in out
    assert out == lorun(capsys, "eval", "--model", folder, "--data", images)  # the noise is seeded
    assert "task deepinv, operator deepinv" in lorun(capsys, "inspect", "--model", folder)
    photo = images / "p0.png"
    assert "PSNR" in lorun(capsys, "restore", "--model", folder, photo, tmp_path / "out.png")
    assert Image.open(tmp_path / "out.png").size == (32, 32)  # the centre the physics measures
    lorun(capsys, "measure", "--model", folder, photo, tmp_path / "y.npz")
    lorun(capsys, "restore", "--model", folder, "--measurement", tmp_path / "y.npz", tmp_path / "from_y.png")
    assert Image.open(tmp_path / "from_y.png").size == (32, 32)


def test_export_a_deepinv_physics_and_run_the_file(saved, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    folder, images = saved
    assert "max abs difference" in lorun(capsys, "export", "--model", folder, tmp_path / "inpaint.onnx")
    assert "deepinv model" in lorun(capsys, "eval", "--model", tmp_path / "inpaint.onnx", "--data", images)


@pytest.mark.filterwarnings("ignore:Function 'gaussian_blur' is deprecated:DeprecationWarning")  # deepinv 0.5's own helper
def test_an_export_that_cannot_convert_names_the_code(tmp_path, capsys):
    """deepinv's Blur solves its prox with a solver that branches on tensor values: the export says
    where, and writes nothing."""
    pytest.importorskip("onnxruntime")
    physics = dinv.physics.Blur(filter=dinv.physics.blur.gaussian_blur(1.0), padding="circular")
    folder = unfold(UNet(in_channels=1, width=4, depth=1), physics, K=2, algorithm="hqs").save_pretrained(tmp_path / "blur")
    assert main(["export", "--model", str(folder), str(tmp_path / "blur.onnx"), "--image-size", "16", "16"]) == 2
    err = capsys.readouterr().err
    assert "Blur does not convert to ONNX: the code at deepinv/optim/linear/least_squares.py" in err
    assert "depends on tensor values" in err and not (tmp_path / "blur.onnx").exists()


def test_the_app_restores_with_a_deepinv_physics(saved):
    from lorun_peft.app.playground import Playground

    play = Playground(allow_local=True)
    play.select(str(saved[0]))
    result = play.restore(torch.rand(1, 40, 48))
    assert result.truth.shape == (32, 32) and result.metrics["restored PSNR (dB)"] > 0
