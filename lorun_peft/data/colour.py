"""Colour images through gray networks: the two policies a task chooses from
(:attr:`lorun_peft.tasks.Task.colour`), and the conversions they need.

- ``"channels"`` (CS, deblurring, inpainting): R, G and B are measured and restored one by one,
  as three gray images of one batch; PSNR is over all three channels.
- ``"luma"`` (super-resolution, as SR papers do): the measurement's Y of YCbCr (ITU-R BT.601,
  MATLAB's ``rgb2ycbcr``) is restored by the network; its Cb and Cr come from the operator's own
  initial estimate (cubic interpolation for SR); PSNR is on Y.
- ``"none"``: the task's channels are not colours (CASSI's spectral bands); nothing is split.

>>> import torch
>>> rgb = torch.rand(2, 3, 8, 8)
>>> torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-5)
True
>>> as_gray_batch(rgb).shape, from_gray_batch(as_gray_batch(rgb)).equal(rgb)
(torch.Size([6, 1, 8, 8]), True)
"""

from __future__ import annotations

import torch

from ..errors import InvalidArgumentError

__all__ = ["POLICIES", "POLICY_TEXT", "rgb_to_ycbcr", "ycbcr_to_rgb", "as_gray_batch", "from_gray_batch", "check_policy"]

POLICIES = ("channels", "luma", "none")
# what each policy does, as the command line and the app say it
POLICY_TEXT = {
    "channels": "colour: R, G and B each measured and restored by the gray network",
    "luma": "colour: the network restores the luma (Y of YCbCr), the chroma is the operator's cubic estimate",
}

# ITU-R BT.601 in MATLAB's rgb2ycbcr form: Y in [16, 235] / 255, Cb and Cr in [16, 240] / 255
_RGB_TO_YCBCR = torch.tensor([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]) / 255.0
_OFFSET = torch.tensor([16.0, 128.0, 128.0]) / 255.0


def check_policy(policy: str) -> str:
    """``policy`` if it is one of :data:`POLICIES`, else InvalidArgumentError."""
    if policy not in POLICIES:
        raise InvalidArgumentError(f"colour policy must be one of {list(POLICIES)}, got {policy!r}")
    return policy


def _check_rgb(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InvalidArgumentError(f"{name} expects N x 3 x H x W images, got {shape}")


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """N x 3 x H x W RGB in [0, 1] -> YCbCr (BT.601, MATLAB's ``rgb2ycbcr``, divided by 255)."""
    _check_rgb(x, "rgb_to_ycbcr")
    matrix, offset = _RGB_TO_YCBCR.to(x), _OFFSET.to(x)
    return torch.einsum("ij,njhw->nihw", matrix, x) + offset.view(1, 3, 1, 1)


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`rgb_to_ycbcr` (not clamped)."""
    _check_rgb(x, "ycbcr_to_rgb")
    inverse, offset = torch.linalg.inv(_RGB_TO_YCBCR.double()).to(x), _OFFSET.to(x)
    return torch.einsum("ij,njhw->nihw", inverse, x - offset.view(1, 3, 1, 1))


def as_gray_batch(x: torch.Tensor) -> torch.Tensor:
    """N x C x ... -> (N C) x 1 x ...: each channel a gray image of one batch (R, G, B of image 0 first)."""
    return x.reshape(-1, 1, *x.shape[2:])


def from_gray_batch(x: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """The inverse of :func:`as_gray_batch`: (N C) x 1 x ... -> N x C x ..."""
    if x.shape[0] % channels or x.shape[1] != 1:
        raise InvalidArgumentError(f"expected (N * {channels}) x 1 x H x W gray images, got {tuple(x.shape)}")
    return x.reshape(-1, channels, *x.shape[2:])
