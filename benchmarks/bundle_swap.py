"""How long a live task swap takes: ``net.load_adapters(bundle)`` on the reference U-Net.

Two bundles on one base (block CS at ratios 0.25 and 0.10, block 32, so the sampling matrix
changes shape on every swap) are saved to a temporary folder, then swapped alternately into one
live LoRun-9 network. Three timings: from the local folder (read + sha256 check + validate +
copy), from a Bundle already read into memory, and the read alone. Prints a table and writes
``benchmarks/results/bundle_swap.json``.

    python benchmarks/bundle_swap.py            # about 20 s on one CPU thread
    python benchmarks/bundle_swap.py --swaps 200 --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lorun_peft import unfold
from lorun_peft.persistence import bundle
from lorun_peft.denoisers import UNet
from lorun_peft.operators import BlockCS


def timed(fn, repeats: int) -> list[float]:
    """Milliseconds of each call of ``fn(i)``."""
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_ms": round(statistics.median(ordered), 3),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
        "min_ms": round(ordered[0], 3),
        "max_ms": round(ordered[-1], 3),
    }


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swaps", type=int, default=60, help="timed swaps per measurement (default 60)")
    parser.add_argument("--K", type=int, default=9, help="stages (default 9)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bundle_swap.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    base = UNet.preset("paper-cs")
    ratios = (0.25, 0.10)
    nets = [unfold(base, BlockCS(r, block=32, seed=i), args.K, noise_level=True) for i, r in enumerate(ratios)]
    with tempfile.TemporaryDirectory() as tmp:
        folders = [bundle.save_adapters(net, Path(tmp) / f"cs-{r}") for net, r in zip(nets, ratios)]
        live = nets[0]
        bundles = [bundle.read_bundle(f) for f in folders]
        for i in range(4):  # warm-up: caches, allocator
            bundle.load_adapters(live, folders[i % 2])
        from_folder = timed(lambda i: bundle.load_adapters(live, folders[(i + 1) % 2]), args.swaps)
        from_memory = timed(lambda i: bundle.load_adapters(live, bundles[(i + 1) % 2]), args.swaps)
        read_only = timed(lambda i: bundle.read_bundle(folders[i % 2]), args.swaps)
        sizes = {f"cs-{r}": sum(p.stat().st_size for p in f.rglob("*") if p.is_file()) for f, r in zip(folders, ratios)}

    report = live.parameter_report()
    result = {
        "what": "net.load_adapters(bundle) alternating CS 0.25 <-> 0.10 (block 32; the operator is rebuilt each swap)",
        "model": f"UNet.preset('paper-cs'), LoRun-{args.K}, gamma 10%, noise_level=True",
        "base_parameters": report.base,
        "adapter_parameters": sum(report.adapters.values()),
        "bundle_bytes": sizes,
        "swaps": args.swaps,
        "from_local_folder": summary(from_folder),
        "from_bundle_in_memory": summary(from_memory),
        "read_and_verify_only": summary(read_only),
        "target_ms": 50,
        "threads": args.threads,
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(), "torch": torch.__version__},
    }
    print(f"{result['model']}: {result['base_parameters']:,} base + {result['adapter_parameters']:,} adapter parameters")
    print(f"{'swap':<24} {'median ms':>10} {'p90 ms':>8} {'min ms':>8}")
    for key in ("from_local_folder", "from_bundle_in_memory", "read_and_verify_only"):
        s = result[key]
        print(f"{key:<24} {s['median_ms']:>10.2f} {s['p90_ms']:>8.2f} {s['min_ms']:>8.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.out}")
    return result


if __name__ == "__main__":
    main()
