"""Multi-device training under `accelerate launch`: 2 CPU processes (gloo DDP) train like one
process with twice the batch, with no change to the training code."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import MatrixOperator, TinyDenoiser

import lorun_peft
from lorun_peft.training.recipe import PAPER, train_two_phase
from lorun_peft.training.loop import CHECKPOINT_NAME, launched_by_accelerate

pytest.importorskip("accelerate")

TESTS = Path(__file__).resolve().parent

SCRIPT = """
import json, sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from test_accelerate import run_two_phase
state, losses = run_two_phase(batch_size={batch}, checkpoint_dir={out!r} + "/ck")
if torch.distributed.get_rank() == 0:
    torch.save(state, {out!r} + "/state.pt")
    with open({out!r} + "/losses.json", "w") as f:
        json.dump(losses, f)
"""


def run_two_phase(batch_size: int, checkpoint_dir: str | None = None, accelerator=None):
    """Block-1 then LoRun on a tiny network; the same call in one process and under accelerate."""
    torch.manual_seed(0)
    net = lorun_peft.unfold(TinyDenoiser(), MatrixOperator(), K=2, share="base")
    g = torch.Generator().manual_seed(1)
    images = torch.nn.functional.avg_pool2d(torch.rand(16, 1, 10, 10, generator=g), 3, 1)
    result = train_two_phase(net, images, steps=3, batch_size=batch_size, noise_sigma=0.01, progress=False, phases=PAPER,
                             checkpoint_dir=checkpoint_dir, checkpoint_every=1, accelerator=accelerator)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    return state, result.backbone.losses + result.adapters.losses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_with_double_batch(tmp_path):
    (tmp_path / "run.py").write_text(SCRIPT.format(tests=str(TESTS), batch=2, out=str(tmp_path)))
    launcher = Path(sys.executable).with_name("accelerate")
    command = [str(launcher), "launch"] if launcher.exists() else [sys.executable, "-m", "accelerate.commands.launch"]
    command += ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                "--dynamo_backend", "no", "--main_process_port", str(free_port()), str(tmp_path / "run.py")]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    distributed = torch.load(tmp_path / "state.pt", weights_only=True)
    losses = json.loads((tmp_path / "losses.json").read_text())
    single, single_losses = run_two_phase(batch_size=4, accelerator=False)
    assert distributed.keys() == single.keys()
    for name, value in single.items():
        assert torch.allclose(distributed[name], value, atol=1e-5, rtol=1e-4), name
    assert losses == pytest.approx(single_losses, rel=1e-4)
    checkpoint = torch.load(tmp_path / "ck" / "adapters" / CHECKPOINT_NAME, weights_only=True)
    assert checkpoint["step"] == 3 and checkpoint["processes"] == 2


def test_launch_detection(monkeypatch):
    for name in ("ACCELERATE_MIXED_PRECISION", "ACCELERATE_USE_CPU", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert not launched_by_accelerate()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launched_by_accelerate()
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert launched_by_accelerate()


def test_single_process_accelerator_matches_plain_loop():
    from accelerate import Accelerator

    plain, plain_losses = run_two_phase(batch_size=2, accelerator=False)
    accelerated, losses = run_two_phase(batch_size=2, accelerator=Accelerator(cpu=True))
    assert losses == pytest.approx(plain_losses, rel=1e-6)
    assert all(torch.allclose(plain[k], accelerated[k], atol=1e-6) for k in plain)


def test_bf16_mixed_precision_on_cpu():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # the state is a per-process singleton
    try:
        state, losses = run_two_phase(batch_size=2, accelerator=Accelerator(cpu=True, mixed_precision="bf16"))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert all(torch.isfinite(torch.tensor(losses))) and len(losses) == 6
    assert all(v.dtype != torch.bfloat16 for v in state.values())  # weights stay float32, autocast computes in bf16
