"""Smoke test: the benchmark suite's measurements run end to end on one tiny configuration.
(The real runs are `python -m benchmarks.run --quick|--full`; timings never gate the tests.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
run = pytest.importorskip("benchmarks.run")


def test_summarise_pairs_each_repeat_with_the_reference_beside_it():
    times = {"block_9": [10.0, 20.0, 40.0], "other": [11.0, 22.0, 40.0]}  # load drifts; the ratio does not
    summary = run.summarise(times)
    assert summary["median_ms"] == {"block_9": 20.0, "other": 22.0}
    assert summary["ratio_to_block_9"]["other"] == pytest.approx({"p25": 1.0, "median": 1.1, "p75": 1.1})


def test_suite_measures_tiny_configuration(tmp_path):
    memory = run.memory(32)
    assert set(memory) == {"block_9", "lorun_9", "lorun_9_checkpoint", "block_9_checkpoint"}
    assert memory["lorun_9_checkpoint"] < memory["lorun_9"] < memory["block_9"]
    assert memory["lorun_9_checkpoint"] < memory["block_9_checkpoint"] < memory["block_9"]
    sweep = run.memory_sweep([32, 40])  # 40 is not a multiple of the 32 block
    assert list(sweep) == ["32", "40"] and sweep["32"]["block_9"] < sweep["40"]["block_9"]
    run.plot_memory_sweep(sweep, tmp_path / "memory.png")
    assert (tmp_path / "memory.png").stat().st_size > 0
    latency = run.summarise(run.latency(32, repeats=3))
    assert set(latency["median_ms"]) == {"block_9", "lorun_9_peft", "lorun_9_merged"}
    assert all(v > 0 for v in latency["median_ms"].values())
    ratios = latency["ratio_to_block_9"]
    assert ratios["block_9"] == {"p25": 1.0, "median": 1.0, "p75": 1.0}
    assert all(0 < r["p25"] <= r["median"] <= r["p75"] for r in ratios.values())
    steps = run.train_step_time(32, repeats=1)
    assert all(len(v) == 1 and v[0] > 0 for v in steps.values())
    switch = run.switch_cost()
    assert switch["layers"] == 50
    disk = run.disk_bytes()
    assert 0 < disk["lorun_9_bundle"] < disk["block_9_checkpoint"]
    params = run.parameters()
    assert params["unet"]["lorun_gamma10"] < params["unet"]["block_9"]
    result = {"parameters": params, "memory_bytes": memory, "latency": latency}
    run.plot(result, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 0


def test_startup_benchmark_runs(monkeypatch, tmp_path):
    startup = pytest.importorskip("benchmarks.startup")
    monkeypatch.setattr(startup, "save", lambda name, payload: tmp_path / f"{name}.json")
    result = startup.main(["--rounds", "1"])
    assert set(result) == {"import torch", "import lorun_peft", "lorun --help"}
    assert result["import torch"]["ratio_to_import_torch"] == 1.0


def test_compile_benchmark_measures_side_by_side(monkeypatch, tmp_path):
    """benchmarks/compile.py end to end on a tiny LoRun-9 with dynamo's eager backend (the real
    run uses the paper-size U-Net and inductor): one graph per workload, no graph break."""
    import torch
    from torch import nn

    import lorun_peft
    from lorun_peft.operators import BlockCS

    bench = pytest.importorskip("benchmarks.compile")

    def tiny(device):
        torch.manual_seed(0)
        denoiser = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
        return lorun_peft.unfold(denoiser, BlockCS(0.25, block=8), 2, adapter_options={"init_lora_weights": False}).to(device)

    monkeypatch.setattr(bench, "lorun_9", tiny)
    monkeypatch.setattr(bench, "save", lambda name, payload: tmp_path / f"{name}.json")
    torch._dynamo.reset()
    result = bench.main(["--quick", "--sizes", "16", "16", "--repeats", "1", "--backend", "eager", "--device", "cpu", "--warm-cache"])
    torch._dynamo.reset()
    for workload in ("eval", "train"):
        row = result[workload]
        assert row["graphs"] == 1 and row["graph_breaks"] == 0
        assert row["median_ms"]["eager"] > 0 and row["median_ms"]["compiled"] > 0 and row["compile_s"] > 0
        assert row["compiled_over_eager"]["p25"] <= row["compiled_over_eager"]["p75"]
    assert result["train"]["max_relative_grad_difference"] < 1e-4


def test_gpu_script_commands_are_valid(tmp_path):
    """benchmarks/gpu.sh --dry-run: the three steps, each option known to its tool, nothing run."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "benchmarks/gpu.sh", "--device", "cpu", "--dry-run", "--out", str(tmp_path / "gpu")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    steps = [line for line in done.stdout.splitlines() if line.startswith("== ")]
    assert [line.split(":")[0] for line in steps] == ["== run_quick", "== compile", "== train_bf16"]
    assert "--backend inductor" in steps[1] and "--precision bf16" in steps[2] and "--device cpu" in steps[2]
    assert not (tmp_path / "gpu").exists()


def test_families_simple_alternatives_are_right():
    """benchmarks.families' yardsticks: Wiener with a tiny noise-to-signal ratio undoes a noiseless
    blur, and biharmonic inpainting beats the zero-filled measurement by far."""
    import torch

    from benchmarks.families import biharmonic, wiener
    from lorun_peft.metrics import psnr
    from lorun_peft.operators import Blur, Inpainting
    from lorun_peft.operators.kernels import gaussian_kernel

    pytest.importorskip("skimage")
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    x = (0.5 + 0.25 * torch.sin(6 * xx) * torch.cos(4 * yy))[None, None]
    blur = Blur(gaussian_kernel(7, 1.0))
    assert float(psnr(wiener(blur, blur.A(x), 1e-8).clamp(0, 1), x)) > 60
    holes = Inpainting(missing=0.5, seed=1)
    y = holes.A(x)
    assert float(psnr(biharmonic(holes, y), x)) > float(psnr(y, x)) + 20
