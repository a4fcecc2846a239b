"""Restore any image size in bounded memory: a network run tile by tile, the tiles blended.

:class:`TiledNetwork` wraps an unfolded network, or an :class:`~lorun_peft.export.OnnxNetwork`
of a dynamic size (block CS), and has its call interface (``net(y)``, ``net(y,
return_stages=True)``, ``.operator``, ``.K``, ...), so :func:`lorun_peft.unfold.measure_and_restore`,
``evaluate`` and ``lorun restore`` take it unchanged. An image larger than one tile is restored in
overlapping tiles whose outputs are blended with raised-cosine ramps (weights summing to 1):

- an unfolded network (PyTorch) keeps its data steps whole, as they are (FFTs, block solves and
  masks over the whole image: a few image-sized arrays), and runs each stage's denoiser, where
  the memory goes, tile by tile. The operator is never cut, so every task tiles, circular
  operators too, and the result matches the whole image's to the denoiser's tolerance;
- an ONNX file runs whole: its tiles are cut from the measurement, on the block grid, with the
  operator sized to each (:func:`~lorun_peft.operators.base.fit_operator`). That is exact for
  block CS only (a circular blur or a mask would see a different image border), the only task
  ONNX exports at a dynamic size; others are refused.

**margin** (image pixels trimmed off each tile side): measured once per wrapper. Two probes (a
synthetic image and a crop of the shipped ``camera`` photograph) are restored whole and, at each
stage, its denoiser is run again on a crop with two interior edges (ONNX: the whole network on a
cropped measurement); the margin is the distance from the edge beyond which the crop's output
never differs from the whole image's by more than ``TOLERANCE`` (half a grey level of 8 bits).

**tile** (side in image pixels, margins included): by default the largest whose working memory
fits ``min(MEMORY_SHARE x (available - what the whole image needs), MAX_WORKING)``; available is
:func:`~lorun_peft.export.memory.available_memory` (``MemAvailable``, a container's limit, free
CUDA memory). Bytes per pixel are measured once on the synthetic probe, at two sizes, by tracking
every tensor allocated (a ``TorchDispatchMode``): the growth of the peak outside the denoisers
(per image pixel) and within one (per tile pixel), each times ``SAFETY``; ONNX uses
``ONNX_BYTES_PER_PIXEL``. Tiles start on multiples of the measurement cell (CS block, SR scale)
and of the denoiser's grid (a U-Net's ``2**depth``), so a tile sees the whole image's pooling grid.

>>> import torch
>>> from lorun_peft import unfold
>>> from lorun_peft.denoisers import UNet
>>> from lorun_peft.operators import BlurDownsample
>>> _ = torch.manual_seed(0)
>>> net = unfold(UNet(1, width=4, depth=1), BlurDownsample(torch.ones(3, 3), scale=2), K=2, algorithm="hqs").eval()
>>> tiled = TiledNetwork(net, tile=48, margin=8)
>>> y = net.operator.A(torch.rand(1, 1, 96, 128))
>>> tiled.layout(y)
'3 x 5 tiles of 48 x 48 image pixels (margin 8, ramp 8)'
>>> with torch.no_grad():
...     print(float((tiled(y) - net(y)).abs().max()) < TOLERANCE)
True
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..errors import InvalidArgumentError, check_int
from ..operators.base import fit_operator
from ..tasks import registered_tasks, task_named, task_of
from .memory import available_memory, may_need_tiles

__all__ = ["TOLERANCE", "TiledNetwork", "available_memory", "may_need_tiles", "tiling_refusal"]

TOLERANCE = 0.5 / 255  # the most a tile may change a denoiser output beyond the margin
MEMORY_SHARE = 0.25  # share of the available memory (less the whole image's) a default tile may use
MAX_WORKING = 2 << 30  # ... and at most this many bytes
SAFETY = 2.0  # measured bytes per pixel times this (allocator slack, library workspaces)
ONNX_BYTES_PER_PIXEL = 4096  # onnxruntime's arena cannot be tracked from here: a generous guess
RAMP = 8  # width in pixels of the raised-cosine blend between neighbouring tiles
PROBE, MAX_PROBE = 128, 512  # side of the calibration image (doubled while the margin is unresolved)


def tiling_refusal(net: nn.Module) -> str | None:
    """Why ``net`` cannot be tiled (None if it can)."""
    task = task_of(net.operator)
    if task.tiles is None:
        supported = [name for name in registered_tasks() if task_named(name).tiles]
        return (f"tiling is not supported for task {task.name!r} (operator {type(net.operator).__name__}); "
                f"supported: {', '.join(supported)}; restore the image whole")
    if not _has_stages(net) and task.tiles != "measurement":
        name = getattr(getattr(net, "path", None), "name", type(net).__name__)
        return (f"tiling {name} is not supported for task {task.name!r}: a network that runs whole tiles exactly only "
                "block CS measurements (tile the PyTorch model instead: it tiles its denoisers)")
    shape = getattr(getattr(net, "input", None), "shape", None)  # an OnnxNetwork
    if shape is not None and (getattr(net, "simulates", False) or all(isinstance(s, int) for s in shape[2:])):
        return f"{net.path.name} takes one fixed size ({tuple(shape)}); tiling needs an export of a dynamic size"
    return None


def _has_stages(net: nn.Module) -> bool:
    """Whether ``net`` exposes its stage loop (an UnfoldedNetwork): then only its denoisers are tiled."""
    return all(hasattr(net, name) for name in ("steps", "_denoise", "_initial_estimate"))


@dataclass(frozen=True)
class _Axis:
    """Tiles along one axis: (start, stop) in image pixels and each one's blending weights, which
    sum to 1 at every pixel."""

    length: int
    spans: list[tuple[int, int]]
    weights: list[torch.Tensor]


def _axis(length: int, tile: int, margin: int, unit: int) -> _Axis:
    """Tiles of ``tile`` pixels (the last up to ``unit`` longer, ending at the image's end) starting
    on multiples of ``unit``, trusted ``margin`` pixels in from every edge inside the image."""
    last = max(length - tile, 0) // unit * unit
    if last == 0:
        return _Axis(length, [(0, length)], [torch.ones(length, dtype=torch.float64)])
    stride = (tile - 2 * margin - RAMP) // unit * unit
    n = -(-last // stride) + 1
    step = -(-last // ((n - 1) * unit)) * unit
    starts = sorted({min(i * step, last) for i in range(n)})
    spans = [(a, a + tile) for a in starts[:-1]] + [(last, length)]
    rise = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(RAMP, dtype=torch.float64) + 0.5) / RAMP)
    raw, total = [], torch.zeros(length, dtype=torch.float64)
    for a, b in spans:
        w = torch.ones(b - a, dtype=torch.float64)
        if a > 0:
            w[:margin] = 0
            w[margin:margin + RAMP] = rise
        if b < length:
            w[b - a - margin:] = 0
            w[b - a - margin - RAMP:b - a - margin] = rise.flip(0)
        raw.append(w)
        total[a:b] += w
    return _Axis(length, spans, [w / total[a:b] for (a, b), w in zip(spans, raw)])


class TiledNetwork(nn.Module):
    """``net`` restoring any size tile by tile; see the module docstring.

    Args:
        net: an unfolded network, or an ``OnnxNetwork`` of a dynamic size (block CS).
        tile: tile side in image pixels, margins included, rounded down to a multiple of
            :attr:`unit` (default: from the available memory).
        margin: pixels trimmed off each tile side (default: measured, see the module docstring).
        progress: a tqdm bar over the tiles (default: when stderr is a terminal and there are several).
        memory: bytes the restoration may use (default: :func:`available_memory`).

    Every other attribute (``adapter_names``, ``config``, ``unfold_config``, ...) is the wrapped
    network's. Tiles run without gradients. Nothing is written anywhere; an interrupted call
    leaves the operator as it was.
    """

    def __init__(self, net: nn.Module, tile: int | None = None, margin: int | None = None,
                 progress: bool | None = None, *, memory: int | None = None) -> None:
        super().__init__()
        refusal = tiling_refusal(net)
        if refusal:
            raise InvalidArgumentError(refusal)
        self.net = net
        self.tile = None if tile is None else check_int(tile, "tile")
        self.margin = None if margin is None else check_int(margin, "margin", 0)
        self.progress = progress
        self.memory = None if memory is None else check_int(memory, "memory")
        self._measured: dict[str, Any] = {}

    operator = property(lambda self: self.net.operator, doc="the wrapped network's operator")
    K = property(lambda self: self.net.K, doc="the number of stages")

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            net = self.__dict__.get("_modules", {}).get("net")
            if name.startswith("_") or net is None:
                raise
            return getattr(net, name)

    # ---- geometry and calibration -------------------------------------------------------------
    @property
    def cell(self) -> int:
        """Image pixels per measurement pixel (the task's size multiple: CS's block, SR's scale, else 1)."""
        return int(task_of(self.operator).size_multiple(self.operator)[0])

    @property
    def unit(self) -> int:
        """What tile starts are multiples of: the measurement cell and the denoiser's grid."""
        return math.lcm(self.cell, _grid(self.net))

    def image_size(self, y: torch.Tensor) -> tuple[int, int]:
        """The size of the image ``y`` restores to."""
        size = getattr(self.operator, "image_size", None)
        if size and (-(-size[0] // self.cell), -(-size[1] // self.cell)) == tuple(y.shape[-2:]):
            return int(size[0]), int(size[1])
        given = task_of(self.operator).measurement_size(self.operator, y)
        return (int(given[0]), int(given[1])) if given else (y.shape[-2] * self.cell, y.shape[-1] * self.cell)

    def receptive_margin(self) -> int:
        """The margin: ``margin=``, else measured once (module docstring)."""
        if self.margin is not None:
            return self.margin
        if "margin" not in self._measured:
            self._measured["margin"] = _measure_margin(self.net, self.cell, self.unit)
        return self._measured["margin"]

    def smallest_tile(self) -> int:
        """The smallest tile that keeps a blended core of one unit between its margins."""
        unit = self.unit
        return -(-(2 * self.receptive_margin() + RAMP + unit) // unit) * unit

    def bytes_per_pixel(self, channels: int = 1) -> tuple[float, float]:
        """Estimated bytes (``SAFETY`` included) per image pixel of the whole image, and per pixel
        of a tile, for one image."""
        if "bytes" not in self._measured:
            self._measured["bytes"] = _measure_bytes(self.net, self.unit, channels)
        return self._measured["bytes"]

    def plan(self, y: torch.Tensor, return_stages: bool = False) -> tuple[_Axis, _Axis]:
        """The tiles along each axis, after checking the tile and the memory; nothing is run."""
        if not isinstance(y, torch.Tensor) or y.dim() != 4:
            got = getattr(y, "shape", type(y).__name__)
            raise InvalidArgumentError(f"y must be a tensor shaped (N, C, h, w), got {got}")
        H, W = self.image_size(y)
        n, channels, unit = y.shape[0], int(getattr(self.operator, "channels", None) or 1), self.unit
        image, per_tile = (n * b for b in self.bytes_per_pixel(channels))
        whole = H * W * (image + n * channels * y.element_size() * (1 + (self.K if return_stages else 0)))
        memory = self.memory or available_memory(y.device)
        if self.tile is not None:
            tile = max(self.tile // unit, 1) * unit
        else:
            budget = min(MEMORY_SHARE * (memory - whole), MAX_WORKING)
            tile = int(math.sqrt(max(budget, 0) / per_tile)) // unit * unit
        single = H <= tile and W <= tile
        if not single and tile < self.smallest_tile():
            if self.tile is not None:
                raise InvalidArgumentError(
                    f"tile {self.tile} is too small for this network: its receptive field needs a margin of "
                    f"{self.receptive_margin()} px on each side; "
                    f"the smallest tile that works is {self.smallest_tile()}")
            tile = self.smallest_tile()
        working = (H * W if single else min(tile + unit, H) * min(tile + unit, W)) * per_tile
        if whole + working > memory:
            fits = int(math.sqrt(max(memory - whole, 0) / per_tile)) // unit * unit - unit
            say = (f"tile={fits} would fit" if fits >= self.smallest_tile() and fits < tile
                   else "the image is too large for the memory even tiled")
            raise InvalidArgumentError(
                f"restoring {H} x {W} with tile {tile} needs about {_size(whole + working)} (the whole image "
                f"{_size(whole)}, a tile {_size(working)}), more than the {_size(memory)} available; {say}")
        margin = 0 if single else self.receptive_margin()
        return _axis(H, tile, margin, unit), _axis(W, tile, margin, unit)

    def layout(self, y: torch.Tensor) -> str:
        """The tiles :meth:`forward` would use for ``y``, in words."""
        rows, cols = self.plan(y)
        (r0, r1), (c0, c1) = rows.spans[0], cols.spans[0]
        return (f"{len(rows.spans)} x {len(cols.spans)} tiles of {r1 - r0} x {c1 - c0} image pixels "
                f"(margin {self.receptive_margin()}, ramp {RAMP})")

    # ---- the restoration ----------------------------------------------------------------------
    def forward(self, y: torch.Tensor, return_stages: bool = False) -> Any:
        """Restore from measurement ``y`` (in one call if it fits one tile); ``return_stages`` as the network's."""
        rows, cols = self.plan(y, return_stages)
        tiles = len(rows.spans) * len(cols.spans)
        if tiles == 1:
            return self.net(y, return_stages=return_stages)
        net = self.net
        from tqdm.auto import tqdm

        staged = _has_stages(net)
        show = self.progress if self.progress is not None else sys.stderr.isatty()
        with torch.no_grad(), tqdm(total=tiles * (self.K if staged else 1), disable=not show, desc="tiles",
                                   unit="tile", leave=False) as bar:
            if not staged:
                outputs = _blend(functools.partial(self._run_whole, y, return_stages=return_stages), rows, cols, bar)
                return (outputs[0], outputs[1:]) if return_stages else outputs[0]
            x, stages = net._initial_estimate(y), []
            for k in range(self.K):
                z = net.steps(k, x, y, net.operator)  # the data step, whole
                del x
                x = _blend(functools.partial(_denoise_tile, net, k, z), rows, cols, bar)[0]
                del z
                if return_stages:
                    stages.append(x)
        return (x, stages) if return_stages else x

    def _run_whole(self, y: torch.Tensor, r0: int, r1: int, c0: int, c1: int, *,
                   return_stages: bool) -> list[torch.Tensor]:
        """The wrapped network on the measurement of image pixels [r0, r1) x [c0, c1), the operator sized to it."""
        f = self.cell
        with fit_operator(self.operator, (r1 - r0, c1 - c0)):
            out = self.net(y[..., r0 // f:-(-r1 // f), c0 // f:-(-c1 // f)], return_stages=return_stages)
        return [out[0], *out[1]] if return_stages else [out]

    def extra_repr(self) -> str:
        return f"tile={self.tile or 'auto'}, margin={'auto' if self.margin is None else self.margin}"


def _denoise_tile(net: nn.Module, k: int, z: torch.Tensor, r0: int, r1: int, c0: int, c1: int) -> list[torch.Tensor]:
    """Stage k's denoiser on image pixels [r0, r1) x [c0, c1) of ``z``."""
    return [net._denoise(k, z[..., r0:r1, c0:c1])]


def _blend(run: Callable[[int, int, int, int], list[torch.Tensor]], rows: _Axis, cols: _Axis,
           bar: Any) -> list[torch.Tensor]:
    """Sum of ``run(tile)``'s outputs weighted by the tiles' blending windows."""
    outputs: list[torch.Tensor] = []
    for (r0, r1), wr in zip(rows.spans, rows.weights):
        for (c0, c1), wc in zip(cols.spans, cols.weights):
            parts = run(r0, r1, c0, c1)
            if not outputs:
                outputs = [p.new_zeros(*p.shape[:-2], rows.length, cols.length) for p in parts]
            weight = (wr[:, None] * wc[None, :]).to(parts[0])
            for out, part in zip(outputs, parts):
                out[..., r0:r1, c0:c1] += part * weight
            bar.update()
    return outputs


def _size(n: float) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**28 else f"{n / 2**20:.0f} MB"


def _grid(net: nn.Module) -> int:
    """What the denoiser's input sides should be multiples of (2**depth, the window), else 1."""
    spec = getattr(net, "config", None)
    configs = [(spec.get("denoiser") or {}).get("config") or {}] if isinstance(spec, dict) else [
        m.config for m in net.modules() if isinstance(getattr(m, "config", None), dict)]
    grid = 1
    for config in configs:
        if isinstance(config.get("depth"), int):
            grid = math.lcm(grid, 2 ** config["depth"])
        if isinstance(config.get("window_size"), int):
            grid = math.lcm(grid, config["window_size"])
    return grid


# ---- calibration on probes ---------------------------------------------------------------------
def _probes(side: int, channels: int = 1) -> list[torch.Tensor]:
    """Clean side x side images to calibrate on: a synthetic one (shaded discs, bars, stripes) and,
    up to 256 pixels, a crop of the shipped ``camera`` photograph (hard edges, fine texture)."""
    from ..data.images import PHOTOGRAPHS, photographs, synthetic_images

    found = [synthetic_images(1, side, seed=0, channels=channels)]
    if side <= 256 and "camera" in PHOTOGRAPHS and channels in (1, 3):
        found.append(photographs(["camera"], channels=channels, size=side)[0][None])
    return found


@contextlib.contextmanager
def _probe(net: nn.Module, x: torch.Tensor) -> Iterator[torch.Tensor]:
    """The measurement of the clean image ``x``, with the operator sized to it (a fixed inpainting
    mask is swapped for a random one of its size meanwhile: the task's ``sized_for_probe``), the
    network in eval mode."""
    operator = net.operator
    reference = next(iter(net.parameters()))
    x = x.to(device=reference.device, dtype=reference.dtype)
    side = x.shape[-1]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), task_of(operator).sized_for_probe(operator, (side, side)):
            yield operator.A(x)
    finally:
        net.train(was_training)


def _measure_margin(net: nn.Module, cell: int, unit: int) -> int:
    """The distance from a tile's edge beyond which its outputs stay within TOLERANCE of the whole
    image's (the largest difference over a probe, over every stage), on probes grown until resolved."""
    side = -(-max(PROBE, 4 * unit) // unit) * unit
    while True:
        edge = max(side // 4 // unit, 1) * unit  # the crop drops the first `edge` rows and columns
        worst = torch.zeros(side - edge, dtype=torch.float64)
        for clean in _probes(side):
            with _probe(net, clean) as y:
                if _has_stages(net):
                    x = net._initial_estimate(y)
                    for k in range(net.K):
                        z = net.steps(k, x, y, net.operator)
                        x = net._denoise(k, z)
                        part = net._denoise(k, z[..., edge:, edge:])
                        worst = torch.maximum(worst, _profile(part, x[..., edge:, edge:]))
                else:
                    with fit_operator(net.operator, (side - edge, side - edge)):
                        part = net(y[..., edge // cell:, edge // cell:])
                    worst = torch.maximum(worst, _profile(part, net(y)[..., edge:, edge:]))
        within = (worst <= TOLERANCE).nonzero()
        if len(within) and int(within[0]) <= (side - edge) // 2:
            return int(within[0])
        if side * 2 > MAX_PROBE:
            raise InvalidArgumentError(
                f"this network's tiles differ from the whole image by more than {TOLERANCE:.1e} even "
                f"{(side - edge) // 2} px from their edge; pass margin= to tile it anyway")
        side *= 2


def _profile(part: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    """The largest |part - whole| at each distance r or more from the top and left edges."""
    diff = (part - whole).abs().double().flatten(0, -3).amax(0).cpu()
    i = torch.arange(diff.shape[-2])[:, None].expand_as(diff)
    j = torch.arange(diff.shape[-1])[None, :].expand_as(diff)
    distance = torch.minimum(i, j).flatten()
    worst = torch.zeros(diff.shape[-2], dtype=torch.float64).scatter_reduce(0, distance, diff.flatten(), "amax")
    return worst.flip(0).cummax(0).values.flip(0)


class _LiveBytes(TorchDispatchMode):
    """Tracks the bytes of the tensors allocated while it is active and still alive: the peak
    outside :meth:`inside` blocks, and the largest rise within one."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: dict[int, list[int]] = {}  # storage address: [bytes, live tensors]
        self.now = self.peak = self.rise = 0

    def _free(self, key: int) -> None:
        entry = self.refs[key]
        entry[1] -= 1
        if not entry[1]:
            self.now -= entry[0]
            del self.refs[key]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr():
                key = t.untyped_storage().data_ptr()
                if key not in self.refs:
                    self.refs[key] = [t.untyped_storage().nbytes(), 0]
                    self.now += self.refs[key][0]
                    self.peak = max(self.peak, self.now)
                self.refs[key][1] += 1
                weakref.finalize(t, self._free, key)
        return out

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        outer, start = self.peak, self.now
        self.peak = start
        try:
            yield
        finally:
            self.rise = max(self.rise, self.peak - start)
            self.peak = max(outer, start)


def _measure_bytes(net: nn.Module, unit: int, channels: int) -> tuple[float, float]:
    """Bytes per pixel of a restoration outside the denoisers and within one (the peaks' growth
    between two probe sizes, so fixed costs such as merged weights do not count), times SAFETY."""
    if not _has_stages(net):
        return 0.0, float(ONNX_BYTES_PER_PIXEL)
    inference = getattr(net, "inference", None)  # an engine outside torch (onnxruntime) is not seen: use
    if inference is not None:                    # the PyTorch path, which holds the same activations
        net.inference = "merged"
    peaks = []
    try:
        for side in (-(-PROBE // unit) * unit, -(-2 * PROBE // unit) * unit):
            tracker = _LiveBytes()
            with _probe(net, _probes(side, channels)[0]) as y, tracker:
                x = net._initial_estimate(y)
                for k in range(net.K):
                    z = net.steps(k, x, y, net.operator)
                    del x
                    with tracker.inside():
                        x = net._denoise(k, z)
                    del z
                del x
            peaks.append((side**2, tracker.peak, tracker.rise))
    finally:
        if inference is not None:
            net.inference = inference
    (small, *a), (large, *b) = peaks
    return tuple(SAFETY * max((q - p) / (large - small), p / small / 2) for p, q in zip(a, b))
