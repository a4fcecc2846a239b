"""Shared helpers for the benchmark scripts: timing medians, machine description, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def sync() -> None:
    """Wait for queued GPU work, so wall-clock times cover it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def interleaved_times(calls: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                      pause: float = 0.0) -> dict[str, list[float]]:
    """Milliseconds of each call per repeat, the calls taken in turn so background load hits all alike;
    ``pause`` seconds idle before each timed call, so that thread pools the previous call left
    spinning (onnxruntime's, OpenMP's) are asleep and take no core from the next."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            sync()
            time.sleep(pause)
            start = time.perf_counter()
            call()
            sync()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def median_ms(fn: Callable[[], Any], repeats: int = 30, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in milliseconds (synchronising CUDA if in use)."""
    return statistics.median(interleaved_times({"fn": fn}, repeats, warmup)["fn"])


def machine() -> dict[str, Any]:
    """CPU model, cores, threads used, torch version, and the GPU if any."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def save(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path
