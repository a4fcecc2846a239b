"""Figures drawn with Pillow only: image comparisons, per-stage PSNR curves and the LoRA
weight-update maps of the paper's Fig. 12. Every figure is written atomically as a PNG.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "curve.png"
>>> line_chart(path, {"LoRun-3": [20.0, 24.5, 26.0]}, x=[1, 2, 3], xlabel="stage", ylabel="PSNR (dB)")
>>> path.exists()
True
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .errors import InvalidArgumentError
from .io import atomic_write

__all__ = [
    "save_png",
    "to_display",
    "colorize",
    "image_grid",
    "line_chart",
    "heatmap",
    "lora_deltas",
    "lora_update_figure",
    "lora_norm_figure",
]

# Anchor colours of a perceptually ordered map (dark blue -> teal -> green -> yellow), like viridis.
_ANCHORS = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64
)
# Line colours for up to 8 series, then repeated.
_LINE_COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127)]


def _font(size: int = 12) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def save_png(path: str | os.PathLike, image: Image.Image) -> None:
    """Write ``image`` to ``path`` as PNG, atomically (no partial file if interrupted)."""
    with atomic_write(path) as f:
        image.save(f, format="PNG")


def to_display(x: torch.Tensor) -> np.ndarray:
    """A C x H x W tensor in [0, 1] as uint8 for display: gray (C = 1), RGB (C = 3), or for
    spectral cubes (C > 3) a pseudo-colour image, the band means of three equal groups shown as
    blue (first bands), green and red (last bands)."""
    x = x.detach().float().cpu().clamp(0, 1)
    if x.dim() != 3:
        raise InvalidArgumentError(f"expected a C x H x W image, got shape {tuple(x.shape)}")
    if x.shape[0] == 1:
        array = x[0].numpy()
    elif x.shape[0] == 3:
        array = x.permute(1, 2, 0).numpy()
    else:
        groups = torch.tensor_split(x, 3, dim=0)
        rgb = torch.stack([g.mean(0) if len(g) else torch.zeros_like(x[0]) for g in groups[::-1]], dim=-1)
        array = (rgb / rgb.amax().clamp_min(1e-6)).numpy()
    return (array * 255).round().astype(np.uint8)


def colorize(values: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Map a 2-D array to RGB uint8 with a viridis-like colour map (``vmin``/``vmax``: the ends)."""
    values = np.asarray(values, dtype=np.float64)
    lo = np.nanmin(values) if vmin is None else vmin
    hi = np.nanmax(values) if vmax is None else vmax
    t = np.clip((values - lo) / (hi - lo) if hi > lo else np.zeros_like(values), 0, 1)
    t = np.nan_to_num(t) * (len(_ANCHORS) - 1)
    i = np.minimum(t.astype(int), len(_ANCHORS) - 2)
    f = (t - i)[..., None]
    return ((1 - f) * _ANCHORS[i] + f * _ANCHORS[i + 1]).round().astype(np.uint8)


