"""Start-up time: `lorun --help` and `import lorun_peft` against `import torch`, interleaved.

    python -m benchmarks.startup            # 7 rounds; writes benchmarks/results/startup.json

Each round runs the three commands one after the other as fresh processes; the ratios are taken
round by round (robust to load that drifts) and their median is reported. Goal (#11): both well
under `import torch`, since neither should import torch, PEFT, the Hub client, Accelerate or timm.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

from .common import save

COMMANDS = {
    "import torch": [sys.executable, "-c", "import torch"],
    "import lorun_peft": [sys.executable, "-c", "import lorun_peft"],
    "lorun --help": [shutil.which("lorun") or "lorun", "--help"],
}


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    for command in COMMANDS.values():  # warm the file cache
        seconds(command)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, command in COMMANDS.items():
            times[name].append(seconds(command))
    torch_times = times["import torch"]
    result = {
        name: {
            "median_s": statistics.median(values),
            "ratio_to_import_torch": statistics.median(v / t for v, t in zip(values, torch_times)),
        }
        for name, values in times.items()
    }
    for name, row in result.items():
        print(f"{name:<18} {row['median_s'] * 1e3:8.0f} ms   {row['ratio_to_import_torch']:.3f} x import torch")
    save("startup", {"rounds": args.rounds, "results": result})
    return result


if __name__ == "__main__":
    main()
