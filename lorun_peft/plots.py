"""Figures through matplotlib (Agg canvas, no global pyplot state): image comparisons with PSNR /
SSIM and a zoomed inset, per-stage PSNR curves, heat maps and the LoRA weight-update maps of the
paper's Fig. 12. Every figure has a title, labelled axes and a colour bar where colour carries a
value. Each ``draw_*`` function returns the matplotlib Figure; the writers (``image_grid``,
``line_chart``, ``stage_chart``, ``lora_update_figure``, ``lora_norm_figure``) save
it as a PNG, atomically.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "curve.png"
>>> stage_chart(path, {"LoRun-3": [20.0, 24.5, 26.0]}, title="PSNR after each stage")
>>> path.read_bytes()[:4] == b"\\x89PNG"
True
>>> [t.get_text() for t in draw_lines({"a": [1.0, 2.0]}, x=["stage_0", "stage_1"], title="t",
...                                    xlabel="stage", ylabel="PSNR (dB)").axes[0].get_xticklabels()]
['stage_0', 'stage_1']
"""

from __future__ import annotations

import math
import os
import re
import textwrap
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from PIL import Image

from .errors import InvalidArgumentError
from .persistence.atomic import atomic_write
from .metrics import psnr, ssim

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "save_png", "save_figure", "to_display",
    "inset_box", "draw_grid", "image_grid", "draw_lines", "line_chart", "draw_stages", "stage_chart", "draw_bars",
    "draw_heatmap",
    "lora_deltas", "draw_lora_updates", "lora_update_figure", "lora_norm_figure",
]

DPI = 100
# Line styles of a chart's series, in turn: curves that lie on top of each other stay told apart
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINESTYLES = ("-", "--", "-.", ":")


