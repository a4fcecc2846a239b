"""torch.compile against eager, side by side in one process (issue #12): LoRun-9, paper-cs U-Net.

    python -m benchmarks.compile [--quick] [--device cpu|cuda] [--backend inductor] [--threads 1]

The same LoRun-9 network (``UNet.preset("paper-cs")``, block CS at ratio 0.25, K = 9, noise-level
input, adapters initialised nonzero) runs eagerly and as ``torch.compile(net, backend=...)``:

- eval: one inference call on 1 x 1 x S x S (S = 256; 128 with --quick) through the merged path
  (W0 + delta_k per stage), under ``torch.no_grad``;
- train: one phase-2 step on 1 x 1 x S x S (S = 128; 64 with --quick): forward, MSE loss,
  backward, Adam step (the optimizer is eager in both); afterwards, from equal weights, the
  largest relative difference between a compiled and an eager gradient (each tensor's norm).

Eager and compiled calls are interleaved repeats (``common.interleaved_times``), so load that
drifts hits both; the summary is the median of each repeat's compiled / eager ratio with its
quartiles. Compile time is reported on its own: the wall time of the first compiled call (dynamo
+ AOT autograd + backend) minus a steady-state compiled call, with an empty inductor cache (a
fresh ``TORCHINDUCTOR_CACHE_DIR``; ``--warm-cache`` keeps the usual one). Also recorded: dynamo's
graph and graph-break counts. Writes ``benchmarks/results/compile_<mode>[_gpu].json`` (or ``--name``).
"""

from __future__ import annotations

import argparse
import atexit
import copy
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from torch._dynamo.utils import counters

import lorun_peft
from lorun_peft.denoisers import UNet
from lorun_peft.operators import BlockCS

from .common import interleaved_times, machine, save, sync

K = 9


def lorun_9(device: torch.device) -> lorun_peft.UnfoldedNetwork:
    torch.manual_seed(0)
    net = lorun_peft.unfold(UNet.preset("paper-cs"), BlockCS(0.25, block=32), K, noise_level=True,
                            adapter_options={"init_lora_weights": False})
    return net.to(device)


def first_call_seconds(call: Callable[[], Any]) -> float:
    sync()
    start = time.perf_counter()
    call()
    sync()
    return time.perf_counter() - start


def paired(times: dict[str, list[float]]) -> dict[str, Any]:
    """Median ms of each, and quartiles of each repeat's compiled / eager ratio."""
    ratios = sorted(c / e for c, e in zip(times["compiled"], times["eager"]))
    quartile = {q: ratios[round(f * (len(ratios) - 1))] for q, f in (("p25", 0.25), ("median", 0.5), ("p75", 0.75))}
    return {"median_ms": {k: statistics.median(v) for k, v in times.items()}, "compiled_over_eager": quartile}


def compare(eager: Callable[[], Any], compiled: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """Compile (timed), then interleaved repeats of both; dynamo's counts for this workload."""
    counters.clear()
    first = first_call_seconds(compiled)
    result = paired(interleaved_times({"eager": eager, "compiled": compiled}, repeats))
    result["compile_s"] = first - result["median_ms"]["compiled"] / 1e3
    result["graphs"] = int(counters["stats"]["unique_graphs"])
    result["graph_breaks"] = int(sum(counters["graph_break"].values()))
    return result


def evaluation(device: torch.device, size: int, repeats: int, backend: str) -> dict[str, Any]:
    net = lorun_9(device).eval()  # merged path (net.inference == "merged")
    compiled = torch.compile(net, backend=backend)
    y = net.operator.A(torch.rand(1, 1, size, size, device=device))
    with torch.no_grad():
        result = compare(lambda: net(y), lambda: compiled(y), repeats)
        torch.testing.assert_close(compiled(y), net(y), rtol=1e-3, atol=1e-4)
    return result


def training(device: torch.device, size: int, repeats: int, backend: str) -> dict[str, Any]:
    eager_net = lorun_9(device)
    compiled_net = copy.deepcopy(eager_net)
    x = torch.rand(1, 1, size, size, device=device)
    y = eager_net.operator.A(x).detach()

    def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(y), x).backward()
        optimizer.step()

    compiled = torch.compile(compiled_net, backend=backend)
    eager_opt = torch.optim.Adam([p for p in eager_net.parameters() if p.requires_grad], lr=1e-4)
    compiled_opt = torch.optim.Adam([p for p in compiled_net.parameters() if p.requires_grad], lr=1e-4)
    result = compare(lambda: step(eager_net, eager_opt), lambda: step(compiled, compiled_opt), repeats)
    compiled_net.load_state_dict(eager_net.state_dict())  # then one gradient from each, the same weights
    grads = []
    for model, net in ((eager_net, eager_net), (compiled, compiled_net)):
        net.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(y), x).backward()
        grads.append([p.grad for p in net.parameters() if p.requires_grad])
    result["max_relative_grad_difference"] = max(float((c - e).norm() / e.norm().clamp_min(1e-12)) for e, c in zip(*grads))
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="eval 128 x 128, train 64 x 64, fewer repeats")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", type=int, nargs=2, metavar=("EVAL", "TRAIN"), help="override the image sides")
    parser.add_argument("--repeats", type=int, help="override the interleaved repeats")
    parser.add_argument("--name", help="results file name (default compile_<mode>, plus _gpu on CUDA)")
    parser.add_argument("--warm-cache", action="store_true", help="keep inductor's cache (compile time then measures a cache hit)")
    args = parser.parse_args(argv)
    if not args.warm_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache = tempfile.mkdtemp(prefix="lorun_compile_cache_")
        atexit.register(shutil.rmtree, cache, True)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    eval_size, train_size = args.sizes or ((128, 64) if args.quick else (256, 128))
    repeats = args.repeats or (5 if args.quick else 15)
    print(f"machine: {machine()}", flush=True)
    result: dict[str, Any] = {"mode": "quick" if args.quick else "full", "device": str(device), "backend": args.backend,
                              "K": K, "eval_size": eval_size, "train_size": train_size, "repeats": repeats,
                              "cold_cache": not args.warm_cache}
    result["eval"] = evaluation(device, eval_size, repeats, args.backend)
    print(f"eval done: {result['eval']}", flush=True)
    result["train"] = training(device, train_size, repeats, args.backend)
    for name in ("eval", "train"):
        r = result[name]
        ms, q = r["median_ms"], r["compiled_over_eager"]
        print(f"{name}: eager {ms['eager']:.1f} ms, compiled {ms['compiled']:.1f} ms, compiled / eager {q['median']:.3f} "
              f"[{q['p25']:.3f}, {q['p75']:.3f}]; compile {r['compile_s']:.1f} s; {r['graphs']} graph(s), "
              f"{r['graph_breaks']} graph break(s)" + (f"; gradients differ by {r['max_relative_grad_difference']:.1e} (relative)"
                                                        if name == "train" else ""))
    name = args.name or f"compile_{result['mode']}" + ("_gpu" if device.type == "cuda" else "")
    print(f"saved {save(name, result)}")
    return result


if __name__ == "__main__":
    main()
