"""(g) Quality with equal training budgets: Block-1 vs Block-9 vs LoRun-9 for block CS.

    python -m benchmarks.quality --quick --data ../shared/data      # a few minutes
    python -m benchmarks.quality --full --data ../shared/data       # about an hour on 2 CPU cores
    python -m benchmarks.quality --quick --task sr --data ../shared/data   # SR x2/x4, three kernels, Set5
    python -m benchmarks.quality --full --data ../shared/data --ratios 0.10 --name quality_full_r010
        # one ratio per process, so two ratios can run side by side on two cores

Trains on random Train400 patches and tests on Set11 (and, in --full, BSD68) with PSNR/SSIM.
Every variant gets the same number of optimiser steps on the same patches in the same order:
Block-1 and Block-9 train for `steps`; LoRun-9 follows the paper's Algorithm 1 inside that budget
(steps/2 as Block-1, then `to_lora` and steps/2 on the adapters). Writes
benchmarks/results/quality_<mode>.json (or --name).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import lorun_peft
from lorun_peft.denoisers import UNet
from lorun_peft.operators.kernels import kernel_bank
from lorun_peft.metrics import psnr, ssim
from lorun_peft.operators import BlockCS, BlurDownsample, fit_operator

from .common import save

K = 9


def load_gray(folder: Path) -> list[torch.Tensor]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".tif", ".bmp"))
    return [torch.from_numpy(np.asarray(Image.open(p).convert("L"), dtype=np.float32) / 255.0)[None] for p in files]


def modcrop(image: torch.Tensor, multiple: int, crop: int | None = None) -> torch.Tensor:
    """Crop to sides divisible by ``multiple`` (SR needs it); optionally a centre crop of ``crop``."""
    h, w = image.shape[-2:]
    if crop is not None:
        top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        image = image[..., top : top + crop, left : left + crop]
        h, w = image.shape[-2:]
    return image[..., : h - h % multiple, : w - w % multiple]


def random_patches(images: list[torch.Tensor], count: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(count, 1, size, size)
    for i in range(count):
        img = images[int(torch.randint(len(images), (1,), generator=g))]
        top = int(torch.randint(img.shape[1] - size + 1, (1,), generator=g))
        left = int(torch.randint(img.shape[2] - size + 1, (1,), generator=g))
        patch = img[:, top : top + size, left : left + size]
        out[i] = torch.rot90(patch, int(torch.randint(4, (1,), generator=g)), dims=(1, 2))
    return out


def evaluate(net: lorun_peft.UnfoldedNetwork, tests: list[torch.Tensor]) -> dict[str, float]:
    net.eval()
    scores, ssims = [], []
    with torch.no_grad():
        for img in tests:
            x = img[None]
            with fit_operator(net.operator, x.shape[-2:]):  # BSD68's 321 x 481 is not a multiple of the CS block
                x_hat = net(net.operator.A(x)).clamp(0, 1)
            scores.append(float(psnr(x_hat, x)))
            ssims.append(float(ssim(x_hat, x).mean()))
    net.train()
    return {"psnr": float(np.mean(scores)), "ssim": float(np.mean(ssims))}


def scores(net: lorun_peft.UnfoldedNetwork, extra_tests: dict[str, list[torch.Tensor]], tests: list[torch.Tensor]) -> dict:
    """Main test set's PSNR/SSIM at the top level, each extra set's under its name."""
    return {**evaluate(net, tests), **{name: evaluate(net, images) for name, images in extra_tests.items()}}


def run(make_operator, patches: torch.Tensor, tests: list[torch.Tensor], steps: int, width: int, seed: int,
        algorithm: str = "pgd", extra_tests: dict[str, list[torch.Tensor]] | None = None) -> dict:
    common = {"lr": 1e-3, "batch_size": 8, "seed": seed, "progress": True}

    def fresh(share: str) -> lorun_peft.UnfoldedNetwork:
        torch.manual_seed(seed)  # the same initial denoiser and sampling matrix for every variant
        return lorun_peft.unfold(UNet(1, width=width), make_operator(), K, algorithm=algorithm, share=share, noise_level=True)

    extra_tests = extra_tests or {}
    results = {}
    for name, share in (("Block-1", "base"), ("Block-9", "none")):
        net = fresh(share)
        start = time.perf_counter()
        lorun_peft.train(net, patches, steps=steps, **common)
        results[name] = {**scores(net, extra_tests, tests), "seconds": time.perf_counter() - start,
                         "parameters": net.parameter_report().total}
    net = fresh("base")
    start = time.perf_counter()
    lorun_peft.train(net, patches, steps=steps // 2, **common)
    net.to_lora()
    lorun_peft.train(net, patches, steps=steps - steps // 2, **{**common, "seed": seed + 1})
    results["LoRun-9"] = {**scores(net, extra_tests, tests), "seconds": time.perf_counter() - start,
                          "parameters": net.parameter_report().total}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--full", action="store_true")
    parser.add_argument("--data", type=Path, required=True, help="folder with train400/, set11/ (and set5/ for --task sr)")
    parser.add_argument("--task", choices=("cs", "sr"), default="cs",
                        help="cs: Set11 at --ratios; sr: Set5 (gray luma) at x2 and x4 with bank kernels 0, 4, 8 (HQS)")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.10, 0.25])
    parser.add_argument("--kernels", type=int, nargs="+", default=[0, 4, 8], help="--task sr: indices into kernel_bank()")
    parser.add_argument("--steps", type=int, help="training steps per variant (default: 150 quick, 800 full)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", help="result file name (default quality_<mode>[_sr]); lets runs of different ratios go side by side")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    full = args.full
    steps, size, width, count = (800, 48, 16, 4000) if full else (150, 32, 8, 1200)
    steps = args.steps or steps
    train_images = load_gray(args.data / "train400")
    tests = load_gray(args.data / "set11")
    if not full:  # quick: the 256 x 256 images, centre 128 x 128
        tests = [t[:, 64:192, 64:192] for t in tests if t.shape[-1] == 256]
    # --full also scores BSD68 (68 images, 321 x 481) when the data folder has it
    extra_tests = {"bsd68": load_gray(args.data / "bsd68")} if full and (args.data / "bsd68").is_dir() else {}
    patches = random_patches(train_images, count, size, args.seed)
    table = {}
    if args.task == "cs":
        for ratio in args.ratios:
            make = lambda ratio=ratio: BlockCS(ratio, block=32, seed=args.seed)
            table[f"ratio {ratio:.2f}"] = run(make, patches, tests, steps, width, args.seed, extra_tests=extra_tests)
        test_set = "set11"
    else:
        bank = kernel_bank()
        crop = 96 if not full else None
        sr_tests = [modcrop(t, 4, crop) for t in load_gray(args.data / "set5")]
        for scale in (2, 4):
            for index in args.kernels:  # default 0, 4, 8: isotropic, anisotropic, motion
                make = lambda index=index, scale=scale: BlurDownsample(bank[index], scale)
                table[f"x{scale} kernel {index}"] = run(make, patches, sr_tests, steps, width, args.seed, algorithm="hqs")
        tests, test_set = sr_tests, "set5"
    mode_name = ("full" if full else "quick") + ("" if args.task == "cs" else "_sr")
    payload = {"task": args.task, "steps": steps, "patch": size, "width": width, "K": K, test_set: table}
    print(f"saved {save(args.name or f'quality_{mode_name}', payload)}")
    print(f"{test_set} ({len(tests)} images), {steps} steps each, U-Net width {width}, K={K}")
    for setting, rows in table.items():
        for name, r in rows.items():
            extra = "".join(f"  {set_name} {r[set_name]['psnr']:6.2f} / {r[set_name]['ssim']:.4f}" for set_name in extra_tests)
            print(f"  {setting:<16} {name:<8} PSNR {r['psnr']:6.2f}  SSIM {r['ssim']:.4f}{extra}  params {r['parameters']:>9,}"
                  f"  {r['seconds']:.0f} s")


if __name__ == "__main__":
    main()
