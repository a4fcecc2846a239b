"""Built-in images that need no download: procedurally drawn gray scenes (smooth shading,
edges, textures), reproducible from a seed. Used by the demo and the tests.

>>> images = synthetic_images(2, size=32, seed=0)
>>> tuple(images.shape), float(images.min()) >= 0, float(images.max()) <= 1
((2, 1, 32, 32), True, True)
"""

from __future__ import annotations

import math

import torch

__all__ = ["synthetic_images"]


def synthetic_images(n: int, size: int = 64, seed: int = 0, channels: int = 1) -> torch.Tensor:
    """``n`` images of ``size`` x ``size`` in [0, 1]: a shaded background, discs, bars and stripes."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = torch.empty(n, channels, size, size)
    for i in range(n):
        for c in range(channels):
            rand = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
            a, b, base = rand(3) - 0.5
            img = 0.5 + base * 0.4 + a * (xx - 0.5) + b * (yy - 0.5)
            for _ in range(int(rand(1) * 4) + 2):  # discs with soft edges
                cx, cy, r, v = rand(4)
                d = torch.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
                img = torch.where(d < 0.08 + 0.25 * r, 0.15 + 0.7 * v, img)
            for _ in range(int(rand(1) * 3) + 1):  # rotated bars
                angle, offset, width, v = rand(4)
                t = (xx - 0.5) * math.cos(math.pi * angle) + (yy - 0.5) * math.sin(math.pi * angle)
                img = torch.where((t - (offset - 0.5) * 0.8).abs() < 0.02 + 0.06 * width, v, img)
            freq, angle, amp = rand(3)  # a striped texture over everything
            t = xx * math.cos(math.pi * angle) + yy * math.sin(math.pi * angle)
            img = img + 0.08 * amp * torch.sin(2 * math.pi * (4 + 12 * freq) * t)
            out[i, c] = img
    return out.clamp(0, 1)