def image_grid(
    path: str | os.PathLike, columns: Sequence[Sequence[torch.Tensor]], labels: Sequence[str], scale: int = 1
) -> None:
    """One column per method (label above), one row per image; tiles are C x H x W tensors.

    Tiles of a row may differ in size from other rows; each is enlarged ``scale`` times.
    """
    if len(columns) != len(labels) or not columns:
        raise InvalidArgumentError(f"got {len(columns)} columns for {len(labels)} labels")
    rows = len(columns[0])
    if any(len(col) != rows for col in columns):
        raise InvalidArgumentError("every column must hold the same number of images")
    pad, top = 4, 20
    tiles = [[Image.fromarray(to_display(t)).convert("RGB") for t in col] for col in columns]
    tiles = [[t.resize((t.width * scale, t.height * scale), Image.NEAREST) for t in col] for col in tiles]
    col_w = [max(t.width for t in col) for col in tiles]
    row_h = [max(col[i].height for col in tiles) for i in range(rows)]
    canvas = Image.new("RGB", (sum(col_w) + pad * (len(col_w) + 1), top + sum(row_h) + pad * rows), "white")
    draw, font = ImageDraw.Draw(canvas), _font(12)
    x0 = pad
    for j, (col, label) in enumerate(zip(tiles, labels)):
        draw.text((x0, 4), label, fill="black", font=font)
        y0 = top
        for i, tile in enumerate(col):
            canvas.paste(tile, (x0, y0))
            y0 += row_h[i] + pad
        x0 += col_w[j] + pad
    save_png(path, canvas)


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if not hi > lo:
        lo, hi = lo - 1, hi + 1
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if raw <= m * step)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def line_chart(
    path: str | os.PathLike,
    series: dict[str, Sequence[float]],
    *,
    x: Sequence[float] | None = None,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    size: tuple[int, int] = (560, 360),
) -> None:
    """Lines with markers, axes with ticks, and a legend on the right; ``x`` defaults to 1, 2, ...
    ``size`` is the plot's size without the legend."""
    if not series or any(len(v) == 0 for v in series.values()):
        raise InvalidArgumentError("line_chart needs at least one non-empty series")
    n = max(len(v) for v in series.values())
    xs = list(x) if x is not None else list(range(1, n + 1))
    if len(xs) < n:
        raise InvalidArgumentError(f"x has {len(xs)} values for series of length {n}")
    values = [v for s in series.values() for v in s if math.isfinite(v)]
    if not values:
        raise InvalidArgumentError("line_chart: every value is NaN or infinite")
    margin = 0.05 * (max(values) - min(values) or 1.0)
    y_lo, y_hi = min(values) - margin, max(values) + margin
    y_ticks = [t for t in _nice_ticks(y_lo, y_hi) if y_lo <= t <= y_hi]
    x_ticks = _nice_ticks(min(xs), max(xs)) if len(xs) > 12 else xs[:n]
    x_lo, x_hi = min(xs), max(max(xs), min(xs) + 1e-9)
    font = _font(12)
    legend = 30 + max(int(font.getlength(name)) for name in series)
    width, height = size[0] + legend, size[1]
    left, right, top, bottom = 60, 14 + legend, 30 if title else 14, 44
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    px = lambda v: left + (v - x_lo) / (x_hi - x_lo or 1) * (width - left - right)  # noqa: E731
    py = lambda v: height - bottom - (v - y_lo) / (y_hi - y_lo or 1) * (height - top - bottom)  # noqa: E731
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for t in y_ticks:
        draw.line([left - 4, py(t), left, py(t)], fill="black")
        draw.line([left + 1, py(t), width - right - 1, py(t)], fill=(230, 230, 230))
        draw.text((left - 6, py(t)), f"{t:g}", fill="black", font=font, anchor="rm")
    for t in x_ticks:
        draw.line([px(t), height - bottom, px(t), height - bottom + 4], fill="black")
        draw.text((px(t), height - bottom + 6), f"{t:g}", fill="black", font=font, anchor="ma")
    if title:
        draw.text((width / 2, 6), title, fill="black", font=font, anchor="ma")
    draw.text((left + (width - left - right) / 2, height - 16), xlabel, fill="black", font=font, anchor="ma")
    draw.text((6, top - 2 if title else 2), ylabel, fill="black", font=font)
    for k, (name, ys) in enumerate(series.items()):
        colour = _LINE_COLOURS[k % len(_LINE_COLOURS)]
        points = [(px(a), py(b)) for a, b in zip(xs, ys) if math.isfinite(b)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for a, b in points:
            draw.ellipse([a - 3, b - 3, a + 3, b + 3], fill=colour)
        lx, ly = width - legend, top + 8 + 16 * k
        draw.line([lx, ly, lx + 20, ly], fill=colour, width=2)
        draw.text((lx + 26, ly), name, fill="black", font=font, anchor="lm")
    save_png(path, canvas)


def heatmap(
    path: str | os.PathLike,
    values: np.ndarray,
    *,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str = "",
    cell: int = 28,
) -> None:
    """A labelled heat map of a 2-D array (colour bar with its min and max below)."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(row_labels), len(col_labels)):
        raise InvalidArgumentError(f"values {values.shape} do not match {len(row_labels)} x {len(col_labels)} labels")
    font = _font(11)
    left = 10 + max(int(font.getlength(s)) for s in row_labels)
    top = (26 if title else 8) + max(int(font.getlength(s)) for s in col_labels)
    width = max(left + cell * len(col_labels) + 10, 260)
    height = top + cell * len(row_labels) + 40
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((6, 4), title, fill="black", font=font)
    grid = Image.fromarray(colorize(values)).resize((cell * len(col_labels), cell * len(row_labels)), Image.NEAREST)
    canvas.paste(grid, (left, top))
    for i, label in enumerate(row_labels):
        draw.text((left - 4, top + cell * i + cell / 2), label, fill="black", font=font, anchor="rm")
    for j, label in enumerate(col_labels):  # column labels written upwards
        text = Image.new("RGBA", (int(font.getlength(label)) + 2, 14), (255, 255, 255, 0))
        ImageDraw.Draw(text).text((0, 0), label, fill="black", font=font)
        text = text.rotate(90, expand=True)
        canvas.paste(text, (left + cell * j + (cell - text.width) // 2, top - text.height - 2), text)
    bar_y = top + cell * len(row_labels) + 10
    bar = Image.fromarray(colorize(np.linspace(0, 1, 120)[None].repeat(10, 0)))
    canvas.paste(bar, (left, bar_y))
    lo, hi = np.nanmin(values), np.nanmax(values)
    draw.text((left - 4, bar_y + 5), f"{lo:.3g}", fill="black", font=font, anchor="rm")
    draw.text((left + 124, bar_y + 5), f"{hi:.3g}", fill="black", font=font, anchor="lm")
    save_png(path, canvas)


# ---------------------------------------------------------------------- LoRA weight updates
def lora_deltas(net: torch.nn.Module) -> dict[str, list[torch.Tensor]]:
    """For a LoRun network (share="lora"): every adapted layer's weight update per stage,
    ``{layer name: [delta W of stage_0, ..., stage_{K-1}]}`` (each shaped like the layer's weight),
    from PEFT's ``get_delta_weight`` (through ``StageAdapters.delta_weights``)."""
    if getattr(net, "share", None) != "lora":
        raise InvalidArgumentError(f"LoRA updates need a LoRun network (share='lora'), got share={getattr(net, 'share', None)!r}")
    return {name: [d.float().cpu() for d in deltas] for name, deltas in net.denoisers.delta_weights().items()}


def _base_weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: w.float().cpu() for name, w in net.denoisers.base_weights().items()}


def lora_norm_figure(path: str | os.PathLike, net: torch.nn.Module) -> np.ndarray:
    """Heat map of ||delta W|| / ||W0|| (Frobenius) per stage (rows) and adapted layer (columns);
    returns the K x L array. Which stages and layers the adapters change most."""
    deltas, base = lora_deltas(net), _base_weights(net)
    layers = list(deltas)
    values = np.array(
        [[float(deltas[l][k].norm() / base[l].norm().clamp_min(1e-12)) for l in layers] for k in range(len(net.adapter_names))]
    )
    heatmap(path, values, row_labels=list(net.adapter_names), col_labels=layers, title="||dW|| / ||W0|| per stage and layer")
    return values


def _update_matrix(delta: torch.Tensor) -> np.ndarray:
    """|delta W| as an out x in matrix: for a convolution the norm over each kernel's taps."""
    if delta.dim() > 2:
        return delta.flatten(2).norm(dim=2).numpy()
    return delta.abs().numpy()


def lora_update_figure(
    path: str | os.PathLike, net: torch.nn.Module, layers: Sequence[str] | None = None, max_layers: int = 4, tile: int = 96
) -> list[str]:
    """The paper's Fig. 12: |delta W| of each stage (columns) for a few layers (rows), each update
    shown as an out x in matrix (convolutions: the norm over each kernel's taps), with one colour
    scale per layer so that stages compare.

    ``layers`` default: the ``max_layers`` layers with the largest updates. Returns the layers shown.
    """
    deltas = lora_deltas(net)
    if layers is None:
        ranked = sorted(deltas, key=lambda l: -sum(float(d.norm()) for d in deltas[l]))[:max_layers]
        layers = [l for l in deltas if l in ranked]  # in network order
    unknown = [l for l in layers if l not in deltas]
    if unknown:
        raise InvalidArgumentError(f"no adapted layer named {unknown}; adapted layers: {list(deltas)}")
    font, pad, left, top = _font(11), 6, 8, 22
    left += max(int(font.getlength(l)) for l in layers) + 8
    K = len(net.adapter_names)  # noqa: N806
    rows = []
    for layer in layers:
        mats = [_update_matrix(d) for d in deltas[layer]]
        hi = max(float(m.max()) for m in mats)
        h, w = mats[0].shape
        scale = tile / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rows.append([Image.fromarray(colorize(m, 0.0, hi)).resize(size, Image.NEAREST if scale >= 1 else Image.BOX) for m in mats])
    row_h = [r[0].height for r in rows]
    col_w = max(r[0].width for r in rows)
    canvas = Image.new("RGB", (left + K * (col_w + pad) + pad, top + sum(row_h) + pad * (len(rows) + 1)), "white")
    draw = ImageDraw.Draw(canvas)
    for k, name in enumerate(net.adapter_names):
        draw.text((left + k * (col_w + pad) + col_w / 2, 4), name, fill="black", font=font, anchor="ma")
    y = top
    for layer, tiles, h in zip(layers, rows, row_h):
        draw.text((left - 8, y + h / 2), layer, fill="black", font=font, anchor="rm")
        for k, t in enumerate(tiles):
            canvas.paste(t, (left + k * (col_w + pad), y))
        y += h + pad
    save_png(path, canvas)
    return list(layers)
