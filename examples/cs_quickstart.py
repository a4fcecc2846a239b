"""Block compressive sensing at ratio 0.25: train Block-1, turn it into LoRun-9, save the adapters.

Algorithm 1 of the paper on built-in synthetic images (no download):
1. Block-1: one shared trainable denoiser for all K stages, trained with the sampling matrix.
2. ``to_lora``: that denoiser is frozen as the base and K LoRA adapters (one per stage) are trained.

    python examples/cs_quickstart.py                 # about a minute and a half on one CPU thread
    python examples/cs_quickstart.py --steps 500 --out my_cs
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import lorun_peft
from lorun_peft.data import synthetic_images
from lorun_peft.denoisers import UNet
from lorun_peft.operators import BlockCS


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description="Block CS at ratio 0.25: Block-1, then LoRun-K.")
    parser.add_argument("--steps", type=int, default=150, help="training steps per phase (default 150)")
    parser.add_argument("--K", type=int, default=9, help="stages (default 9)")
    parser.add_argument("--ratio", type=float, default=0.25, help="CS sampling ratio (default 0.25)")
    parser.add_argument("--out", type=Path, default=Path("cs_quickstart"), help="folder for the base and the adapter bundle")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    train_images = synthetic_images(96, size=32, seed=0)  # clean images; measurements are simulated
    test_images = synthetic_images(4, size=64, seed=1)  # held out
    operator = BlockCS(args.ratio, block=16)  # learnable 16x16-block sampling matrix
    net = lorun_peft.unfold(UNet(1, width=8), operator, K=args.K, share="base", noise_level=True)

    start = time.perf_counter()
    result = lorun_peft.train_two_phase(  # phase "backbone" (Block-1), to_lora(), phase "adapters"
        net, train_images, steps=args.steps, lr=2e-3, batch_size=8, phases=lorun_peft.training.recipe.PAPER, test_data=test_images,
        progress=False
    )
    seconds = time.perf_counter() - start

    block1, lorun = result.backbone_evaluation.mean(), result.evaluation.mean()
    print(f"CS ratio {args.ratio}, {args.steps} steps per phase, {seconds:.0f} s; mean over {len(test_images)} test images:")
    print(f"  {'':<8} {'PSNR':>6} {'SSIM':>7}")
    print(f"  {'A^T y':<8} {lorun['x0_psnr']:6.2f} {lorun['x0_ssim']:7.4f}")
    print(f"  {'Block-1':<8} {block1['psnr']:6.2f} {block1['ssim']:7.4f}")
    print(f"  {f'LoRun-{args.K}':<8} {lorun['psnr']:6.2f} {lorun['ssim']:7.4f}")
    print()
    print(net.parameter_report())

    base = net.save_base(args.out / "base")  # the frozen denoiser, saved once
    bundle = net.save_adapters(args.out / f"cs-{args.ratio:.2f}", metrics={"psnr": round(lorun["psnr"], 2)})
    print(f"\nbase: {base}\nadapter bundle: {bundle}")
    print(f"reload with: lorun_peft.load({str(base)!r}, {str(bundle)!r})")
    return {"block1_psnr": block1["psnr"], "psnr": lorun["psnr"], "ssim": lorun["ssim"]}


if __name__ == "__main__":
    main()
