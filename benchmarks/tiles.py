"""Tiled restoration (lorun_peft.export.tiles, issue #34): quality against the whole image, peak
memory of large results, and a zoomed crop at a tile border.

    python -m benchmarks.tiles quality /work/shared/data [--tile 192]
    python -m benchmarks.tiles memory [--megapixels 3 12 24]
    python -m benchmarks.tiles border [/work/shared/data]

``quality``: Set14 and BSD68 through ``evaluate`` (``lorun eval``'s metrics: SR on Y with the scale
shaved; colour Set14 through ``measure_and_restore``'s colour policy, SR on the luma, CS on R, G and B
each), restored whole and with every image tiled (``--tile``, smaller than every image side).
``memory``: each size restored in a child process (``ru_maxrss``), sr-x2-k0 on a synthetic
smooth + texture low-resolution measurement, tiled with the default tile, and the whole image for
the smallest size; the largest one saves ``results/tile_border.png``, a 64 x 64 crop where its
first tile hands over to its neighbours, 4x nearest-neighbour. ``border``: the same on Set14's
barbara (SR x2, tile 256), beside |tiled - whole| scaled to its maximum (``tile_border_barbara.png``).
Strips above and left of each panel: grey where two tiles are blended, black where a tile's
discarded margin begins. One torch thread; the stage denoisers on PyTorch (``LORUN_ENGINE=eager``).
Nothing here trains.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

# The stage denoisers on PyTorch (channels-last copies): the onnxruntime stage engine, new in the
# working tree while this was measured, failed on odd image sides (a Concat size mismatch).
os.environ.setdefault("LORUN_ENGINE", "eager")

from benchmarks.common import RESULTS, save

MODELS = ("sr-x2-k0", "cs-0.25")


def quality(data: Path, tile: int) -> dict:
    import lorun_peft
    from lorun_peft.data.images import load_image
    from lorun_peft.export.tiles import TiledNetwork
    from lorun_peft.tasks import task_of
    from lorun_peft.training.evaluation import evaluate

    result = {}
    for name in MODELS:
        net = lorun_peft.zoo.load(name)
        tiled = TiledNetwork(net, tile=tile)
        task = task_of(net.operator)
        options = task.metric_options(net.operator)
        for folder in ("set14", "bsd68"):
            paths = sorted((data / folder).iterdir())
            images = [task.fit_image(net.operator, load_image(p))
                      for p in paths if p.suffix.lower() in (".png", ".bmp")]
            assert all(min(x.shape[-2:]) > tile for x in images), "every image must be tiled"
            times, tables = {}, {}
            for label, model in (("whole", net), ("tiled", tiled)):
                start = time.perf_counter()
                tables[label] = evaluate(model, images, **options)
                times[label] = time.perf_counter() - start
            whole = [row["psnr"] for _, row in tables["whole"].table.rows]
            parts = [row["psnr"] for _, row in tables["tiled"].table.rows]
            diff = [abs(a - b) for a, b in zip(whole, parts)]
            result[f"{name} {folder}"] = {
                "images": len(images), "psnr_whole": float(np.mean(whole)), "psnr_tiled": float(np.mean(parts)),
                "mean_abs_diff_db": float(np.mean(diff)), "max_abs_diff_db": float(np.max(diff)),
                "seconds_whole": times["whole"], "seconds_tiled": times["tiled"],
                "layout_example": tiled.layout(_measure(net, images[0])), "margin": tiled.receptive_margin(),
            }
            print(name, folder, json.dumps(result[f"{name} {folder}"]), flush=True)
    return result


def _measure(net, x: torch.Tensor) -> torch.Tensor:
    from lorun_peft.operators.base import fit_operator

    with fit_operator(net.operator, x.shape[-2:]):
        return net.operator.A(x[:1][None])


def synthetic_measurement(height: int, width: int) -> torch.Tensor:
    """A smooth + texture gray image of height x width, in [0, 1] (used as the LR measurement)."""
    rows = torch.linspace(0, 1, height)[:, None]
    cols = torch.linspace(0, 1, width)[None, :]
    smooth = 0.5 + 0.25 * torch.sin(2 * math.pi * (1.5 * cols + 0.7 * rows)) * torch.cos(2 * math.pi * 2.2 * rows)
    texture = (0.08 * torch.sin(2 * math.pi * (height / 9) * (rows + 0.6 * cols))
               + 0.05 * torch.sin(2 * math.pi * (width / 23) * cols))
    edges = 0.15 * ((torch.sin(2 * math.pi * 7 * rows) * torch.sin(2 * math.pi * 11 * cols)) > 0.3).float()
    return (smooth + texture + edges).clamp(0, 1)[None, None]


def _blend_centre(axis, margin: int) -> int:
    """Where the first tile of an axis hands over to the next: the middle of its falling ramp."""
    from lorun_peft.export.tiles import RAMP

    return axis.spans[0][1] - margin - RAMP // 2


def child(height: int, width: int, whole: bool, crop: Path | None = None, tile: int | None = None) -> None:
    """One restoration in this process; prints peak RSS before and after (bytes) and seconds."""
    import lorun_peft
    from lorun_peft.export.tiles import TiledNetwork

    torch.set_num_threads(1)
    net = lorun_peft.zoo.load("sr-x2-k0")
    tiled = TiledNetwork(net, tile=tile)
    y = synthetic_measurement(height, width)
    estimate = None
    with torch.no_grad():
        if not whole:
            tiled.receptive_margin()
            image, per_tile = tiled.bytes_per_pixel()
            layout = tiled.layout(y)
            rows, cols = tiled.plan(y)
            tile = (rows.spans[0][1] - rows.spans[0][0]) * (cols.spans[0][1] - cols.spans[0][0])
            estimate = 2 * height * 2 * width * (image + 4) + tile * per_tile
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        start = time.perf_counter()
        out = (net if whole else tiled)(y)
        seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if crop is not None and not whole:  # where the first tile hands over to its neighbours
        r, c = (_blend_centre(axis, tiled.receptive_margin()) for axis in (rows, cols))
        save_panel(out[0, 0, r - 32:r + 32, c - 32:c + 32], None, (rows, cols), (r - 32, c - 32), crop)
    print(json.dumps({"result": list(out.shape[-2:]), "rss_before": before, "peak_rss": after, "seconds": seconds,
                      "layout": None if whole else layout, "estimate": estimate}))


def memory(sizes: list[tuple[int, int, bool]]) -> dict:
    result = {}
    for height, width, whole in sizes:
        command = [sys.executable, "-m", "benchmarks.tiles", "child", str(height), str(width)]
        command += ["--whole"] if whole else []
        if not whole and (height, width) == max((h, w) for h, w, _ in sizes):
            command += ["--crop", str(RESULTS / "tile_border.png")]
        run = subprocess.run(command, capture_output=True, text=True, check=True,
                             env={"OMP_NUM_THREADS": "1", **_env()})
        row = json.loads(run.stdout.strip().splitlines()[-1])
        key = f"{2 * height} x {2 * width} ({4 * height * width / 1e6:.0f} MP) {'whole' if whole else 'tiled'}"
        result[key] = row
        print(key, json.dumps(row), flush=True)
    return result


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}


def border(data: Path | None = None) -> dict:
    """Crop where a tile hands over to its neighbours, of a tiled SR x2 restoration of a photograph, 4x nearest."""

    import lorun_peft
    from lorun_peft.data.images import load_image
    from lorun_peft.export.tiles import TiledNetwork

    net = lorun_peft.zoo.load("sr-x2-k0")
    tiled = TiledNetwork(net, tile=256)
    x = load_image(Path(data or "/work/shared/data") / "set14" / "barbara.bmp", 1)[None]
    x = x[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2]
    y = net.operator.A(x)
    with torch.no_grad():
        parts, whole = tiled(y), net(y)
    rows, cols = tiled.plan(y)
    # the middle of the blend between the first two tiles of each axis: the farthest from both cores
    r, c = (_blend_centre(axis, tiled.receptive_margin()) for axis in (rows, cols))
    crop = (slice(r - 32, r + 32), slice(c - 32, c + 32))
    difference = (parts - whole).abs()[0, 0][crop]
    path = RESULTS / "tile_border_barbara.png"
    save_panel(parts[0, 0][crop], difference, (rows, cols), (r - 32, c - 32), path)
    info = {"image": "set14/barbara.bmp, gray, SR x2", "layout": tiled.layout(y), "crop_centre": [r, c],
            "max_abs_diff_in_crop": float(difference.max()),
            "max_abs_diff_image": float((parts - whole).abs().max()), "file": str(path)}
    print(json.dumps(info))
    return info


def save_panel(shown: torch.Tensor, difference: torch.Tensor | None, axes: tuple, corner: tuple[int, int],
               path: Path) -> None:
    """``shown`` (a crop) beside ``difference`` scaled to its maximum (white), 4x nearest-neighbour,
    with strips above and left marking where tiles overlap: grey where two tiles' outputs are
    blended, black where a tile's margin (its discarded border) begins."""
    from PIL import Image

    def strip(axis, start: int, n: int) -> torch.Tensor:
        marks = torch.ones(n)
        for (a, b), w in zip(axis.spans, axis.weights):
            for i in range(n):
                p = start + i
                if a <= p < b and 0 < float(w[p - a]) < 1:
                    marks[i] = 0.6
        for i in range(1, n):
            for (a, b), w in zip(axis.spans, axis.weights):
                p = start + i
                if a < p < b and (float(w[p - a - 1]) == 0) != (float(w[p - a]) == 0):
                    marks[i] = 0.0
        return marks

    n = shown.shape[-1]
    panels = [shown.clamp(0, 1)]
    if difference is not None:
        panels += [torch.ones(n, 2), difference / difference.max().clamp_min(1e-12)]
    body = torch.cat(panels, dim=1)
    top = strip(axes[1], corner[1], n)
    top = torch.cat([top] + ([torch.ones(2), top] if difference is not None else []))[None].expand(3, -1)
    left = strip(axes[0], corner[0], n)[:, None].expand(-1, 3)
    image = torch.cat([torch.cat([torch.ones(3, 3), top], dim=1), torch.cat([left, body], dim=1)], dim=0)
    zoomed = image.repeat_interleave(4, 0).repeat_interleave(4, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    Image.fromarray((zoomed.numpy() * 255).round().astype(np.uint8)).save(path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    q = sub.add_parser("quality")
    q.add_argument("data", type=Path)
    q.add_argument("--tile", type=int, default=192)
    m = sub.add_parser("memory")
    m.add_argument("--megapixels", type=float, nargs="+", default=[3, 12, 24])
    m.add_argument("--no-whole", action="store_true", help="only the tiled runs, added to the results saved before")
    b = sub.add_parser("border")
    b.add_argument("data", type=Path, nargs="?")
    c = sub.add_parser("child")
    c.add_argument("height", type=int)
    c.add_argument("width", type=int)
    c.add_argument("--whole", action="store_true")
    c.add_argument("--crop", type=Path)
    c.add_argument("--tile", type=int)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.what == "child":
        child(args.height, args.width, args.whole, args.crop, args.tile)
        return {}
    if args.what == "quality":
        payload = {"tile": args.tile, "quality": quality(args.data, args.tile)}
    elif args.what == "memory":
        sizes = []
        for i, mp in enumerate(args.megapixels):  # a 3:2 result of mp megapixels, from a half-size measurement
            height = int(math.sqrt(mp * 1e6 / 6))
            width = height * 3 // 2
            if i == 0:
                sizes.append((height, width, True))
            sizes.append((height, width, False))
        if args.no_whole:
            sizes = [size for size in sizes if not size[2]]
        measured = memory(sizes)
        previous = RESULTS / "tiles_memory.json"
        if args.no_whole and previous.is_file():  # add to the sizes measured before
            measured = {**json.loads(previous.read_text()).get("memory", {}), **measured}
        payload = {"memory": measured}
    else:
        payload = {"border": border(args.data)}
    save(f"tiles_{args.what}", payload)
    return payload


if __name__ == "__main__":
    main()
