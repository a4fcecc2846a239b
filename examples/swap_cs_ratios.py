"""One base denoiser, five compressive-sensing tasks, one live network: the shipped zoo, no training.

Builds ONE LoRun-9 network from the zoo's shared base and its cs-0.50 bundle, then swaps in each
CS bundle (ratios 0.01 to 0.50; the sampling matrix and the linear initial estimate change shape
on every swap) and restores the same photograph at each ratio, printing PSNR and the swap time. x0
is stage_0's input, the operator's initial estimate: for the zoo's bundles A^T y = Phi^T y, Phi's
rows orthonormal PCA directions of training blocks.

    python examples/swap_cs_ratios.py                    # the shipped "camera" photograph (256 x 256)
    python examples/swap_cs_ratios.py --image photo.png  # your own image (colour: R, G and B restored in turn)
    python examples/swap_cs_ratios.py --save out/        # also write each restoration as PNG
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lorun_peft import zoo
from lorun_peft.data import load_image, photographs
from lorun_peft.metrics import psnr
from lorun_peft.plots import save_png, to_display
from lorun_peft.unfold import measure_and_restore


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Swap the zoo's CS bundles in one live LoRun network.")
    parser.add_argument("--image", type=Path, help="an image, gray or colour (default: the shipped camera photograph)")
    parser.add_argument("--save", type=Path, help="folder for the restored images")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    x = (load_image(args.image) if args.image else photographs(["camera"])[0])[None]
    names = [n for n in zoo.list() if n.startswith("cs-")]
    start = time.perf_counter()
    live = zoo.load(names[-1])
    print(f"one live LoRun-{live.K} network from the zoo ({time.perf_counter() - start:.1f} s to load); "
          f"restoring a {x.shape[-2]} x {x.shape[-1]} image after each swap:")
    print(f"{'bundle':>8} {'m/block':>8} {'x0 dB':>9} {'LoRun dB':>9} {'swap ms':>8} {'restore s':>10}")
    for name in names:
        zoo.verify(name)
        t0 = time.perf_counter()
        live.load_adapters(zoo.bundle_path(name))
        swap_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        with torch.no_grad():  # measure with the bundle's operator, restore (a colour image: R, G, B in turn)
            _, x0, restored, _ = measure_and_restore(live, x)
            scores = [float(psnr(v.clamp(0, 1), x)) for v in (x0, restored)]
        seconds = time.perf_counter() - t0
        print(f"{name:>8} {live.operator.measurements:>8} {scores[0]:>9.2f} {scores[1]:>9.2f} {swap_ms:>8.1f} {seconds:>10.2f}")
        if args.save:
            from PIL import Image

            args.save.mkdir(parents=True, exist_ok=True)
            save_png(args.save / f"{name}.png", Image.fromarray(to_display(restored[0].clamp(0, 1))))
    print(f"\nthe zoo: {zoo.ROOT} (bundles {names}); see each bundle's README.md for its test figures")


if __name__ == "__main__":
    main()
