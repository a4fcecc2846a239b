"""One base denoiser, four compressive-sensing tasks, one live network.

1. Train a Block-1 backbone once (one shared denoiser for all K stages) at CS ratio 0.25.
2. For each ratio 0.01, 0.04, 0.10, 0.25: a fresh LoRun network on a copy of that base (frozen)
   trains its K stage adapters, step parameters and sampling matrix, and is saved as a bundle.
3. Build ONE live network from the saved base and a bundle, then swap the four bundles in and
   restore the same test image at each ratio (the sampling matrix changes shape on every swap).

    python examples/swap_cs_ratios.py            # about a minute on one CPU thread (K=4, 80 steps)
    python examples/swap_cs_ratios.py --out my_bundles --steps 300
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import lorun_peft
from lorun_peft.data import synthetic_images
from lorun_peft.denoisers import UNet
from lorun_peft.metrics import psnr
from lorun_peft.operators import BlockCS

RATIOS = (0.01, 0.04, 0.10, 0.25)


def main() -> None:
    parser = argparse.ArgumentParser(description="Swap CS-ratio bundles in one live LoRun network.")
    parser.add_argument("--out", type=Path, default=Path("swap_cs_ratios"), help="folder for the base and the bundles")
    parser.add_argument("--K", type=int, default=4, help="stages (default 4)")
    parser.add_argument("--steps", type=int, default=80, help="training steps per phase and ratio (default 80)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # small tensors: one thread is fastest and safe on a shared machine
    torch.manual_seed(0)
    images = synthetic_images(64, size=32, seed=0)
    test = synthetic_images(1, size=64, seed=1)
    start = time.perf_counter()

    # 1. the shared base: Block-1 at ratio 0.25
    block1 = lorun_peft.unfold(UNet(1, width=8), BlockCS(0.25, block=16), args.K, share="base", noise_level=True)
    lorun_peft.train(block1, images, steps=args.steps, lr=2e-3, batch_size=8, progress=False)
    base = block1.denoisers.denoiser
    block1.save_base(args.out / "base")
    print(f"Block-1 backbone trained ({time.perf_counter() - start:.0f} s); base fingerprint {block1.base_fingerprint()[:23]}...")

    # 2. one bundle per ratio, each trained on the same frozen base weights
    for i, ratio in enumerate(RATIOS):
        net = lorun_peft.unfold(base, BlockCS(ratio, block=16, seed=i), args.K, noise_level=True)
        net.steps.load_state_dict(block1.steps.state_dict())
        lorun_peft.train(net, images, steps=args.steps, lr=2e-3, batch_size=8, seed=i, progress=False)
        net.eval()
        with torch.no_grad():
            quality = float(psnr(net(net.operator.A(test)).clamp(0, 1), test).mean())
        net.save_adapters(args.out / f"cs-{ratio:.2f}", metrics={"psnr": round(quality, 2), "dataset": "synthetic 64x64"})
        print(f"  bundle cs-{ratio:.2f}: {net.operator.measurements:>3} measurements per 16x16 block, trained ({time.perf_counter() - start:.0f} s)")

    # 3. one live network, four swaps
    live = lorun_peft.load(args.out / "base", args.out / f"cs-{RATIOS[-1]:.2f}")
    print(f"\nOne live LoRun-{args.K} network; restoring the same 64x64 image after each swap:")
    print(f"{'ratio':>6} {'m/block':>8} {'A^T y dB':>9} {'LoRun dB':>9} {'swap ms':>8}")
    for ratio in RATIOS:
        t0 = time.perf_counter()
        live.load_adapters(args.out / f"cs-{ratio:.2f}")
        swap_ms = (time.perf_counter() - t0) * 1e3
        with torch.no_grad():
            y = live.operator.A(test)
            naive = float(psnr(live.operator.A_adjoint(y).clamp(0, 1), test).mean())
            restored = float(psnr(live(y).clamp(0, 1), test).mean())
        print(f"{ratio:>6.2f} {live.operator.measurements:>8} {naive:>9.2f} {restored:>9.2f} {swap_ms:>8.1f}")
    print(f"\nbundles in {args.out}/ ({time.perf_counter() - start:.0f} s in all); list them with lorun_peft.list_bundles:")
    for info in lorun_peft.list_bundles(args.out):
        print(f"  {info}")


if __name__ == "__main__":
    main()
