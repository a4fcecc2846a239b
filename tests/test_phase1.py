"""The zoo's phase 1 (benchmarks/phase1.py, issue #24): Block-1 networks at several CS ratios over
ONE base, batches going round the ratios, resumable in timed pieces, validated with the shipped
steps, the result saved in float16 and carried on with --init. On generated images (tests never
need the shared data); the real curves are in benchmarks/RESULTS.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
phase1 = pytest.importorskip("benchmarks.phase1")


@pytest.fixture(scope="module")
def data(stand_in_data) -> Path:
    return stand_in_data


def test_every_ratio_trains_the_one_base_in_turn():
    mixture = phase1.TaskMixture(phase1.start_base(None), ("cs-0.10", "cs-0.25"))
    assert all(net.denoisers.denoiser is mixture.base for net in mixture.nets)
    x = torch.rand(2, 1, 64, 64)
    rows = [mixture.operator.A(x).shape[1] for _ in range(3)]
    assert rows == [102, 256, 102] and int(mixture.state_dict()["operator.calls"]) == 3  # resumes in order
    assert mixture(mixture.operator.A(x)).shape == x.shape  # restored by the network that measured it
    loss = sum(mixture(mixture.operator.A(x)).square().mean() for _ in range(2))
    loss.backward()
    assert all(p.grad is not None for p in mixture.base.parameters())  # both ratios reach the base
    assert all(not p.requires_grad for net in mixture.nets for p in net.operator.parameters())  # the matrix is fixed
    steps = [p for net in mixture.nets for p in net.steps.parameters()]
    assert steps and all(p.grad is not None for p in steps)  # each ratio's own step parameters train


def test_a_run_in_pieces_resumes_then_saves_and_goes_on(tmp_path, data):
    work = tmp_path / "work"
    first = phase1.run("fixed-0.50", data, work, minutes=0.01, chunk_minutes=0.01, steps=3)
    assert first["curve"][0][0] == 0 and set(first["curve"][0][1]) == {"0.01", "0.04", "0.10", "0.25", "0.50"}
    stopped = first["curve"][-1][0]
    assert 0 < stopped <= 3
    with pytest.raises(SystemExit, match="was started with the recipe .*'batch_size': 4.*choose another --work"):
        phase1.run("fixed-0.50", data, work, minutes=5, chunk_minutes=5, steps=stopped + 1, batch_size=2)
    done = phase1.run("fixed-0.50", data, work, minutes=5, chunk_minutes=5, steps=stopped + 1)
    assert done["curve"][-1][0] == stopped + 1 and json.loads((work / "fixed-0.50" / "curve.json").read_text()) == done
    saved = phase1.save("fixed-0.50", work, tmp_path / "base.safetensors")
    weights = load_file(str(saved))
    assert all(v.dtype == torch.float16 for v in weights.values())
    assert set(weights) == set(phase1.start_base(None).state_dict())
    base = phase1.start_base(saved)
    for name, value in weights.items():
        assert torch.equal(base.state_dict()[name], value.float())
    again = phase1.run("mixed", data, tmp_path / "next", minutes=0.01, chunk_minutes=0.01, steps=2, init=saved)
    assert again["init"] == str(saved)
    for ratio, value in again["curve"][0][1].items():  # it starts where the saved run stopped (float16 apart)
        assert abs(value - done["curve"][-1][1][ratio]) < 0.05


def test_the_sr_arm_trains_one_base_under_every_sr_bundle_in_turn(tmp_path, data):
    mixture = phase1.TaskMixture(phase1.start_base(None), ("sr-x2-k0", "sr-x4-k0"))
    assert [net.algorithm for net in mixture.nets] == ["hqs", "hqs"]
    x = torch.rand(2, 1, 64, 64)
    assert [mixture.operator.A(x).shape[-1] for _ in range(2)] == [32, 16]
    mixture(mixture.operator.A(x)).square().mean().backward()  # x2's turn
    assert all(p.grad is not None for p in mixture.base.parameters())
    assert mixture.nets[1].steps.mu.raw.grad is None and mixture.nets[0].steps.mu.raw.grad is not None
    record = phase1.run("sr", data, tmp_path / "work", minutes=5, chunk_minutes=5, steps=2, batch_size=2, patch_size=48)
    assert [step for step, _ in record["curve"]] == [0, 2] and record["tasks"] == list(phase1.ARMS["sr"])
    assert (record["recipe"]["batch_size"], record["recipe"]["patch_size"]) == (2, 48)
    assert set(record["curve"][-1][1]) == {"sr-x2-k0", "sr-x2-k4", "sr-x4-k0", "sr-x4-k4"}
    table = phase1.curves(tmp_path / "work", tmp_path / "sr.png")
    assert table.splitlines()[0] == "| arm | step | sr-x2-k0 | sr-x2-k4 | sr-x4-k0 | sr-x4-k4 | mean |"
    assert len(table.splitlines()) == 4 and (tmp_path / "sr.png").stat().st_size > 0
