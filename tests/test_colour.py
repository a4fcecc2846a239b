"""Colour in, colour out (issue #33 item 1): a gray network restores a colour photograph by its
task's colour policy (lorun_peft.data.colour) through `lorun restore`, `measure`, `eval`, the app
and the Python helpers; the hue of a saturated region is kept and each channel's PSNR is printed."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from matplotlib.colors import rgb_to_hsv
from PIL import Image

from lorun_peft import evaluate, zoo
from lorun_peft.cli import main
from lorun_peft.data.colour import as_gray_batch, check_policy, from_gray_batch, rgb_to_ycbcr, ycbcr_to_rgb
from lorun_peft.data.images import photographs
from lorun_peft.errors import InvalidArgumentError
from lorun_peft.metrics import rgb_to_y
from lorun_peft.unfold import colour_policy, measure_and_restore

TASKS = {"cs-0.25": "over R, G and B", "sr-x2-k0": "on Y", "deblur-gauss": "over R, G and B", "inpaint-50": "over R, G and B"}


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> tuple[np.ndarray, object]:
    """A 96 x 96 colour crop of the shipped astronaut photograph (a saturated red and blue flag)."""
    image = photographs(["astronaut"], channels=3)[0][:, 112:208, 0:96]
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array).save(path)
    return array.astype(np.float64) / 255, path


def saturated(rgb: np.ndarray) -> np.ndarray:
    """The 5 % most colourful pixels of an H x W x 3 image (largest chroma, max - min of R, G, B)."""
    chroma = rgb.max(-1) - rgb.min(-1)
    return chroma >= np.quantile(chroma, 0.95)


def hue_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Degrees between the hues of the mean colours a and b."""
    ha, hb = rgb_to_hsv(a)[0] * 360, rgb_to_hsv(b)[0] * 360
    return float(min(abs(ha - hb), 360 - abs(ha - hb)))


@pytest.mark.parametrize("name", list(TASKS))
def test_a_colour_photograph_stays_colour_and_keeps_its_hue(name, photo, tmp_path, capsys):
    truth, path = photo
    out = tmp_path / "restored.png"
    assert main(["restore", "--model", f"zoo:{name}", str(path), str(out)]) == 0
    printed = capsys.readouterr().out
    with Image.open(out) as image:
        assert image.mode == "RGB"
        restored = np.asarray(image, dtype=np.float64) / 255
    region = saturated(truth)
    assert truth[region].mean(0).std() > 0.1  # the region is really coloured
    assert hue_difference(restored[region].mean(0), truth[region].mean(0)) < 10
    assert rgb_to_hsv(restored[region].mean(0))[1] > 0.7 * rgb_to_hsv(truth[region].mean(0))[1]
    assert f"PSNR {TASKS[name]}" in printed
    per_channel = re.search(r"per channel: R ([\d.]+), G ([\d.]+), B ([\d.]+) dB", printed)
    assert per_channel and all(float(v) > 20 for v in per_channel.groups()), printed


def test_gray_asks_for_gray(photo, tmp_path, capsys):
    out = tmp_path / "gray.png"
    assert main(["restore", "--model", "zoo:cs-0.25", "--gray", str(photo[1]), str(out)]) == 0
    with Image.open(out) as image:
        assert image.mode == "L"
    assert "read as gray (--gray)" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["cs-0.25", "sr-x2-k0", "inpaint-50"])
def test_measure_then_restore_the_measurement_in_colour(name, photo, tmp_path, capsys):
    y, out = tmp_path / "y.npz", tmp_path / "out.png"
    assert main(["measure", "--model", f"zoo:{name}", str(photo[1]), str(y)]) == 0
    assert "R, G and B measured one by one" in capsys.readouterr().out
    assert main(["restore", "--model", f"zoo:{name}", "--measurement", str(y), str(out)]) == 0
    assert "colour:" in capsys.readouterr().out
    with Image.open(out) as image:
        assert image.mode == "RGB"
        restored = np.asarray(image, dtype=np.float64) / 255
    truth = photo[0][: restored.shape[0], : restored.shape[1]]
    region = saturated(truth)
    assert hue_difference(restored[region].mean(0), truth[region].mean(0)) < 10


def test_a_colour_measurement_is_not_written_as_npy(photo, tmp_path, capsys):
    assert main(["measure", "--model", "zoo:cs-0.25", str(photo[1]), str(tmp_path / "y.npy")]) == 2
    assert "the measurement of a colour image is written as .npz" in capsys.readouterr().err


