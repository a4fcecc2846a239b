"""Fault injection: processes SIGKILLed at random moments while writing never leave a partial file
set under the target name (forked children, so each try costs milliseconds, not an import)."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import MatrixOperator, TinyDenoiser

import lorun_peft
from lorun_peft.train import CHECKPOINT_NAME

TRIES = 30
fork = pytest.mark.skipif(sys.platform != "linux", reason="needs fork and SIGKILL")


def identity(path: Path) -> tuple[int, int] | None:
    """(inode, mtime) of a path, None if absent: changes whenever a new file is renamed in."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def kill_at_random(target, args, watched: Path, seed: int, max_delay: float = 0.15) -> None:
    """Run target(*args) in a forked child; once it has replaced `watched` at least once,
    SIGKILL it after a random delay (so the kill lands anywhere in the write cycle)."""
    rng = random.Random(seed)
    before = identity(watched)
    child = multiprocessing.get_context("fork").Process(target=target, args=args)
    child.start()
    deadline = time.monotonic() + 30
    while identity(watched) == before and time.monotonic() < deadline and child.is_alive():
        time.sleep(0.002)
    time.sleep(rng.uniform(0, max_delay))
    os.kill(child.pid, signal.SIGKILL)
    child.join()


def train_forever(folder: Path) -> None:
    torch.manual_seed(0)
    net = lorun_peft.unfold(TinyDenoiser(), MatrixOperator(), K=2)
    data = torch.rand(8, 1, 8, 8)
    lorun_peft.train(net, data, steps=10**6, batch_size=2, checkpoint_dir=folder, checkpoint_every=1, progress=False)


@fork
def test_checkpoint_survives_sigkill(tmp_path):
    keys = None
    last_step = 0
    for attempt in range(TRIES):
        kill_at_random(train_forever, (tmp_path,), tmp_path / CHECKPOINT_NAME, seed=attempt)
        state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)  # complete, or this raises
        keys = keys or set(state)
        assert set(state) == keys
        assert state["step"] >= last_step  # resumed runs go on from the last checkpoint
        last_step = state["step"]
    assert last_step > TRIES  # training really went on across the kills