def _figure(width: float, height: float) -> "Figure":
    from matplotlib.figure import Figure  # imported here: commands that draw nothing skip matplotlib

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _wrap(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` points."""
    chars = max(20, int(width_in * 72 / (0.55 * fontsize)))
    keep = [re.sub(r"\$[^$]*\$", lambda m: m.group(0).replace(" ", "\0"), line) for line in text.split("\n")]
    return "\n".join(textwrap.fill(line, chars) for line in keep).replace("\0", " ")  # no break inside $math$


def _require(**texts: str) -> None:
    for name, text in texts.items():
        if not str(text).strip():
            raise InvalidArgumentError(f"every figure needs a {name}: got an empty {name}")


def save_png(path: str | os.PathLike, image: Image.Image) -> None:
    """Write ``image`` to ``path`` as PNG, atomically (no partial file if interrupted)."""
    with atomic_write(path) as f:
        image.save(f, format="PNG")


def save_figure(path: str | os.PathLike, fig: "Figure") -> None:
    """Render ``fig`` on an Agg canvas and write it to ``path`` as PNG, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=DPI)


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


# ---------------------------------------------------------------------- image comparisons
def _show(ax: "Axes", image: np.ndarray) -> None:
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


Box = tuple[float, float, float]  # (top, left, side) of a square region, fractions of the image


def inset_box(tiles: Sequence[torch.Tensor], side: float = 0.22, margin: float = 0.05) -> Box:
    """Where to zoom: the square (``side`` of the shorter image side, at least ``margin`` from the
    border) where the C x H x W ``tiles`` (the truth and the methods' outputs of one image) differ
    most, the spread max - min across the tiles averaged over the square. Returns (top, left, side)
    as fractions of the image, for :func:`draw_grid`'s ``inset``; the centre if nothing differs.

    >>> truth = torch.zeros(1, 64, 64)
    >>> truth[:, 40:56, 8:24] = torch.arange(16.0).remainder(2)  # stripes in one place, flat elsewhere
    >>> inset_box([truth, torch.zeros(1, 64, 64)], side=0.25)   # a method that lost them
    (0.625, 0.125, 0.25)
    """
    if not tiles or any(t.shape != tiles[0].shape for t in tiles) or tiles[0].dim() != 3:
        raise InvalidArgumentError("inset_box needs C x H x W tiles of one shape (at least one)")
    if not (0 < side <= 0.5 and 0 <= margin and 2 * margin + side <= 1):
        raise InvalidArgumentError(f"inset side must be in (0, 0.5] and fit inside the margins, got side {side}, margin {margin}")
    stack = torch.stack([t.detach().float().cpu().clamp(0, 1) for t in tiles])
    spread = (stack.amax(0) - stack.amin(0)).mean(0)  # H x W
    h, w = spread.shape
    s = max(4, round(side * min(h, w)))
    if s > min(h, w):
        return 0.0, 0.0, side
    scores = torch.nn.functional.avg_pool2d(spread[None, None], s, stride=1)[0, 0]  # window means, by top-left corner
    m_y, m_x = min(round(margin * h), h - s), min(round(margin * w), w - s)
    inner = torch.full_like(scores, -1.0)
    inner[m_y : h - s - m_y + 1, m_x : w - s - m_x + 1] = scores[m_y : h - s - m_y + 1, m_x : w - s - m_x + 1]
    if float(inner.max()) <= 0:  # nothing differs: the centre
        return (h - s) // 2 / h, (w - s) // 2 / w, side
    y0, x0 = divmod(int(inner.argmax()), inner.shape[1])
    return y0 / h, x0 / w, side


def _check_box(box: Any) -> None:
    if not (isinstance(box, Sequence) and len(box) == 3 and 0 <= box[0] < 1 and 0 <= box[1] < 1 and 0 < box[2] <= 0.5):
        raise InvalidArgumentError(f"inset is (top, left, side) as fractions of the tile, side <= 0.5, got {box}")


def _inset(ax: "Axes", image: np.ndarray, box: tuple[float, float, float]) -> None:
    """An inset (0.42 of the panel) of the region ``box`` = (top, left, side), fractions of the
    image, in the corner opposite the region, the region boxed and joined to it."""
    h, w = image.shape[:2]
    top, left, side = box
    s = max(4, round(side * min(h, w)))
    y0, x0 = min(round(top * h), h - s), min(round(left * w), w - s)
    corner = (0.02 if left + side / 2 > 0.5 else 0.56, 0.02 if top + side / 2 < 0.5 else 0.56)
    ins = ax.inset_axes([corner[0], corner[1], 0.42, 0.42])
    _show(ins, image)
    ins.set_xlim(x0 - 0.5, x0 + s - 0.5)
    ins.set_ylim(y0 + s - 0.5, y0 - 0.5)
    for spine in ins.spines.values():
        spine.set_edgecolor("gold")
        spine.set_linewidth(1.5)
    ax.indicate_inset_zoom(ins, edgecolor="gold", alpha=1.0)


def draw_grid(
    columns: Sequence[Sequence[torch.Tensor]],
    labels: Sequence[str],
    *,
    title: str,
    scale: float = 1,
    reference: int | None = None,
    row_labels: Sequence[str] | None = None,
    inset: Box | Sequence[Box] | None = None,
    stretch: Sequence[int] = (),
) -> "Figure":
    """One column per method (``labels`` above the first row), one row per image (``row_labels``
    on the left); tiles are C x H x W tensors in [0, 1], shown ``scale`` times their pixel size.
    With ``reference`` (the index of the ground-truth column) every other panel says its PSNR and
    SSIM against the truth of its row; ``inset`` = (top, left, side), fractions of each tile, adds
    a zoomed inset of that region to every panel, or one such box per row (e.g. from
    :func:`inset_box`, where the row's methods differ most). Columns in ``stretch`` are shown
    contrast-stretched to each tile's own range (said under the panel); metrics still use the tile
    clamped to [0, 1]."""
    _require(title=title)
    if len(columns) != len(labels) or not columns:
        raise InvalidArgumentError(f"got {len(columns)} columns for {len(labels)} labels")
    rows = len(columns[0])
    if rows == 0 or any(len(col) != rows for col in columns):
        raise InvalidArgumentError("every column must hold the same number of images (at least one)")
    if reference is not None and not 0 <= reference < len(columns):
        raise InvalidArgumentError(f"reference must index one of the {len(columns)} columns, got {reference}")
    if row_labels is not None and len(row_labels) != rows:
        raise InvalidArgumentError(f"got {len(row_labels)} row labels for {rows} rows")
    boxes = None if inset is None else [inset] * rows if inset and not isinstance(inset[0], Sequence) else list(inset)
    if boxes is not None and len(boxes) != rows:
        raise InvalidArgumentError(f"got {len(boxes)} inset boxes for {rows} rows (give one box, or one per row)")
    for box in boxes or ():
        _check_box(box)
    side = max(max(t.shape[-2:]) for col in columns for t in col) * scale / DPI
    panel = min(3.2, max(1.8, side))
    width = len(columns) * panel + 0.6
    title = _wrap(title, width, 10)
    fig = _figure(width, rows * (panel + 0.45 + 0.15 * bool(stretch)) + 0.3 + 0.2 * title.count("\n"))
    axes = fig.subplots(rows, len(columns), squeeze=False)
    for j, (col, label) in enumerate(zip(columns, labels)):
        for i, tile in enumerate(col):
            lo, hi = float(tile.min()), float(tile.max())
            shown = (tile - lo) / (hi - lo) if j in stretch and hi > lo else tile
            ax, image = axes[i][j], to_display(shown)
            _show(ax, image)
            if i == 0:
                ax.set_title(label, fontsize=9)
            if j == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[i], fontsize=9)
            if reference is not None:
                truth = columns[reference][i]
                if j == reference:
                    note = f"reference, {tile.shape[-1]} x {tile.shape[-2]} px"
                elif tile.shape != truth.shape:
                    note = "(size differs from the reference)"
                else:
                    a, b = tile.float().clamp(0, 1)[None], truth.float().clamp(0, 1)[None]
                    note = f"{float(psnr(a, b)):.2f} dB, SSIM {float(ssim(a, b)):.3f}"
                ax.set_xlabel(note + (f"\nshown stretched from [{lo:.2g}, {hi:.2g}]" if j in stretch else ""), fontsize=8)
            if boxes is not None:
                _inset(ax, image, boxes[i])
    fig.suptitle(title, fontsize=10)
    return fig


def image_grid(
    path: str | os.PathLike, columns: Sequence[Sequence[torch.Tensor]], labels: Sequence[str], scale: float = 1,
    *, title: str = "Images (columns: methods, rows: test images)", **options: Any,
) -> None:
    """Write :func:`draw_grid`'s figure to ``path`` (``options``: reference, row_labels, inset, stretch)."""
    save_figure(path, draw_grid(columns, labels, title=title, scale=scale, **options))


# ---------------------------------------------------------------------- charts
def draw_lines(
    series: dict[str, Sequence[float]],
    *,
    x: Sequence[float] | Sequence[str] | None = None,
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (640, 420),
) -> "Figure":
    """Lines with markers, a grid, and the legend below the plot; each series has its own marker
    and line style (:data:`MARKERS`, :data:`LINESTYLES`), so that lines on top of each other stay
    told apart. ``x`` defaults to 1, 2, ...; strings make one labelled tick per value (e.g. stage
    names). ``size`` in pixels."""
    _require(title=title, xlabel=xlabel, ylabel=ylabel)
    if not series or any(len(v) == 0 for v in series.values()):
        raise InvalidArgumentError("a line chart needs at least one non-empty series")
    n = max(len(v) for v in series.values())
    xs = list(x) if x is not None else list(range(1, n + 1))
    if len(xs) < n:
        raise InvalidArgumentError(f"x has {len(xs)} values for series of length {n}")
    if not any(math.isfinite(v) for s in series.values() for v in s):
        raise InvalidArgumentError("a line chart needs a finite value: every value is NaN or infinite")
    names = [str(v) for v in xs] if any(isinstance(v, str) for v in xs) else None
    positions = list(range(len(xs))) if names else [float(v) for v in xs]
    fig = _figure(size[0] / DPI, size[1] / DPI)
    ax = fig.subplots()
    _plot_series(ax, series, positions)
    _ticks(ax, positions, names, size[0])
    ax.set(title=_wrap(title, size[0] / DPI - 0.8, 12), xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=1 if max(map(len, series)) > 30 else min(3, len(series)), fontsize=8)
    return fig


def _plot_series(ax: "Axes", series: dict[str, Sequence[float]], positions: Sequence[float], labels: bool = True) -> None:
    """One line per series, each with its own marker and line style, in turn."""
    for i, (name, ys) in enumerate(series.items()):
        ax.plot(positions[: len(ys)], [v if math.isfinite(v) else np.nan for v in ys], marker=MARKERS[i % len(MARKERS)],
                linestyle=LINESTYLES[i % len(LINESTYLES)], markersize=6 - 0.5 * (i % 3), label=name if labels else None)


def _ticks(ax: "Axes", positions: Sequence[float], names: list[str] | None, width_px: int) -> None:
    if names:
        long = sum(len(s) + 1 for s in names) * 6.5 > width_px - 100
        ax.set_xticks(positions, names, rotation=45 if long else 0, ha="right" if long else "center")


def line_chart(path: str | os.PathLike, series: dict[str, Sequence[float]], **options: Any) -> None:
    """Write :func:`draw_lines`'s chart to ``path`` (``options``: x, title, xlabel, ylabel, size)."""
    save_figure(path, draw_lines(series, **options))


STAGE_AXIS = "stage (after its denoiser; named like its adapter)"


def draw_stages(series: dict[str, Sequence[float]], *, title: str, ylabel: str = "PSNR (dB)",
                reference: str | None = None, size: tuple[int, int] = (640, 420)) -> "Figure":
    """A value per stage, the stages named as the adapters are (stage_0 ... stage_{K-1}). With
    ``reference`` (one of the series) a second panel below draws every other series minus it, so
    that curves within a fraction of a dB of each other, one on top of the other above, read apart;
    the legend gives each series' value after the last stage.

    >>> fig = draw_stages({"plug-and-play": [20.0, 24.0], "LoRun-2": [20.5, 24.25]}, title="t", reference="plug-and-play")
    >>> [ax.get_ylabel() for ax in fig.axes]
    ['PSNR (dB)', 'minus plug-and-play (dB)']
    >>> [line.get_ydata().tolist() for line in fig.axes[1].get_lines()]  # the reference: its zero line
    [[0.0, 0.0], [0.5, 0.25]]
    """
    from .adapters.stages import stage_name

    _require(title=title, ylabel=ylabel)
    if reference is None or len(series) < 2:
        n = max((len(v) for v in series.values()), default=0)
        return draw_lines(series, x=[stage_name(k) for k in range(n)], title=title, xlabel=STAGE_AXIS, ylabel=ylabel, size=size)
    if reference not in series:
        raise InvalidArgumentError(f"reference {reference!r} is none of the series {list(series)}")
    if len({len(v) for v in series.values()}) != 1 or not series[reference]:
        raise InvalidArgumentError("a stage chart with a reference needs series of one length, at least one stage")
    n = len(series[reference])
    positions, names = list(range(n)), [stage_name(k) for k in range(n)]
    unit = re.search(r"\(([^)]*)\)\s*$", ylabel)
    fig = _figure(size[0] / DPI, 1.5 * size[1] / DPI)
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 2))
    labelled = {f"{name}: {ys[-1]:.2f} after the last stage": ys for name, ys in series.items()}
    _plot_series(top, labelled, positions)
    differences = {name: [a - b for a, b in zip(ys, series[reference])] for name, ys in series.items()}
    _plot_series(bottom, differences, positions, labels=False)  # the reference itself: the zero line
    for ax in (top, bottom):
        _ticks(ax, positions, names, size[0])
        ax.grid(alpha=0.3)
    top.set(title=_wrap(title, size[0] / DPI - 0.8, 12), ylabel=ylabel)
    bottom.set(xlabel=STAGE_AXIS, ylabel=f"minus {reference}" + (f" ({unit.group(1)})" if unit else ""))
    fig.legend(loc="outside lower center", ncols=1, fontsize=8)
    return fig


def stage_chart(path: str | os.PathLike, series: dict[str, Sequence[float]], *, title: str,
                ylabel: str = "PSNR (dB)", reference: str | None = None) -> None:
    """Write :func:`draw_stages`'s chart to ``path``."""
    save_figure(path, draw_stages(series, title=title, ylabel=ylabel, reference=reference))


def draw_bars(values: dict[str, float], *, title: str, xlabel: str, reference: float | None = None) -> "Figure":
    """Horizontal bars, each with its value written beside it, and an optional dashed
    ``reference`` line (e.g. 1.0 for ratios to a baseline)."""
    _require(title=title, xlabel=xlabel)
    if not values or not all(math.isfinite(v) for v in values.values()):
        raise InvalidArgumentError(f"a bar chart needs at least one value, all finite: got {values}")
    fig = _figure(7.0, 1.2 + 0.32 * len(values))
    ax = fig.subplots()
    bars = ax.barh(list(values)[::-1], list(values.values())[::-1], color="tab:blue")
    ax.bar_label(bars, fmt="%.2f", padding=3, fontsize=8)
    if reference is not None:
        ax.axvline(reference, color="tab:red", linestyle="--", label=f"reference {reference:g}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, 1.15 * max(max(values.values()), reference or 0))
    ax.set(title=_wrap(title, 5.0, 12), xlabel=xlabel)
    ax.tick_params(axis="y", labelsize=8)
    return fig


def draw_heatmap(
    values: np.ndarray, *, row_labels: Sequence[str], col_labels: Sequence[str], title: str, xlabel: str,
    ylabel: str, colorbar: str,
) -> "Figure":
    """A heat map of a 2-D array with labelled rows and columns and a colour bar titled ``colorbar``."""
    _require(title=title, xlabel=xlabel, ylabel=ylabel, colorbar=colorbar)
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(row_labels), len(col_labels)):
        raise InvalidArgumentError(f"values {values.shape} do not match {len(row_labels)} x {len(col_labels)} labels")
    longest = max((len(s) for s in col_labels), default=0)
    fig = _figure(max(5.5, 0.32 * len(col_labels) + 3.5), max(3.5, 0.3 * len(row_labels) + 1.5 + 0.06 * longest))
    ax = fig.subplots()
    image = ax.imshow(values, cmap="viridis", aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
    ax.set(title=_wrap(title, fig.get_figwidth() - 2.5, 12), xlabel=xlabel, ylabel=ylabel)
    fig.colorbar(image, ax=ax, label=colorbar)
    return fig


# ---------------------------------------------------------------------- LoRA weight updates
def lora_deltas(net: torch.nn.Module) -> dict[str, list[torch.Tensor]]:
    """For a LoRun network (share="lora"): every adapted layer's weight update per stage,
    ``{layer name: [delta W of stage_0, ..., stage_{K-1}]}`` (each shaped like the layer's weight),
    from PEFT's ``get_delta_weight`` (through ``StageAdapters.delta_weights``)."""
    if getattr(net, "share", None) != "lora":
        raise InvalidArgumentError(f"LoRA updates need a LoRun network (share='lora'), got share={getattr(net, 'share', None)!r}")
    return {name: [d.float().cpu() for d in deltas] for name, deltas in net.denoisers.delta_weights().items()}


def lora_norm_figure(path: str | os.PathLike, net: torch.nn.Module) -> np.ndarray:
    """Heat map of ||delta W|| / ||W0|| (Frobenius) per stage (rows) and adapted layer (columns);
    returns the K x L array. Which stages and layers the adapters change most."""
    deltas = lora_deltas(net)
    base = {name: w.float().cpu() for name, w in net.denoisers.base_weights().items()}
    layers = list(deltas)
    values = np.array(
        [[float(deltas[l][k].norm() / base[l].norm().clamp_min(1e-12)) for l in layers] for k in range(len(net.adapter_names))]
    )
    save_figure(path, draw_heatmap(
        values, row_labels=list(net.adapter_names), col_labels=layers,
        title=r"Relative LoRA update $\|\Delta W\|_F \,/\, \|W_0\|_F$ per stage and layer",
        xlabel="adapted layer", ylabel="stage (adapter)", colorbar=r"$\|\Delta W\|_F / \|W_0\|_F$ (ratio, no unit)"))
    return values


def _update_matrix(delta: torch.Tensor) -> np.ndarray:
    """|delta W| as an out x in matrix: for a convolution the norm over each kernel's taps."""
    if delta.dim() > 2:
        return delta.flatten(2).norm(dim=2).numpy()
    return delta.abs().numpy()


def draw_lora_updates(
    net: torch.nn.Module, layers: Sequence[str] | None = None, max_layers: int = 4
) -> tuple["Figure", list[str]]:
    """The paper's Fig. 12 and the layers it shows: |delta W| of each stage (columns, named like
    the adapters) for a few layers (rows), each update an out x in matrix (convolutions: the norm
    over each kernel's taps), one colour scale and colour bar per layer so that stages compare.
    ``layers`` default: the ``max_layers`` layers with the largest updates, in network order."""
    deltas = lora_deltas(net)
    if layers is None:
        ranked = sorted(deltas, key=lambda l: -sum(float(d.norm()) for d in deltas[l]))[:max_layers]
        layers = [l for l in deltas if l in ranked]
    unknown = [l for l in layers if l not in deltas]
    if unknown or not layers:
        raise InvalidArgumentError(f"no adapted layer named {unknown or 'at all'}; adapted layers: {list(deltas)}")
    names = list(net.adapter_names)
    fig = _figure(1.15 * len(names) + 2.6, 1.25 * len(layers) + 1.3)
    axes = fig.subplots(len(layers), len(names), squeeze=False)
    for i, layer in enumerate(layers):
        mats = [_update_matrix(d) for d in deltas[layer]]
        hi = max(float(m.max()) for m in mats) or 1.0
        conv = deltas[layer][0].dim() > 2
        for k, (ax, m) in enumerate(zip(axes[i], mats)):
            image = ax.imshow(m, cmap="viridis", vmin=0.0, vmax=hi, aspect="auto", interpolation="nearest")
            ax.set_xticks([0, m.shape[1] - 1] if i == len(layers) - 1 else [])
            ax.set_yticks([0, m.shape[0] - 1] if k == 0 else [])
            ax.tick_params(labelsize=7)
            if i == 0:
                ax.set_title(names[k], fontsize=9)
        axes[i][0].set_ylabel(f"{layer}\nout channel", fontsize=8)
        label = r"$\|\Delta W\|$ over taps" if conv else r"$|\Delta W|$"
        fig.colorbar(image, ax=list(axes[i]), label=label + "\n(weight units)", aspect=8, pad=0.01).ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("in channel", fontsize=8)
    fig.suptitle("LoRA weight updates per stage (paper Fig. 12): rows are layers, each an out x in matrix "
                 "with its own colour scale; columns are the stages' adapters", fontsize=9, wrap=True)
    return fig, list(layers)


def lora_update_figure(
    path: str | os.PathLike, net: torch.nn.Module, layers: Sequence[str] | None = None, max_layers: int = 4
) -> list[str]:
    """Write :func:`draw_lora_updates`'s figure to ``path``; returns the layers shown."""
    fig, shown = draw_lora_updates(net, layers, max_layers)
    save_figure(path, fig)
    return shown
