"""Image-quality metrics as restoration papers report them.

>>> import torch
>>> x = torch.full((1, 1, 4, 4), 0.5)
>>> round(float(psnr(x + 0.1, x)), 2)
20.0
"""

from __future__ import annotations

import torch

__all__ = ["psnr"]


def psnr(estimate: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image (shape N), for images in [0, data_range]."""
    mse = torch.mean((estimate - reference) ** 2, dim=tuple(range(1, reference.dim())))
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-20))
