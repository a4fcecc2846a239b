"""`lorun restore --tile` and `lorun eval --tile` (issue #34): large images tile by tile through the
command line, with the same result as whole; a tile below the receptive field is refused."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from lorun_peft import unfold
from lorun_peft.cli import main
from lorun_peft.denoisers import UNet
from lorun_peft.operators import BlockCS


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    net = unfold(UNet(1, width=4, depth=1), BlockCS(0.25, block=8), K=2, noise_level=True).eval()
    return net.save_pretrained(tmp_path_factory.mktemp("net") / "model")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    rng = np.random.default_rng(0)
    smooth = np.cumsum(np.cumsum(rng.normal(0, 1, (96, 128)), 0), 1)
    smooth = (smooth - smooth.min()) / np.ptp(smooth) * 255
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(smooth.astype(np.uint8)).save(path)
    return path


def psnr_of(text: str) -> float:
    return float(re.search(r"PSNR ([\d.]+) dB", text).group(1))


def test_restore_tiled_equals_whole(model, photo, tmp_path, capsys):
    assert main(["restore", "--model", str(model), str(photo), str(tmp_path / "whole.png")]) == 0
    whole = psnr_of(capsys.readouterr().out)
    assert main(["restore", "--model", str(model), "--tile", "48", str(photo), str(tmp_path / "tiled.png")]) == 0
    tiled = psnr_of(capsys.readouterr().out)
    assert abs(tiled - whole) <= 0.05
    a, b = (np.asarray(Image.open(tmp_path / f"{n}.png"), dtype=float) for n in ("whole", "tiled"))
    assert np.abs(a - b).max() <= 2  # gray levels: no seam


def test_eval_takes_tile(model, photo, tmp_path, capsys):
    folder = photo.parent
    assert main(["eval", "--model", str(model), "--data", str(folder), "--tile", "48"]) == 0
    assert "mean" in capsys.readouterr().out


def test_a_tile_below_the_receptive_field_is_refused(model, photo, tmp_path, capsys):
    assert main(["restore", "--model", str(model), "--tile", "8", str(photo), str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "is too small for this network: its receptive field needs a margin of" in err
    assert "the smallest tile that works is" in err
    assert not (tmp_path / "x.png").exists()
