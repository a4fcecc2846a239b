"""`lorun eval --luma`: the README's SR protocol (the luma of colour images, Y of YCbCr, degraded and
restored directly by a gray model; `scale` border pixels shaved), against the same figures computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lorun_peft import evaluate, zoo
from lorun_peft.cli import main
from lorun_peft.data import ImageFolder, modcrop
from lorun_peft.errors import InvalidArgumentError
from lorun_peft.metrics import rgb_to_y
from lorun_peft.cli.inputs import folder_images


@pytest.fixture
def colour(tmp_path):
    folder = tmp_path / "colour"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(2):
        base = np.cumsum(rng.normal(0, 6, (50, 66, 3)), axis=1) + 128
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(folder / f"c{i}.png")
    return folder


def test_luma_protocol_matches_the_benchmark_protocol(tmp_path, colour, capsys):
    out = tmp_path / "scores.json"
    assert main(["eval", "--model", "zoo:sr-x2-k0", "--data", str(colour), "--luma", "--json", str(out)]) == 0
    assert "the luma (Y of YCbCr) restored directly" in capsys.readouterr().out
    table = json.loads(out.read_text())
    net = zoo.load("sr-x2-k0")
    folder = ImageFolder(colour, channels=3, augment=False)
    images = [modcrop(rgb_to_y(folder.full(i)[None])[0], 2) for i in range(len(folder))]  # benchmarks.zoo's test_images
    by_hand = evaluate(net, images, names=folder.names, border=2).mean()
    mean = table["mean"]
    assert mean["psnr"] == pytest.approx(by_hand["psnr"], abs=0.01)
    assert mean["x0_psnr"] == pytest.approx(by_hand["x0_psnr"], abs=0.01)


def test_luma_is_not_the_gray_conversion(colour):
    config = {"task": "sr", "channels": 1}
    luma, _ = folder_images(config, colour, luma=True)
    gray, _ = folder_images(config, colour, gray=True)
    assert luma[0].shape == gray[0].shape == (1, 50, 66)
    assert float(luma[0].min()) >= 16 / 255 - 1e-6 and float(luma[0].max()) <= 235 / 255 + 1e-6
    assert not torch.allclose(luma[0], gray[0], atol=1e-3)


def test_luma_needs_a_gray_model(colour):
    with pytest.raises(InvalidArgumentError, match="--luma restores the luma channel with a gray model; this model has 3 channels"):
        folder_images({"task": "sr", "channels": 3}, colour, luma=True)
