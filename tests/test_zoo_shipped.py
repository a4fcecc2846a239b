"""The zoo shipped in the package: its files load (never retrained here), restore better than the
linear estimate they start from, without a visible block grid, within the size budget, and from
the command line as ``--model zoo:NAME``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lorun_peft import zoo
from lorun_peft.cli import parser as cli
from lorun_peft.data.images import photographs
from lorun_peft.errors import IncompatibleBundleError
from lorun_peft.persistence.fingerprint import fingerprint
from lorun_peft.metrics import psnr
from lorun_peft.training.loop import fit_operator

CS_NAMES = ["cs-0.01", "cs-0.04", "cs-0.10", "cs-0.25", "cs-0.50"]
SR_NAMES = ["sr-x2-k0", "sr-x2-k4", "sr-x4-k0", "sr-x4-k4"]
NEW_NAMES = ["deblur-gauss", "deblur-motion", "inpaint-50", "inpaint-80"]  # benchmarks.families (issue #32): deblurring and inpainting
NAMES = CS_NAMES + NEW_NAMES + SR_NAMES


@pytest.fixture(scope="module")
def camera() -> torch.Tensor:
    return photographs(["camera"], size=128)[0][None]


def test_the_zoo_lists_every_cs_ratio_and_sr_setting() -> None:
    assert zoo.list() == sorted(NAMES)


def test_the_zoo_fits_its_size_budget() -> None:
    total = sum(p.stat().st_size for p in zoo.ROOT.rglob("*") if p.is_file())
    assert total <= 20 * 2**20, f"{total / 2**20:.1f} MiB"  # issue #32's budget


@pytest.mark.parametrize("name", NAMES)
def test_every_bundle_verifies_and_is_stored_in_float16(name) -> None:
    zoo.verify(name)
    config = (zoo.bundle_path(name) / "lorun_config.json").read_text()
    assert '"storage_dtype": "float16"' in config


def block_grid_strength(x: torch.Tensor, block: int = 32) -> float:
    """Mean horizontal and vertical step across block borders over the mean step elsewhere."""
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(0, 1, 2))
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(0, 1, 3))
    border = lambda d: (d[block - 1 :: block].mean() / d[[i for i in range(len(d)) if i % block != block - 1]].mean())  # noqa: E731
    return float((border(dx) + border(dy)) / 2)


def test_a_bundle_restores_a_photograph_without_a_block_grid(camera) -> None:
    net = zoo.load("cs-0.25")
    with torch.no_grad(), fit_operator(net.operator, camera.shape[-2:]):
        y = net.operator.A(camera)
        linear, restored = net.operator.initial_estimate(y).clamp(0, 1), net(y).clamp(0, 1)
    assert float(psnr(restored, camera)) > float(psnr(linear, camera)) + 1.0
    truth = block_grid_strength(camera)
    # the linear estimate shows the block grid (PCA rows at 0.25: 1.24 x the truth's; random rows showed more) ...
    assert block_grid_strength(restored) < block_grid_strength(linear)
    assert block_grid_strength(restored) < 1.2 * truth  # ... the restoration hardly does


def test_one_live_network_swaps_every_cs_bundle(camera) -> None:
    net = zoo.load(CS_NAMES[0])
    scores = []
    for name in CS_NAMES:
        net.load_adapters(zoo.bundle_path(name))
        assert net.operator.ratio == float(name.removeprefix("cs-"))
        with torch.no_grad(), fit_operator(net.operator, camera.shape[-2:]):
            scores.append(float(psnr(net(net.operator.A(camera)).clamp(0, 1), camera)))
    assert scores == sorted(scores)  # more measurements, better restorations


def test_cli_restores_with_a_zoo_model(tmp_path, camera, capsys) -> None:
    photo = tmp_path / "camera.png"
    Image.fromarray((camera[0, 0].numpy() * 255).round().astype(np.uint8)).save(photo)
    out = tmp_path / "restored.png"
    assert cli.main(["restore", "--model", "zoo:cs-0.25", str(photo), str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and Image.open(out).size == (128, 128)
    value, initial = (float(v) for v in (printed.split("PSNR ")[1].split(" dB")[0], printed.split("initial estimate ")[1].split(" dB")[0]))
    assert value > initial + 1.0


def test_cli_evaluates_and_inspects_a_zoo_model(tmp_path, camera, capsys) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray((camera[0, 0].numpy() * 255).round().astype(np.uint8)).save(folder / "camera.png")
    assert cli.main(["eval", "--model", "zoo:cs-0.10", "--data", str(folder)]) == 0
    assert "camera.png" in capsys.readouterr().out
    assert cli.main(["inspect", "--model", "zoo:cs-0.10"]) == 0
    assert "Block-9 equivalent" in capsys.readouterr().out


def test_cli_names_an_unknown_zoo_model(capsys) -> None:
    assert cli.main(["eval", "--model", "zoo:cs-0.33"]) == 2
    assert "the zoo has no bundle 'cs-0.33'" in capsys.readouterr().err


def test_cli_plots_a_zoo_model_into_its_own_folder(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["plot", "--model", "zoo:cs-0.50"]) == 0
    assert (tmp_path / "zoo-cs-0.50" / "stage_psnr.png").is_file()


def test_one_base_serves_every_bundle_and_each_family_swaps_in_one_live_network() -> None:
    """The CS, SR and deblurring bundles all load over base/ (trained on block CS: the paper's phase
    1), inpainting over base-inpaint/ (the Gaussian denoiser base/ started from); a bundle of another
    family is refused by the live network (PGD into HQS), not by its base."""
    assert {zoo.base_name(n) for n in CS_NAMES + SR_NAMES + ["deblur-gauss", "deblur-motion"]} == {"base"}
    assert [p.name for p in zoo.ROOT.iterdir() if p.name.startswith("base-")] == ["base-inpaint"]
    assert {zoo.base_name(n) for n in ("inpaint-50", "inpaint-80")} == {"base-inpaint"}
    for names in (CS_NAMES, SR_NAMES):
        live = zoo.load(names[-1])
        for name in names:
            live.load_adapters(zoo.bundle_path(name))
        assert live.base_fingerprint() == fingerprint(zoo.load_base())
    with pytest.raises(IncompatibleBundleError, match="does not fit this network"):  # (PGD into HQS, before the base)
        live.load_adapters(zoo.bundle_path(CS_NAMES[0]))


@pytest.mark.parametrize("name", SR_NAMES)
def test_sr_bundles_share_the_base_and_beat_cubic_interpolation(name, camera) -> None:
    net = zoo.load(name)
    assert net.base_fingerprint() == fingerprint(zoo.load_base())  # the one shared base
    x = camera[..., : 128 - 128 % net.operator.scale, : 128 - 128 % net.operator.scale]
    with torch.no_grad():
        y = net.operator.A(x)
        cubic, restored = net.operator.initial_estimate(y).clamp(0, 1), net(y).clamp(0, 1)
    assert float(psnr(restored, x)) > float(psnr(cubic, x)) + 0.3


def test_every_cs_bundle_measures_with_rows_of_one_data_fitted_basis() -> None:
    """Nested PCA sampling: each bundle's matrix is the first m rows of the largest one's, with
    orthonormal rows, and its card names the basis (one fingerprint for all) and its own matrix."""
    operators = {name: zoo.load(name).operator for name in CS_NAMES}
    largest = operators[CS_NAMES[-1]].phi.detach()
    bases = set()
    for name, op in operators.items():
        phi = op.phi.detach()
        torch.testing.assert_close(phi, largest[: op.measurements])
        torch.testing.assert_close(phi @ phi.T, torch.eye(op.measurements), atol=5e-3, rtol=0)  # float16 storage
        sampling = (zoo.bundle_path(name) / "README.md").read_text().split("| sampling | ")[1].split(" |")[0]
        assert f"rows 1-{op.measurements} of basis sha256:" in sampling and op.sampling_fingerprint in sampling
        bases.add(sampling.split("of basis ")[1].split(";")[0])
    assert len(bases) == 1


def test_pca_sampling_beats_the_random_matrix_the_zoo_used_before(camera) -> None:
    """The shipped linear estimate (PCA rows, x0 = Phi^T y) against random orthonormal rows with a
    least-squares Q fitted on other photographs, on the camera: the data-fitted matrix wins."""
    from lorun_peft.operators import BlockCS

    net = zoo.load("cs-0.10")
    fitted = BlockCS(0.1, init="orthogonal", learnable=False, linear_estimate=True, seed=100)
    fitted.fit_initial_estimate(photographs(["astronaut", "coffee", "chelsea", "brick", "gravel", "clock"]), blocks=4000)
    scores = []
    for op in (net.operator, fitted):
        with torch.no_grad(), fit_operator(op, camera.shape[-2:]):
            scores.append(float(psnr(op.initial_estimate(op.A(camera)).clamp(0, 1), camera)))
    assert scores[0] > scores[1] + 1.0, scores


@pytest.mark.parametrize("name", NEW_NAMES)
def test_the_deblurring_and_inpainting_bundles_beat_their_start(name, camera) -> None:
    net = zoo.load(name)
    with torch.no_grad(), fit_operator(net.operator, camera.shape[-2:]):
        y = net.operator.A(camera)
        start, restored = net.operator.initial_estimate(y).clamp(0, 1), net(y).clamp(0, 1)
    assert float(psnr(restored, camera)) > float(psnr(start, camera)) + 1.0
