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
from lorun_peft.training.loop import CHECKPOINT_NAME

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


def test_saved_files_and_folders_follow_the_umask(tmp_path):
    """Files 0644 and folders 0755 under umask 022 (not the 0600/0700 of temporary files)."""
    import stat

    from conftest import TinyDenoiser

    from lorun_peft import unfold
    from lorun_peft.persistence.atomic import atomic_write
    from lorun_peft.operators import BlockCS

    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "file.bin") as f:
            f.write(b"x")
        folder = unfold(TinyDenoiser(), BlockCS(0.25, block=8), K=2).save_adapters(tmp_path / "bundle")
        os.umask(0o027)
        with atomic_write(tmp_path / "private.bin") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "file.bin") == 0o644 and mode(tmp_path / "private.bin") == 0o640
    assert mode(folder) == 0o755
    assert {mode(p) for p in folder.rglob("*") if p.is_file()} == {0o644}
    assert {mode(p) for p in folder.rglob("*") if p.is_dir()} == {0o755}
