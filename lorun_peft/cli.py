"""The ``lorun`` command line. ``lorun demo`` runs the paper's two-phase training on built-in images.

>>> parser = build_parser()
>>> parser.parse_args(["demo", "--steps", "5"]).steps
5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .data import synthetic_images
from .denoisers import UNet
from .errors import LorunError
from .io import atomic_write
from .metrics import psnr
from .operators import BlockCS
from .train import train
from .unfold import unfold

__all__ = ["main", "build_parser", "demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lorun", description="Deep LoRA-unfolding networks on PEFT.")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="two-phase training (Block-1, then LoRun) on built-in images, CS at one ratio")
    d.add_argument("--out", type=Path, default=Path("lorun_demo"), help="folder for the result figure")
    d.add_argument("--ratio", type=float, default=0.25, help="CS sampling ratio (default 0.25)")
    d.add_argument("--K", type=int, default=9, help="number of stages (default 9)")
    d.add_argument("--gamma", type=float, default=10.0, help="LoRA rank rule percentage (default 10)")
    d.add_argument("--steps", type=int, default=200, help="training steps per phase (default 200)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: fastest for these small tensors)")
    return parser


def demo(out: Path, ratio: float = 0.25, K: int = 9, gamma: float = 10.0, steps: int = 200, seed: int = 0) -> dict:  # noqa: N803
    """Train Block-1 then LoRun on CS, report PSNR and parameters, save a comparison figure."""
    torch.manual_seed(seed)
    train_images = synthetic_images(96, size=32, seed=seed)
    test_images = synthetic_images(4, size=64, seed=seed + 1)
    operator = BlockCS(ratio, block=16, seed=seed)
    net = unfold(UNet(1, width=8), operator, K, gamma=gamma, share="base", noise_level=True)

    def evaluate() -> tuple[torch.Tensor, float]:
        net.eval()
        with torch.no_grad():
            restored = net(operator.A(test_images)).clamp(0, 1)
        return restored, float(psnr(restored, test_images).mean())

    with torch.no_grad():
        initial = operator.initial_estimate(operator.A(test_images)).clamp(0, 1)
    results = {"A^T y": float(psnr(initial, test_images).mean())}
    print(f"Phase 1: Block-1 (one shared trainable denoiser), K={K}, CS ratio {ratio}")
    start = time.perf_counter()
    train(net, train_images, steps=steps, lr=2e-3, batch_size=8, seed=seed)
    block_1, results["Block-1"] = evaluate()
    print(f"Phase 2: LoRun (frozen base + {K} LoRA adapters, gamma {gamma}%)")
    net.to_lora()
    train(net, train_images, steps=steps, lr=2e-3, batch_size=8, seed=seed + 1)
    lorun, results[f"LoRun-{K}"] = evaluate()
    seconds = time.perf_counter() - start

    print(f"\nPSNR on {len(test_images)} built-in 64x64 test images (dB), {seconds:.0f} s of training:")
    for name, value in results.items():
        print(f"  {name:<10} {value:6.2f}")
    print("\n" + str(net.parameter_report()))
    figure = out / "demo.png"
    _save_figure(figure, [test_images, initial, block_1, lorun], ["truth", *results])
    print(f"\nfigure: {figure}")
    return results


def _save_figure(path: Path, rows: list[torch.Tensor], labels: list[str]) -> None:
    """Columns: one per method; rows: one per test image; a label above each column."""
    scale, pad, top = 3, 4, 18
    n, _, h, w = rows[0].shape
    canvas = Image.new("L", (len(rows) * (w * scale + pad) + pad, top + n * (h * scale + pad)), 255)
    draw = ImageDraw.Draw(canvas)
    for j, (images, label) in enumerate(zip(rows, labels)):
        x0 = pad + j * (w * scale + pad)
        draw.text((x0, 3), label, fill=0)
        for i in range(n):
            tile = Image.fromarray((images[i, 0].numpy() * 255).round().astype(np.uint8)).resize((w * scale, h * scale))
            canvas.paste(tile, (x0, top + i * (h * scale + pad)))
    with atomic_write(path) as f:
        canvas.save(f, format="PNG")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        if args.command == "demo":
            demo(args.out, ratio=args.ratio, K=args.K, gamma=args.gamma, steps=args.steps, seed=args.seed)
    except LorunError as err:
        print(f"lorun {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
