"""Image-quality metrics as restoration papers report them, and a per-image results table.

- ``psnr``: 10 log10(range^2 / MSE) per image, the MSE over all channels and pixels.
- ``ssim``: Wang et al. 2004 with an 11 x 11 Gaussian window (sigma 1.5), K1 = 0.01,
  K2 = 0.03, population (co)variances, averaged over the valid (unpadded) window positions and
  over channels; equal to ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=1)`` (checked in tests/test_metrics.py).
- ``rgb_to_y``: the ITU-R BT.601 luma of MATLAB's ``rgb2ycbcr``, on which SR papers report.
- ``band_psnr`` / ``ssim`` per band: spectral cubes (CASSI papers average over the bands).

>>> import torch
>>> x = torch.full((1, 1, 16, 16), 0.5)
>>> round(float(psnr(x + 0.1, x)), 2)
20.0
>>> float(ssim(x, x))
1.0
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .errors import InvalidArgumentError

__all__ = ["psnr", "ssim", "band_psnr", "rgb_to_y", "shave", "gaussian_window", "MetricTable"]


def _check_pair(estimate: torch.Tensor, reference: torch.Tensor) -> None:
    if not isinstance(estimate, torch.Tensor) or not isinstance(reference, torch.Tensor):
        raise InvalidArgumentError("estimate and reference must be tensors")
    if estimate.shape != reference.shape:
        raise InvalidArgumentError(f"estimate {tuple(estimate.shape)} and reference {tuple(reference.shape)} differ in shape")
    if reference.dim() < 2:
        raise InvalidArgumentError(f"expected N x ... images, got shape {tuple(reference.shape)}")


def psnr(estimate: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image (shape N), for images in [0, data_range]."""
    mse = torch.mean((estimate - reference) ** 2, dim=tuple(range(1, reference.dim())))
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-20))


def band_psnr(estimate: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR of each band (channel) of N x B x H x W cubes, averaged over the bands (shape N),
    as CASSI papers (TSA-Net, MST, DAUHST) report it."""
    _check_pair(estimate, reference)
    mse = torch.mean((estimate - reference) ** 2, dim=(-2, -1))  # N x B
    return (10 * torch.log10(data_range**2 / mse.clamp_min(1e-20))).mean(dim=1)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """A ``size`` x ``size`` Gaussian window summing to 1 (float64)."""
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(
    estimate: torch.Tensor,
    reference: torch.Tensor,
    data_range: float = 1.0,
    *,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    per_channel: bool = False,
) -> torch.Tensor:
    """Structural similarity per image (shape N; N x C with ``per_channel``) of N x C x H x W images.

    Computed in float64 over the window positions that fit inside the image (no padding), each
    channel separately, then averaged over channels. H and W must be at least ``window_size``.
    """
    _check_pair(estimate, reference)
    if reference.dim() != 4:
        raise InvalidArgumentError(f"ssim expects N x C x H x W images, got shape {tuple(reference.shape)}")
    n, c, h, w = reference.shape
    if h < window_size or w < window_size:
        raise InvalidArgumentError(f"ssim needs images of at least {window_size} x {window_size}, got {h} x {w}")
    window = gaussian_window(window_size, sigma).to(reference.device)[None, None]
    x = estimate.detach().to(torch.float64).reshape(n * c, 1, h, w)
    y = reference.detach().to(torch.float64).reshape(n * c, 1, h, w)
    mean = lambda v: F.conv2d(v, window)  # noqa: E731 - weighted local mean over valid positions
    mu_x, mu_y = mean(x), mean(y)
    var_x = mean(x * x) - mu_x**2
    var_y = mean(y * y) - mu_y**2
    cov = mean(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    per = index.mean(dim=(-2, -1)).view(n, c).to(reference.dtype if reference.is_floating_point() else torch.float32)
    return per if per_channel else per.mean(dim=1)


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """Luma Y of N x 3 x H x W RGB images in [0, 1] (ITU-R BT.601, MATLAB ``rgb2ycbcr``): N x 1 x H x W
    in [16/255, 235/255]. SR papers compute PSNR/SSIM on this channel.

    >>> import torch
    >>> round(float(rgb_to_y(torch.ones(1, 3, 1, 1))) * 255, 3)
    235.0
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise InvalidArgumentError(f"rgb_to_y expects N x 3 x H x W images, got shape {tuple(x.shape)}")
    weights = torch.tensor([65.481, 128.553, 24.966], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (16.0 + (x * weights).sum(dim=1, keepdim=True)) / 255.0


def shave(x: torch.Tensor, border: int) -> torch.Tensor:
    """Drop ``border`` pixels on every side (SR papers shave ``scale`` pixels before measuring)."""
    if border < 0:
        raise InvalidArgumentError(f"border must be >= 0, got {border}")
    return x[..., border : x.shape[-2] - border, border : x.shape[-1] - border] if border else x


@dataclass
class MetricTable:
    """Per-image metric rows plus their mean, printable and exportable as CSV / JSON.

    >>> table = MetricTable(["psnr", "ssim"])
    >>> table.add("a.png", psnr=30.0, ssim=0.9)
    >>> table.add("b.png", psnr=32.0, ssim=0.8)
    >>> table.mean()["psnr"]
    31.0
    >>> print(table.to_csv().splitlines()[-1])
    mean,31.0000,0.8500
    """

    columns: list[str]
    rows: list[tuple[str, dict[str, float]]] = field(default_factory=list)

    def add(self, name: str, **values: float) -> None:
        missing = set(self.columns) - set(values)
        if missing:
            raise InvalidArgumentError(f"row {name!r} lacks {sorted(missing)}")
        self.rows.append((name, {k: float(values[k]) for k in self.columns}))

    def mean(self) -> dict[str, float]:
        """The mean of every column over the rows (NaN when there are none)."""
        if not self.rows:
            return {k: math.nan for k in self.columns}
        return {k: sum(r[k] for _, r in self.rows) / len(self.rows) for k in self.columns}

    def _lines(self) -> list[tuple[str, dict[str, float]]]:
        return [*self.rows, ("mean", self.mean())]

    def __str__(self) -> str:
        width = max([len(name) for name, _ in self.rows] + [5])
        header = f"{'image':<{width}}" + "".join(f"  {k:>10}" for k in self.columns)
        body = [f"{name:<{width}}" + "".join(f"  {_fmt(k, v[k]):>10}" for k in self.columns) for name, v in self._lines()]
        return "\n".join([header, *body[:-1], "-" * len(header), body[-1]])

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["image", *self.columns])
        for name, values in self._lines():
            writer.writerow([name, *(f"{values[k]:.4f}" for k in self.columns)])
        return out.getvalue()

    def to_json(self) -> str:
        return json.dumps(
            {"images": [{"image": n, **v} for n, v in self.rows], "mean": self.mean()}, indent=2, allow_nan=True
        )


def _fmt(column: str, value: float) -> str:
    return f"{value:.4f}" if "ssim" in column else f"{value:.2f}"