def test_sr_in_colour_scores_as_the_luma_protocol(photo, tmp_path, capsys):
    """Restoring Y of the colour measurement gives the figures of `--luma` (the luma degraded
    directly): the operator is linear and keeps constants, so both see the same Y measurement."""
    folder = tmp_path / "set"
    folder.mkdir()
    Image.open(photo[1]).save(folder / "a.png")
    scores = {}
    for flag in ([], ["--luma"]):
        out = tmp_path / f"scores{len(flag)}.json"
        assert main(["eval", "--model", "zoo:sr-x2-k0", "--data", str(folder), *flag, "--json", str(out)]) == 0
        scores[bool(flag)] = json.loads(out.read_text())["mean"]
    assert "the chroma is the operator's cubic estimate; PSNR on Y" in capsys.readouterr().out
    assert scores[False]["psnr"] == pytest.approx(scores[True]["psnr"], abs=0.02)


def test_python_helpers_restore_colour():
    net = zoo.load("cs-0.25")
    image = photographs(["coffee"], channels=3, size=64)[0]
    result = evaluate(net, [image], keep_outputs=True)
    assert result.restored[0].shape == (3, 64, 64) and result.mean()["psnr"] > 25
    with torch.no_grad():
        y, x0, x_hat, stages = measure_and_restore(net, image[None])
    assert y.shape[0] == 3 and x_hat.shape == (1, 3, 64, 64) and all(s.shape == x_hat.shape for s in stages)


def test_colour_policy_applies_to_gray_networks_only():
    net = zoo.load("cs-0.25")
    assert colour_policy(net, torch.rand(1, 3, 32, 32)) == "channels"
    assert colour_policy(net, torch.rand(1, 1, 32, 32)) is None
    assert colour_policy(zoo.load("sr-x2-k0"), torch.rand(1, 3, 32, 32)) == "luma"


def test_ycbcr_round_trip_and_luma_agree():
    rgb = torch.rand(2, 3, 5, 7)
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-5)
    assert torch.allclose(rgb_to_ycbcr(rgb)[:, :1], rgb_to_y(rgb), atol=1e-6)
    white, black = torch.ones(1, 3, 1, 1), torch.zeros(1, 3, 1, 1)
    assert torch.allclose(rgb_to_ycbcr(white).flatten() * 255, torch.tensor([235.0, 128, 128]), atol=1e-3)
    assert torch.allclose(rgb_to_ycbcr(black).flatten() * 255, torch.tensor([16.0, 128, 128]), atol=1e-3)
    assert from_gray_batch(as_gray_batch(rgb)).equal(rgb)


@pytest.mark.parametrize("call, message", [
    (lambda: rgb_to_ycbcr(torch.rand(1, 1, 4, 4)), r"rgb_to_ycbcr expects N x 3 x H x W images, got \(1, 1, 4, 4\)"),
    (lambda: ycbcr_to_rgb(torch.rand(3, 4, 4)), r"ycbcr_to_rgb expects N x 3 x H x W images, got \(3, 4, 4\)"),
    (lambda: from_gray_batch(torch.rand(4, 1, 2, 2)), r"expected \(N \* 3\) x 1 x H x W gray images, got \(4, 1, 2, 2\)"),
    (lambda: check_policy("rgb"), r"colour policy must be one of \['channels', 'luma', 'none'\], got 'rgb'"),
])
def test_bad_colour_input(call, message):
    with pytest.raises(InvalidArgumentError, match=message):
        call()


@pytest.mark.parametrize("task, where", [("cs-0.25", "over R, G and B"), ("sr-x2-k0", "on Y")])
def test_the_app_restores_colour_as_the_command_line_does(task, where, photo):
    from lorun_peft.app.playground import Playground

    play = Playground()
    play.select(task)
    truth, _ = photo
    image = torch.from_numpy(truth).permute(2, 0, 1).float()
    result = play.restore(image)
    assert result.restored.shape == (96, 96, 3)
    assert result.colour.startswith("colour:") and result.colour.endswith(where)
    region = saturated(truth)
    assert hue_difference(result.restored[region].mean(0), truth[region].mean(0)) < 10


def test_the_demo_zoo_tour_restores_a_colour_photograph(photo, tmp_path, capsys):
    from lorun_peft.cli.demo import zoo_tour

    image = torch.from_numpy(photo[0]).permute(2, 0, 1).float()
    scores = zoo_tour(image, tmp_path)
    assert scores["cs-0.25"]["lorun"] > scores["cs-0.25"]["x0"] > 20
    with Image.open(tmp_path / "zoo.png") as figure:
        rgb = np.asarray(figure.convert("RGB"), dtype=np.float64)
    assert (rgb.max(-1) - rgb.min(-1)).max() > 100  # colour panels, not gray ones
