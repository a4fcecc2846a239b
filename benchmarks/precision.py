"""bf16 / fp16 / fp32 training side by side (issue #12): the zoo's recipe at CS ratio 0.25.

    python -m benchmarks.precision --data ../shared/data [--steps 60] [--threads 1]

The same LoRun-9 network (the zoo's pretrained base, its cs-0.25 operator and step initialisation
from ``runs/zoo``) is trained from the same start for the same steps on the same Train400 patches
with ``lorun_peft.train(..., precision=P)``; reported: optimisation seconds per step (validation
excluded) and PSNR on the 10 held-out Train400 images afterwards, each beside fp32's from the same
run. Writes ``benchmarks/results/precision.json``.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

import lorun_peft
from lorun_peft.data import ImageFolder

from . import zoo
from .common import save
from .shared_base import build


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--zoo-work", type=Path, default=Path("runs/zoo"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    training, validation = zoo.train400(args.data)
    patches = ImageFolder(training, patch_size=zoo.CS_RECIPE["patch_size"])
    val = [ImageFolder(validation).full(i) for i in range(len(validation))]
    start = build("shared", 0.25, args.data, args.zoo_work)
    rows = {}
    for precision in args.precisions:
        net = copy.deepcopy(start)
        result = lorun_peft.train(net, patches, steps=args.steps, batch_size=zoo.CS_RECIPE["batch_size"], lr=zoo.CS_RECIPE["lr"],
                                  precision=precision, val_data=val, val_every=args.steps, desc=precision)
        rows[precision] = {"seconds_per_step": result.train_seconds / args.steps, "val_psnr": result.val_psnr[-1][1]}
        print(precision, rows[precision], flush=True)
    base = rows.get("fp32")
    for precision, row in rows.items():
        if base:
            row["time_vs_fp32"] = row["seconds_per_step"] / base["seconds_per_step"]
            row["psnr_minus_fp32"] = row["val_psnr"] - base["val_psnr"]
        print(f"{precision}: {row['seconds_per_step']:.2f} s/step ({row.get('time_vs_fp32', 1):.2f} x fp32), "
              f"validation {row['val_psnr']:.2f} dB ({row.get('psnr_minus_fp32', 0):+.3f} dB vs fp32)")
    print(f"saved {save('precision', {'steps': args.steps, 'rows': rows})}")


if __name__ == "__main__":
    main()
