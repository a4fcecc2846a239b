"""Measure a network: degrade images with its own operator, restore them, and report PSNR / SSIM
per image (of the restoration and of the initial estimate) and the mean PSNR after each stage.

>>> import torch
>>> from torch import nn
>>> from lorun_peft import unfold
>>> from lorun_peft.operators import BlockCS
>>> net = unfold(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1)), BlockCS(0.5, block=8), K=2)
>>> sorted(evaluate(net, torch.rand(2, 1, 16, 16)).mean())
['psnr', 'ssim', 'x0_psnr', 'x0_ssim']
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Sequence

import torch
from tqdm.auto import tqdm

from ..errors import InvalidArgumentError
from ..metrics import MetricTable, band_psnr, psnr, rgb_to_y, shave, ssim
from ..unfold import measure_and_restore
from .batches import Images, image_list

__all__ = ["evaluate", "Evaluation", "restore"]


@dataclass
class Evaluation:
    """Per-image metrics of the restoration (psnr, ssim) and of the initial estimate x0
    (x0_psnr, x0_ssim), the mean PSNR after each stage, and optionally the outputs."""

    table: MetricTable
    stage_psnr: list[float]
    restored: list[torch.Tensor] = field(default_factory=list)
    initial: list[torch.Tensor] = field(default_factory=list)

    def mean(self) -> dict[str, float]:
        return self.table.mean()

    def __str__(self) -> str:
        return str(self.table)


@torch.no_grad()
def evaluate(
    net: torch.nn.Module,
    images: Images,
    *,
    names: Sequence[str] | None = None,
    noise_sigma: float = 0.0,
    seed: int = 0,
    y_channel: bool = False,
    border: int = 0,
    keep_outputs: bool = False,
    progress: bool | None = None,
    stages: bool = True,
) -> Evaluation:
    """Degrade each image with the network's operator, restore it, and measure.

    Images may have different sizes (each must fit the operator: SR needs sides divisible by
    the scale, CASSI the mask's size). Metrics: RGB images on the luma channel with
    ``y_channel`` (SR papers), ``border`` pixels shaved; images with more than 3 channels
    (spectral cubes) use the band-averaged PSNR. SSIM is NaN for images under 11 x 11. A gray
    network restores colour images by its task's colour policy (:func:`lorun_peft.unfold.measure_and_restore`).
    ``progress``: a bar over the images (default: when stderr is a terminal and there are several).
    ``stages=False``: no per-stage PSNR (``stage_psnr`` empty), and no stage outputs held in memory.

    >>> import torch
    >>> from torch import nn
    >>> from lorun_peft import unfold
    >>> from lorun_peft.operators import BlockCS
    >>> net = unfold(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1)), BlockCS(0.5, block=8), K=2)
    >>> result = evaluate(net, torch.rand(2, 1, 16, 16))
    >>> [name for name, _ in result.table.rows], len(result.stage_psnr)
    (['0', '1'], 2)
    """
    items = image_list(images, "images")
    if names is None:
        names = getattr(images, "names", None) or [str(i) for i in range(len(items))]
    if len(names) != len(items):
        raise InvalidArgumentError(f"names has {len(names)} entries for {len(items)} images")
    was_training = net.training
    net.eval()
    reference = next(net.parameters())
    generator = torch.Generator().manual_seed(seed)
    table = MetricTable(["x0_psnr", "x0_ssim", "psnr", "ssim"])
    stage_sums: list[float] = []
    result = Evaluation(table, [])
    show = progress if progress is not None else len(items) > 1 and sys.stderr.isatty()
    try:
        for name, x in tqdm(list(zip(names, items)), desc="images", unit="image", disable=not show, leave=False):
            x = x.to(device=reference.device, dtype=reference.dtype)[None]
            x0, x_hat, outputs = restore(net, x, noise_sigma, generator, stages=stages)
            measure = lambda a: _measure(a, x, y_channel, border)  # noqa: E731
            p0, s0 = measure(x0)
            p, s = measure(x_hat)
            table.add(name, x0_psnr=p0, x0_ssim=s0, psnr=p, ssim=s)
            per_stage = [_measure_psnr(stage, x, y_channel, border) for stage in outputs]
            stage_sums = [a + b for a, b in zip(stage_sums, per_stage)] if stage_sums else per_stage
            if keep_outputs:
                result.restored.append(x_hat[0].cpu())
                result.initial.append(x0[0].cpu())
    finally:
        net.train(was_training)
    result.stage_psnr = [v / len(items) for v in stage_sums]
    return result


def _prepare_pair(
    estimate: torch.Tensor, reference: torch.Tensor, y_channel: bool, border: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if y_channel and reference.shape[1] == 3:
        estimate, reference = rgb_to_y(estimate), rgb_to_y(reference)
    return shave(estimate, border), shave(reference, border)


def _measure_psnr(estimate: torch.Tensor, reference: torch.Tensor, y_channel: bool = False, border: int = 0) -> float:
    """PSNR of one image pair as ``evaluate`` reports it (band-averaged for spectral cubes)."""
    estimate, reference = _prepare_pair(estimate, reference, y_channel, border)
    metric = band_psnr if reference.shape[1] > 3 else psnr
    return float(metric(estimate, reference)[0])


def _measure(estimate: torch.Tensor, reference: torch.Tensor, y_channel: bool, border: int) -> tuple[float, float]:
    p = _measure_psnr(estimate, reference, y_channel, border)
    estimate, reference = _prepare_pair(estimate, reference, y_channel, border)
    s = float(ssim(estimate, reference)[0]) if min(reference.shape[-2:]) >= 11 else math.nan
    return p, s


def restore(
    net: torch.nn.Module, x: torch.Tensor, noise_sigma: float, generator: torch.Generator, stages: bool = True
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Simulate y for one image batch x, then (x0, x_hat, per-stage outputs), all clamped to [0, 1]
    (:func:`lorun_peft.unfold.measure_and_restore`, clamped)."""
    _, x0, x_hat, stages = measure_and_restore(net, x, noise_sigma, generator, stages=stages)
    return x0.clamp(0, 1), x_hat.clamp(0, 1), [s.clamp(0, 1) for s in stages]
