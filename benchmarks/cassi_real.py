"""The five real TSA-Net snapshots restored at full size with the real coded aperture.

    python -m benchmarks.cassi_real --data ../shared/data [--model runs/cassi/real-block9/model]

Each ``Testing_real_data/sceneN.mat`` (``meas_real``, 660 x 714) is scaled as TSA-Net's and MST's
real-data test code does (clipped to [0, 1], ``meas / meas.max() * 0.8``; times ``bands / 2`` here,
because their training divides the simulated snapshot by 28 / 2 and this library's CASSI does not:
:func:`lorun_peft.data.spectral.scale_real_measurement`), restored with ``real/mask.mat`` (660 x 660)
put into the network's operator (:meth:`lorun_peft.operators.CASSI.use_mask`), and written as a
28 x 660 x 660 float32 cube (``--cubes``, default ``runs/cassi/real_cubes/``, not committed) and one
figure in ``benchmarks/results/cassi_real_sceneN.png``: a colour rendering of the 28 bands (CIE 1931
approximation at the band centres, :func:`lorun_peft.data.spectral.render_rgb`) beside four single bands,
each tinted with its wavelength's colour. There is no ground truth, so there are no scores; the
time per scene (one CPU thread) goes to ``benchmarks/results/cassi_real.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from lorun_peft.persistence.atomic import atomic_write
from lorun_peft.resolve import load_network
from lorun_peft.operators.cassi import load_mask
from lorun_peft.data.spectral import BAND_CENTRES, render_rgb, scale_real_measurement, wavelength_rgb

from .common import RESULTS, machine

SHOWN_BANDS = (4, 12, 20, 26)  # 471.5, 516.0, 575.5 and 636.5 nm


def read_scene(path: Path) -> torch.Tensor:
    """``meas_real`` of a TSA-Net real-data file as a 1 x 1 x H x W tensor (unscaled)."""
    from scipy.io import loadmat

    return torch.from_numpy(np.asarray(loadmat(str(path))["meas_real"], dtype=np.float32))[None, None]


def scene_figure(path: Path, cube: torch.Tensor, title: str) -> None:
    """Colour rendering beside four single bands (tinted with their colour, on one common scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(render_rgb(cube).permute(1, 2, 0).numpy(), "colour (CIE 1931 from 28 bands)")]
    top = float(torch.quantile(cube[:, ::4, ::4].flatten(), 0.995)) or 1.0
    for b in SHOWN_BANDS:
        level = (cube[b] / top).clamp(0, 1).numpy()[..., None]
        panels.append((level * np.array(wavelength_rgb(BAND_CENTRES[b])) / 255, f"band {b + 1}: {BAND_CENTRES[b]:g} nm"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.75), dpi=80)
    for ax, (image, label) in zip(axes, panels):
        ax.imshow(image, interpolation="antialiased")
        ax.set_title(label, fontsize=10)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_small(fig, path)


def save_small(fig: Any, path: Path) -> None:
    """Save a matplotlib figure as a 256-colour PNG (a third of the bytes; no visible change here)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    buffer.seek(0)
    with Image.open(buffer) as image:
        small = image.convert("RGB").quantize(256)
    with atomic_write(path) as f:
        small.save(f, format="PNG", optimize=True)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--model", default="runs/cassi/real-block9/model", help="a trained CASSI network (28 bands; default the Block-9 of benchmarks.cassi_sim train --variant block9 --mask real --noise 0.03)")
    parser.add_argument("--cubes", type=Path, default=Path("runs/cassi/real_cubes"), help="where the .npy cubes go")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    net, _ = load_network(args.model)
    net.operator.use_mask(load_mask(args.data / "cassi_tsa/real/mask.mat"))
    net.eval()
    args.cubes.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    times = {}
    for n in range(1, 6):
        y = scale_real_measurement(read_scene(args.data / f"cassi_tsa/real/Testing_real_data/scene{n}.mat"))
        start = time.perf_counter()
        cube = net(y).clamp(0, 1)[0]
        times[f"scene{n}"] = time.perf_counter() - start
        with atomic_write(args.cubes / f"scene{n}.npy") as f:
            np.save(f, cube.numpy())
        figure = RESULTS / f"cassi_real_scene{n}.png"
        scene_figure(figure, cube, f"TSA-Net real scene {n}: 660 x 714 snapshot -> 28 x 660 x 660 ({args.model})")
        print(f"scene{n}: {tuple(y.shape[-2:])} -> {tuple(cube.shape)} in {times[f'scene{n}']:.1f} s; wrote {figure}")
    payload = {"machine": machine(), "model": str(args.model), "seconds_per_scene": times,
               "scaling": "clip to [0, 1], meas / meas.max() * 0.8 * 28 / 2 (TSA-Net/MST real-data test scaling, in this library's units)"}
    (RESULTS / "cassi_real.json").write_text(json.dumps(payload, indent=2))
    print(f"mean {sum(times.values()) / len(times):.1f} s per scene on {args.threads} thread(s)")


if __name__ == "__main__":
    main()
