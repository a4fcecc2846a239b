"""The engine of `lorun app` (lorun_peft.app.playground): task swaps over one base, restorations and
every refusal (bad images, bundles of another base, local folders without --allow-local)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lorun_peft import unfold
from lorun_peft.denoisers import UNet
from lorun_peft.errors import CorruptFileError, IncompatibleBundleError, InvalidArgumentError
from lorun_peft.operators import CASSI, BlockCS
from lorun_peft.app.playground import MEASUREMENT, Limits, Playground


@pytest.fixture(scope="module")
def play() -> Playground:
    play = Playground(allow_local=True)
    play.select("cs-0.25")
    return play


def test_swaps_keep_one_base_and_one_network_per_unfolding(play, tmp_path):
    base = play.base
    first = play.net
    message = play.select("cs-0.10")
    assert message.startswith("swapped cs-0.10 into the live LoRun-9 network") and message.endswith(" ms")
    assert play.net is first and play.base is base and play.net.operator.ratio == 0.10
    message = play.select("sr-x2-k0")  # HQS over the same base: a second live network around it
    assert "new HQS LoRun-9 network around the base in memory" in message
    assert play.base is base and len(play.networks) == 2
    assert play.select("sr-x4-k0").startswith("swapped sr-x4-k0")
    assert play.net.operator.scale == 4
    unfold(UNet(1, width=4, depth=1), BlockCS(0.25, block=8), K=2).eval().save_pretrained(tmp_path / "net")
    assert "with its own base" in play.select(str(tmp_path / "net"))  # a saved network: the zoo's base is parked
    assert play.base is not base
    assert play.select("cs-0.25").startswith("swapped cs-0.25")  # the zoo's base and both networks were kept
    assert play.net is first and play.base is base and len(play.networks) == 2


def test_a_zoo_base_is_checked_once_and_each_bundle_on_every_swap(monkeypatch):
    from lorun_peft import zoo

    checked = []
    verify_folders = zoo._verify_folders
    monkeypatch.setattr(zoo, "_verify_folders", lambda root, folders: checked.extend(f.name for f in folders)
                        or verify_folders(root, folders))
    fresh = Playground()
    fresh.select("cs-0.25")
    fresh.select("cs-0.10")
    fresh.select("cs-0.25")
    assert sorted(checked) == ["base", "cs-0.10", "cs-0.25", "cs-0.25"]


def test_restore_degrades_and_scores(play):
    play.select("cs-0.25")
    image = play.built_in("camera")[:, :96, :80]
    result = play.restore(image, noise_sigma=0.01)
    assert result.truth.shape == result.restored.shape == result.initial.shape == (96, 80)
    assert result.metrics["restored PSNR (dB)"] > result.metrics["initial PSNR (dB)"]
    assert [label.split()[0] for _, label in result.stages] == play.net.adapter_names
    assert "Block-9 equivalent" in play.report()


def test_super_resolution_of_a_measurement_has_no_truth(play):
    play.select("sr-x2-k0")
    result = play.restore(torch.rand(1, 40, 36), mode=MEASUREMENT)
    assert result.truth is None and result.metrics == {} and result.restored.shape == (80, 72)
    play.select("cs-0.25")


def test_uploads_keep_colour_and_gray_stored_as_colour_is_gray(tmp_path):
    colour, gray = tmp_path / "colour.png", tmp_path / "gray.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(colour)
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(gray)
    assert Playground().read_upload(colour).shape == (3, 20, 30)
    assert Playground().read_upload(gray).shape == (1, 20, 30)


def test_a_gray_network_restores_colour_channel_by_channel(play):
    play.select("cs-0.25")
    image = play.built_in("astronaut")[:, :64, :48]
    assert image.shape[0] == 3
    result = play.restore(image)
    assert result.truth.shape == result.restored.shape == result.stages[0][0].shape == (64, 48, 3)
    channels = [play.restore(image[c : c + 1]).restored for c in range(3)]  # the same, one channel at a time
    np.testing.assert_allclose(result.restored, np.stack(channels, axis=-1), atol=1e-5)
    assert result.metrics["restored PSNR (dB)"] > result.metrics["initial PSNR (dB)"]


# ---- one test per bad input --------------------------------------------------------------
def test_non_image_upload(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(CorruptFileError, match="notes.png is not an image this page can read"):
        Playground().read_upload(path)


def test_huge_image_is_refused_before_decoding(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("L", (1100, 16)).save(path)
    with pytest.raises(InvalidArgumentError, match=r"wide.png is 1100 x 16 pixels; this page takes sides from 16 to 1024"):
        Playground().read_upload(path)


def test_upload_over_the_byte_limit(tmp_path):
    path = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
    with pytest.raises(InvalidArgumentError, match=r"noise.png is 0.0 MB; the limit is 0.001 MB"):
        Playground(Limits(max_upload_mb=0.001)).read_upload(path)


def test_bad_limits():
    with pytest.raises(InvalidArgumentError, match="limits need max_upload_mb > 0 and 0 < min_side <= max_side"):
        Limits(min_side=64, max_side=32)


def test_image_that_does_not_fit_the_operator(tmp_path):
    net = unfold(UNet(4, width=4, depth=1), CASSI(torch.ones(16, 16), bands=4), K=2)  # 4 spectral bands
    play = Playground(allow_local=True)
    play.select(str(net.save_pretrained(tmp_path / "cassi")))
    with pytest.raises(InvalidArgumentError, match="this image does not fit the task's operator"):
        play.restore(torch.rand(1, 16, 16))  # a gray photograph is not a 4-band cube


def test_bundle_of_another_base_leaves_the_live_task(play, tmp_path):
    other = unfold(UNet(1, width=4, depth=1, noise_level=True), BlockCS(0.25, block=8), K=9, noise_level=True)
    folder = other.save_adapters(tmp_path / "other")
    live = play.task
    with pytest.raises(IncompatibleBundleError, match="was trained on another base denoiser than the one loaded"):
        play.select(str(folder))
    assert play.task == live
    assert play.restore(torch.rand(1, 32, 32)).restored.shape == (32, 32)


def test_local_folders_need_allow_local(tmp_path):
    with pytest.raises(InvalidArgumentError, match="local folders are read only when the app is started with --allow-local"):
        Playground().select(str(tmp_path))


def test_no_task_chosen():
    with pytest.raises(InvalidArgumentError, match="choose a task"):
        Playground().select("  ")
    with pytest.raises(InvalidArgumentError, match="choose a task first"):
        Playground().restore(torch.rand(1, 32, 32))


def test_compressive_sensing_measurement_is_not_an_image(play):
    with pytest.raises(InvalidArgumentError, match=r"a cs measurement is not an image \(block compressive sensing: m random or learned projections of every B x B block\): choose 'degrade' for this task"):
        play.restore(torch.rand(1, 32, 32), mode=MEASUREMENT)


def test_unknown_built_in_image():
    with pytest.raises(InvalidArgumentError, match="no built-in image 'lena'"):
        Playground().built_in("lena")


def test_noise_out_of_range(play):
    with pytest.raises(InvalidArgumentError, match="measurement noise must be between 0 and 0.5"):
        play.restore(torch.rand(1, 32, 32), noise_sigma=2.0)


def test_unknown_mode(play):
    with pytest.raises(InvalidArgumentError, match="mode must be 'degrade' or 'measurement'"):
        play.restore(torch.rand(1, 32, 32), mode="guess")


def test_image_too_small(play):
    with pytest.raises(InvalidArgumentError, match="the image is 8 x 8 pixels"):
        play.restore(torch.rand(1, 8, 8))
