"""The zoo's training script on a smoke setting: `python -m benchmarks.zoo all` (the base and the CS
bundles under a time budget, into one zoo folder) and a task stopped by --minutes that resumes.
On generated images (tests never need the shared data); the real runs are in benchmarks/RESULTS.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
zoo_script = pytest.importorskip("benchmarks.zoo")

import lorun_peft  # noqa: E402


@pytest.fixture(scope="module")
def data(stand_in_data) -> Path:
    return stand_in_data


def test_all_trains_base_and_bundles_into_one_zoo_folder(tmp_path, data, capsys):
    work = tmp_path / "work"
    zoo_script.main(["all", "--data", str(data), "--work", str(work), "--device", "cpu", "--minutes", "0.2",
                     "--max-steps", "1", "--ratios", "0.25"])
    out = capsys.readouterr().out
    assert "ms per base step" in out and "each CS bundle 1" in out
    root = work / "zoo"
    assert lorun_peft.zoo.list(root) == ["cs-0.25"]
    lorun_peft.zoo.verify(None, root)  # every file's checksum
    net = lorun_peft.zoo.load("cs-0.25", root)
    phi = net.operator.phi.detach()
    torch.testing.assert_close(phi @ phi.T, torch.eye(256), atol=2e-2, rtol=0)  # PCA rows, stored in float16
    config = json.loads((root / "cs-0.25" / "lorun_config.json").read_text())
    assert config["metrics"]["sampling"].startswith("PCA of Train400's blocks, rows 1-256")
    summary = json.loads((work / "train_all.json").read_text())
    assert summary["base_steps"] == 1 and summary["tasks"]["cs-0.25"]["steps"] == 1


def test_a_task_stopped_by_its_time_limit_resumes(tmp_path, data, capsys):
    work = tmp_path / "work"
    first = zoo_script.train_cs(0.25, data, work, steps=10**6, time_limit=1.0, patch_size=64)
    assert 0 < first["steps"] < 10**6 and not (work / "cs-0.25" / "bundle").exists()
    assert "run again to continue" in capsys.readouterr().out
    assert first["recipe"]["patch_size"] == 64
    with pytest.raises(SystemExit, match="was started with the recipe .*'patch_size': 64.*choose another --work"):
        zoo_script.train_cs(0.25, data, work, steps=first["steps"] + 1)  # the recipe's 96 x 96
    done = zoo_script.train_cs(0.25, data, work, steps=first["steps"] + 1, patch_size=64)
    assert done["steps"] == first["steps"] + 1 and (work / "cs-0.25" / "bundle").is_dir()
    assert done["cpu_seconds"] > first["cpu_seconds"]


def test_the_base_goes_on_only_with_the_recipe_it_started_with(tmp_path, data):
    work = tmp_path / "work"
    first = zoo_script.train_base(data, work, steps=10**6, time_limit=0.5, patch_size=32)
    assert first["steps"] < 10**6 and json.loads((work / "base" / "recipe.json").read_text())["patch_size"] == 32
    with pytest.raises(SystemExit, match="was started with the recipe .*'patch_size': 32.*choose another --work"):
        zoo_script.train_base(data, work, steps=10**6, time_limit=0.5)  # the recipe's 64 x 64


def test_goals_table_reads_the_bundles_metrics(tmp_path):
    for name, metrics in {"cs-0.10": {"set11_psnr": 28.7, "set11_linear_mmse_psnr": 26.97, "set11_random_linear_psnr": 23.5},
                          "cs-0.25": {"set11_psnr": 31.9, "set11_linear_mmse_psnr": 31.27}}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "lorun_config.json").write_text(json.dumps({"metrics": metrics}))
    table = zoo_script.goals(tmp_path)
    assert "| cs-0.10 | set11 | 23.5 | 26.97 | **28.7** | +1.73 | +1.0 | yes |" in table
    assert "| cs-0.25 | set11 |  | 31.27 | **31.9** | +0.63 | +1.0 | no, 0.37 dB short |" in table
    assert "| 0.10 | 29.29 | **28.7** | -0.59 |" in table and "| 0.25 | 34.75 | **31.9** | -2.85 |" in table


def test_the_sr_bundles_are_scored_on_gray_bsd68_as_in_the_papers_table_v(tmp_path):
    from PIL import Image

    (tmp_path / "bsd68").mkdir()
    Image.new("RGB", (37, 30), (200, 40, 10)).save(tmp_path / "bsd68" / "test001.png")
    (image,), names = zoo_script.test_images(tmp_path, "bsd68", 4)
    assert names == ["test001.png"] and image.shape == (1, 28, 36)  # gray (not luma), cropped to the scale
    assert "bsd68" in zoo_script.TEST_SETS["sr"]
    assert zoo_script.paper_figure("sr-x4-k0").startswith("U-Net LoRun-9 on gray BSD68, kernel K1 = kernel_bank()[0]: 24.74 dB")
    assert zoo_script.paper_figure("sr-x2-k4").startswith("none comparable: kernel_bank()[4] is not the paper's K5")
    assert zoo_script.paper_figure("cs-0.50") is None  # the paper's tables stop at 25 %


def test_the_zoo_card_puts_the_papers_figures_beside_ours(tmp_path):
    for name, metrics in {"cs-0.25": {"set11_psnr": 33.37, "set11_linear_mmse_psnr": 31.27},
                          "sr-x4-k0": {"set5_psnr": 29.3, "bsd68_cubic_psnr": 24.52, "bsd68_psnr": 24.95, "bsd68_ssim": 0.69}}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "lorun_config.json").write_text(json.dumps({"metrics": metrics}))
    zoo_script.write_zoo_card(tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "| cs-0.25 |  | 31.27 | **33.37** / " in card and "/  | 34.75 |" in card  # paper Set11 (Table II)
    assert "| 24.52 | **24.95** / 0.69 | 24.74 |" in card  # gray BSD68 beside the paper's Table V (K1)


def test_the_zoo_card_names_the_sr_family_base_where_the_zoo_has_one(tmp_path):
    from lorun_peft.persistence.schema import BASE_CONFIG_NAME

    (tmp_path / "sr-x4-k0").mkdir()
    (tmp_path / "sr-x4-k0" / "lorun_config.json").write_text(json.dumps({"metrics": {"set5_psnr": 29.3}}))
    zoo_script.write_zoo_card(tmp_path)
    assert "One shared base denoiser (`base/`" in (tmp_path / "README.md").read_text()
    (tmp_path / "base-sr").mkdir()
    (tmp_path / "base-sr" / BASE_CONFIG_NAME).write_text("{}")
    zoo_script.write_zoo_card(tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "Two base denoisers: `base/`" in card and "`base-sr/` (that base then trained on as Block-1 under the four SR" in card
    assert "the CS bundles over `base/`, the SR bundles over `base-sr/`." in card
