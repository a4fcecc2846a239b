"""Super-resolution x2 and x4 with three blur kernels: one frozen base, one set of LoRA adapters per task.

The operator is ``BlurDownsample`` (circular blur, then keep every scale-th pixel); the unfolding
is HQS, whose data step is the operator's closed-form FFT ``prox_l2``.
1. A Block-1 backbone (one shared trainable denoiser) is trained once, at x2 with the isotropic kernel.
2. For each kernel (isotropic, anisotropic, motion, from ``kernel_bank()``) and scale (x2, x4), a
   LoRun network on that frozen base trains its K stage adapters and step parameters, is evaluated
   (PSNR on gray built-in images, against the cubic-interpolation start x0) and saved as a bundle.

    python examples/sr_kernels.py                    # about a minute and a half on one CPU thread
    python examples/sr_kernels.py --steps 300 --K 8 --out my_sr
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import lorun_peft
from lorun_peft.data import synthetic_images
from lorun_peft.denoisers import UNet
from lorun_peft.operators.kernels import kernel_bank
from lorun_peft.operators import BlurDownsample

KERNELS = {"isotropic": 2, "anisotropic": 4, "motion": 8}  # indices into kernel_bank() (see its docstring)
SCALES = (2, 4)


def main(argv: list[str] | None = None) -> dict[tuple[str, int], float]:
    parser = argparse.ArgumentParser(description="SR x2/x4 with three kernels: HQS LoRun adapters on one base.")
    parser.add_argument("--steps", type=int, default=60, help="training steps of each task; the backbone gets 3x (default 60)")
    parser.add_argument("--K", type=int, default=4, help="stages (default 4)")
    parser.add_argument("--out", type=Path, default=Path("sr_kernels"), help="folder for the base and the bundles")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    bank = kernel_bank()  # 12 x 25 x 25, generated in code
    train_images = synthetic_images(64, size=32, seed=0)  # sides divisible by every scale
    test_images = synthetic_images(4, size=64, seed=1)
    options = {"algorithm": "hqs", "noise_level": True}
    start = time.perf_counter()

    # 1. the shared base: Block-1 at x2, isotropic kernel
    block1 = lorun_peft.unfold(UNet(1, width=8), BlurDownsample(bank[KERNELS["isotropic"]], scale=2), args.K, share="base", **options)
    lorun_peft.train(block1, train_images, steps=3 * args.steps, lr=2e-3, batch_size=8, progress=False)
    base = block1.denoisers.denoiser
    block1.save_base(args.out / "base")
    print(f"Block-1 backbone trained ({time.perf_counter() - start:.0f} s)\n")

    # 2. one LoRun adapter set per kernel and scale, all on the same frozen base
    print(f"{'kernel':<12} {'scale':>5} {'cubic x0 dB':>11} {'LoRun dB':>9}")
    results = {}
    for name, index in KERNELS.items():
        for scale in SCALES:
            net = lorun_peft.unfold(base, BlurDownsample(bank[index], scale=scale), args.K, **options)
            net.steps.load_state_dict(block1.steps.state_dict())  # start from the trained step parameters
            lorun_peft.train(net, train_images, steps=args.steps, lr=2e-3, batch_size=8, progress=False)
            scores = lorun_peft.evaluate(net, test_images).mean()
            net.save_adapters(args.out / f"sr-x{scale}-{name}", metrics={"psnr": round(scores["psnr"], 2)})
            results[(name, scale)] = scores["psnr"]
            print(f"{name:<12} {'x' + str(scale):>5} {scores['x0_psnr']:>11.2f} {scores['psnr']:>9.2f}")

    report = net.parameter_report()
    print(f"\nbase {report.base:,} parameters (frozen, shared); each task adds "
          f"{sum(report.adapters.values()):,} adapter + {report.step} step parameters")
    print(f"base and {len(results)} bundles in {args.out}/ ({time.perf_counter() - start:.0f} s in all)")
    return results


if __name__ == "__main__":
    main()
