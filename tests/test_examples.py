"""Smoke tests of the runnable scripts in examples/: each runs end to end with tiny settings
(2 training steps, K=2) and writes what it says it writes."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

import lorun_peft

torch.set_num_threads(1)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TINY = ["--steps", "2", "--K", "2"]


def load_example(name: str) -> ModuleType:
    """Import examples/<name>.py as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cs_quickstart(tmp_path, capsys):
    out = tmp_path / "cs"
    results = load_example("cs_quickstart").main([*TINY, "--out", str(out)])
    assert all(math.isfinite(v) for v in results.values())
    printed = capsys.readouterr().out
    assert "LoRun-2" in printed and "Block-2 equivalent" in printed
    net = lorun_peft.load(out / "base", out / "cs-0.25")  # the saved base and bundle load back
    assert net.adapter_names == ["stage_0", "stage_1"] and net.operator.ratio == 0.25


def test_sr_kernels(tmp_path, capsys):
    out = tmp_path / "sr"
    results = load_example("sr_kernels").main([*TINY, "--out", str(out)])
    assert set(results) == {(k, s) for k in ("isotropic", "anisotropic", "motion") for s in (2, 4)}
    assert all(math.isfinite(v) for v in results.values())
    assert (out / "base" / "base_config.json").is_file()
    assert sorted(info.name for info in lorun_peft.list_bundles(out)) == sorted(
        f"sr-x{s}-{k}" for k, s in results
    )
    assert "motion" in capsys.readouterr().out


def test_cassi_hqs(tmp_path, capsys):
    out = tmp_path / "cassi"
    per_band = load_example("cassi_hqs").main([*TINY, "--bands", "6", "--size", "16", "--out", str(out)])
    assert len(per_band) == 6 and all(math.isfinite(v) for v in per_band)
    assert (out / "cassi" / "lorun_config.json").is_file()
    assert "PSNR per band" in capsys.readouterr().out


def test_cassi_hqs_mask_file(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    mask_file = tmp_path / "mask.mat"
    scipy_io.savemat(mask_file, {"mask": torch.rand(24, 24).numpy()})  # centre-cropped to --size
    per_band = load_example("cassi_hqs").main(
        [*TINY, "--bands", "4", "--size", "16", "--mask", str(mask_file), "--out", str(tmp_path / "out")]
    )
    assert len(per_band) == 4


def test_plug_deepinv(capsys):
    pytest.importorskip("deepinv")
    results = load_example("plug_deepinv").main(TINY)
    assert all(math.isfinite(v) for v in results.values())
    assert "Downsampling + DnCNN" in capsys.readouterr().out


def test_plug_deepinv_without_deepinv_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepinv", None)  # makes `import deepinv` raise ImportError
    with pytest.raises(SystemExit, match="pip install deepinv"):
        load_example("plug_deepinv").main(TINY)


def test_swap_cs_ratios(tmp_path, capsys):
    load_example("swap_cs_ratios").main(["--save", str(tmp_path)])
    out = capsys.readouterr().out
    assert "one live LoRun-9 network from the zoo" in out
    names = [n for n in lorun_peft.zoo.list() if n.startswith("cs-")]
    assert sorted(p.stem for p in tmp_path.glob("*.png")) == names
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("cs-")]
    assert [r[0] for r in rows] == names
    assert "x0 dB" in out and "linear" not in out  # x0 is A^T y for the zoo's PCA rows: one column, not two equal ones
    for row in rows:  # the network beats the estimate it starts from at every ratio
        assert float(row[3]) > float(row[2])