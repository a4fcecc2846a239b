"""The default inference path against the fastest runtimes on the same weights (issue #34 item 1),
side by side in one process: per task, image size and thread count,

- "default": ``net(y)`` as ``lorun restore``, ``lorun eval``, the app and Python callers run it
  (eval mode, gradients off: ``adapters.sharing.InferenceStages``, the stages' denoisers on
  onnxruntime, prepared at the first call into a fresh cache, the data steps in PyTorch);
- "PyTorch channels-last": the same prepared stages in PyTorch (``LORUN_ENGINE=eager``, and the
  path where onnxruntime is missing);
- "merged on the fly": the path before issue #34 (``net.inference = "merged"``: W0 + delta_k
  computed at each call, contiguous layout);
- "onnxruntime (whole file)": the file ``lorun export`` writes for that size, on onnxruntime;
- "torch.compile": the merged network (``merge_and_unload``) compiled by inductor.

    python -m benchmarks.engine                       # benchmarks/results/engine.json, the table printed
    python -m benchmarks.engine --sizes 256 --quick   # a smoke run: 2 repeats, no torch.compile

Outputs are checked against eager PyTorch (max abs difference, goal <= 1e-4).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

import lorun_peft.zoo
from lorun_peft.export import OnnxNetwork, to_onnx
from lorun_peft.operators.base import fit_operator

from .common import interleaved_times, machine, save

TASKS = ("cs-0.25", "sr-x4-k0")
PAUSE = 0.5  # s idle before each timed call: a pool the previous engine left spinning would slow the next


def measurement(net: Any, size: int) -> torch.Tensor:
    """y of a smooth-plus-texture image of ``size`` x ``size`` (a stand-in photograph)."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.nn.functional.interpolate(torch.rand(1, 1, size // 16, size // 16, generator=g), size=(size, size), mode="bilinear")
    x = (0.8 * coarse + 0.2 * torch.rand(1, 1, size, size, generator=g)).clamp(0, 1)
    with torch.no_grad(), fit_operator(net.operator, (size, size)):
        return net.operator.A(x)


def run(sizes: list[int], threads: list[int], repeats: int, quick: bool, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": machine(), "repeats": repeats, "rows": []}
    for task in TASKS:
        for size in sizes:
            net = lorun_peft.zoo.load(task).eval()
            before, eager = copy.deepcopy(net), copy.deepcopy(net)
            before.inference = "merged"
            eager._fast.engine = "eager"
            y = measurement(net, size)
            prep: dict[str, float] = {}
            start = time.perf_counter()
            path = to_onnx(net, work / f"{task}-{size}.onnx", image_size=(size, size), source=task).path
            prep["onnxruntime (whole file)"] = time.perf_counter() - start
            with torch.no_grad(), fit_operator(net.operator, (size, size)):
                reference = before(y)
                start = time.perf_counter()
                default = net(y)  # the first call prepares the engine (a fresh cache: LORUN_CACHE below)
                prep["default"] = time.perf_counter() - start
                calls: dict[str, Callable[[], Any]] = {"default": lambda: net(y), "PyTorch channels-last": lambda: eager(y),
                                                       "merged on the fly": lambda: before(y)}
                if not quick:
                    start = time.perf_counter()
                    compiled = torch.compile(net.merge_and_unload().eval())
                    compiled(y)
                    prep["torch.compile"] = time.perf_counter() - start
                    calls["torch.compile"] = lambda: compiled(y)
                diff = {"default": float((default - reference).abs().max())}
                for count in threads:
                    torch.set_num_threads(count)
                    runtime = OnnxNetwork(path, count)
                    calls["onnxruntime (whole file)"] = lambda: runtime(y)
                    diff["onnxruntime (whole file)"] = float((runtime(y) - reference).abs().max())
                    # a smaller image repeats more, so that each cell's median rests on a like time
                    # (one call varies by 5-10 %, more at times, on this VM)
                    times = interleaved_times(calls, repeats * max(1, max(sizes) // size), warmup=1, pause=PAUSE)
                    ms = {name: statistics.median(t) for name, t in times.items()}
                    row = {"task": task, "size": size, "threads": count, "ms": ms, "prep_s": prep, "max_abs_diff": diff}
                    out["rows"].append(row)
                    print(row, flush=True)
    return out


def markdown(result: dict[str, Any]) -> str:
    names = ["default", "PyTorch channels-last", "merged on the fly", "onnxruntime (whole file)", "torch.compile"]
    lines = ["| task | size | threads | " + " | ".join(f"{n} ms" for n in names) + " | default / fastest other |",
             "|---|---|---|" + "---|" * (len(names) + 1)]
    for row in result["rows"]:
        ms = row["ms"]
        fastest = min(ms[n] for n in names[1:] if n in ms)
        cells = [f"{ms[n]:.0f}" if n in ms else "-" for n in names]
        lines.append(f"| {row['task']} | {row['size']} | {row['threads']} | " + " | ".join(cells) + f" | {ms['default'] / fastest:.2f}x |")
    prep = {(r["task"], r["size"]): r["prep_s"] for r in result["rows"]}
    lines += ["", "One-time preparation (s): " + "; ".join(
        f"{t} {s}: " + ", ".join(f"{n} {v:.1f}" for n, v in p.items()) for (t, s), p in prep.items())]
    worst = max(max(r["max_abs_diff"].values()) for r in result["rows"])
    lines += [f"Largest difference from eager PyTorch: {worst:.1e}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}))
    parser.add_argument("--repeats", type=int, default=3, help="at the largest size; a size n times smaller: n times as many")
    parser.add_argument("--quick", action="store_true", help="2 repeats, no torch.compile (a smoke run)")
    parser.add_argument("--out", default="engine", help="results/NAME.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        os.environ["LORUN_CACHE"], os.environ["LORUN_ENGINE"] = str(Path(work) / "cache"), "auto"  # a cold engine cache
        result = run(args.sizes, args.threads, 2 if args.quick else args.repeats, args.quick, Path(work))
    result["table"] = markdown(result)
    print(result["table"])
    print(save(args.out, result))


if __name__ == "__main__":
    main()
