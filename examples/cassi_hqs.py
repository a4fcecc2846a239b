"""Spectral snapshot compressive imaging (CASSI) with HQS: Block-1, then LoRun, and per-band PSNR.

Every band of a cube is multiplied by a coded aperture (mask), shifted by 2 pixels per band and
summed on the detector. HQS's data step is the operator's closed-form ``prox_l2``; the denoiser is
a U-Net with ``in_channels=bands``. Data: built-in synthetic spectral cubes (no download). The mask
is non-binary random by default, or a real one read from a .mat file (TSA-Net's, centre-cropped).

    python examples/cassi_hqs.py                     # about a minute on one CPU thread
    python examples/cassi_hqs.py --mask ../shared/data/cassi_tsa/simu/mask.mat --steps 300
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import lorun_peft
from lorun_peft.data import center_crop, synthetic_cubes
from lorun_peft.denoisers import UNet
from lorun_peft.metrics import psnr
from lorun_peft.operators import CASSI
from lorun_peft.operators.cassi import load_mask


def main(argv: list[str] | None = None) -> list[float]:
    parser = argparse.ArgumentParser(description="CASSI with HQS: Block-1, then LoRun-K; per-band PSNR.")
    parser.add_argument("--steps", type=int, default=150, help="training steps per phase (default 150)")
    parser.add_argument("--K", type=int, default=5, help="stages (default 5)")
    parser.add_argument("--bands", type=int, default=28, help="spectral bands (default 28, as TSA-Net / MST)")
    parser.add_argument("--size", type=int, default=32, help="cube side in pixels (default 32)")
    parser.add_argument("--mask", type=Path, help="a .mat file with a 'mask' variable (default: a random non-binary mask)")
    parser.add_argument("--out", type=Path, default=Path("cassi_hqs"), help="folder for the base and the adapter bundle")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    if args.mask is not None:
        mask = center_crop(load_mask(args.mask), args.size)  # the real aperture, values in (0, 1]
    else:
        mask = torch.rand(args.size, args.size, generator=torch.Generator().manual_seed(0))
    operator = CASSI(mask, step=2, bands=args.bands)
    train_cubes = synthetic_cubes(32, size=args.size, bands=args.bands, seed=0)
    test_cubes = synthetic_cubes(2, size=args.size, bands=args.bands, seed=1)
    denoiser = UNet(args.bands, width=16)
    net = lorun_peft.unfold(denoiser, operator, K=args.K, algorithm="hqs", share="base", noise_level=True)

    start = time.perf_counter()
    result = lorun_peft.train_two_phase(
        net, train_cubes, steps=args.steps, lr=2e-3, batch_size=4, phases=lorun_peft.training.recipe.PAPER, test_data=test_cubes, keep_outputs=True, progress=False
    )
    block1, lorun = result.backbone_evaluation.mean(), result.evaluation.mean()
    print(f"CASSI {args.bands} bands, {args.size}x{args.size}, {'mask ' + str(args.mask) if args.mask else 'random mask'}; "
          f"{args.steps} steps per phase, {time.perf_counter() - start:.0f} s")
    print(f"band-averaged PSNR on {len(test_cubes)} test cubes: x0 {lorun['x0_psnr']:.2f} dB, "
          f"Block-1 {block1['psnr']:.2f} dB, LoRun-{args.K} {lorun['psnr']:.2f} dB")

    restored = torch.stack(result.evaluation.restored)  # N x bands x H x W, clamped to [0, 1]
    per_band = [float(psnr(restored[:, b], test_cubes[:, b]).mean()) for b in range(args.bands)]
    print(f"LoRun-{args.K} PSNR per band (dB):")
    for first in range(0, args.bands, 7):
        print("  " + "  ".join(f"{b:>2}: {per_band[b]:5.2f}" for b in range(first, min(first + 7, args.bands))))

    net.save_base(args.out / "base")
    bundle = net.save_adapters(args.out / "cassi", metrics={"psnr": round(lorun["psnr"], 2)})
    print(f"\nbase and adapter bundle in {args.out}/ ({bundle.name})")
    return per_band


if __name__ == "__main__":
    main()
