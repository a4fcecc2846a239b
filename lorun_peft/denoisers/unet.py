"""A small U-Net denoiser after the LoRun paper's appendix (Fig. 14), built for LoRA adaptation.

Every weight layer is an ``nn.Conv2d`` (groups=1), so a PEFT LoRA adapter can target each one:
down-sampling is max pooling (no weights) and up-sampling is interpolation followed by a 3x3
``Conv2d`` (``ConvTranspose2d`` cannot be a PEFT LoRA target). There is no normalisation layer
(BatchNorm running statistics would be shared by all unfolding stages).

>>> import torch
>>> from lorun_peft.denoisers import UNet
>>> net = UNet(1, width=8, depth=2)
>>> net(torch.rand(2, 1, 17, 23), sigma=0.1).shape
torch.Size([2, 1, 17, 23])

The helpers it shares with the Transformer (the input check, the noise-level map, padding to a
multiple, ``DenoiserConfig``) are in :mod:`lorun_peft.denoisers.base`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lorun_peft.denoisers.base import (
    Buildable,
    DenoiserConfig,
    Sigma,
    check_flags,
    check_input,
    noise_level_map,
    pad_to_multiple,
)
from lorun_peft.errors import InvalidArgumentError, check_int

__all__ = ["UNet"]

def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidArgumentError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}

# --------------------------------------------------------------------------------------------
# U-Net
# --------------------------------------------------------------------------------------------


class DoubleConv(nn.Module):
    """conv3x3 - act - conv3x3 - act."""

    def __init__(self, in_channels: int, out_channels: int, act: str, bias: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)
        self.act1 = _ACTIVATIONS[act]()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias)
        self.act2 = _ACTIVATIONS[act]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.conv2(self.act1(self.conv1(x))))


class Up(nn.Module):
    """Interpolate x2 then conv3x3 halving the channels (a LoRA-friendly transposed conv)."""

    def __init__(self, in_channels: int, out_channels: int, mode: str, bias: bool) -> None:
        super().__init__()
        self.mode = mode
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "nearest":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        else:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.conv(x)


class UNet(Buildable, nn.Module):
    """U-Net denoiser: ``D(x, sigma) = x + conv_out(U(x, noise map))``.

    Channels are ``width * 2**i`` at level ``i`` (``depth`` max-pool down-samplings, so level
    ``depth`` is the bottleneck); the decoder up-samples by interpolation + Conv2d, concatenates
    the skip connection and applies a double convolution. Inputs of any H x W are padded to a
    multiple of ``2**depth`` and cropped back.

    Args:
        in_channels: channels of the input image (1 gray, 3 RGB, 28 CASSI bands, ...).
        out_channels: output channels; default ``in_channels``.
        width: channels of the first level.
        depth: number of down-samplings (0 gives a plain double convolution).
        noise_level: if True, ``sigma`` is fed as an extra constant input channel;
            if False, ``sigma`` is ignored.
        residual: add the input to the output (needs ``out_channels == in_channels``).
        upsample: ``"bilinear"`` or ``"nearest"`` interpolation before each up-convolution.
        act: ``"relu"``, ``"leaky_relu"``, ``"gelu"`` or ``"silu"``.
        bias: use biases in the convolutions.

    Attributes:
        config: the constructor arguments, a JSON-able dict; ``net.config()`` returns a copy.

    Parameter counts (gray input, noise_level=True): default (width 16, depth 2) 129,697;
    preset ``"paper-cs"`` (width 32, depth 2) 517,441, about the paper's CS U-Net Block-9
    (4.65M) divided by 9 stages.

    >>> import torch
    >>> net = UNet.preset("paper-cs")
    >>> sum(p.numel() for p in net.parameters())
    517441
    >>> UNet(3)(torch.rand(1, 3, 33, 33), sigma=torch.tensor([0.05])).shape
    torch.Size([1, 3, 33, 33])
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper-cs": {"in_channels": 1, "width": 32, "depth": 2},
    }

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        width: int = 16,
        depth: int = 2,
        noise_level: bool = True,
        residual: bool = True,
        upsample: str = "bilinear",
        act: str = "relu",
        bias: bool = True,
    ) -> None:
        super().__init__()
        in_channels = check_int(in_channels, "in_channels", 1)
        out_channels = in_channels if out_channels is None else out_channels
        out_channels = check_int(out_channels, "out_channels", 1)
        width = check_int(width, "width", 1)
        depth = check_int(depth, "depth", 0)
        _check_choice("upsample", upsample, ("bilinear", "nearest"))
        _check_choice("act", act, tuple(_ACTIVATIONS))
        check_flags(in_channels, out_channels, noise_level=noise_level, residual=residual, bias=bias)
        # A dict that can be called: see DenoiserConfig (PEFT reads model.config).
        self.config = DenoiserConfig(
            in_channels=in_channels,
            out_channels=out_channels,
            width=width,
            depth=depth,
            noise_level=noise_level,
            residual=residual,
            upsample=upsample,
            act=act,
            bias=bias,
        )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.depth, self.noise_level, self.residual = depth, noise_level, residual

        channels = [width * 2**i for i in range(depth + 1)]
        first = in_channels + (1 if noise_level else 0)
        self.encoders = nn.ModuleList(
            [DoubleConv(first, channels[0], act, bias)]
            + [DoubleConv(channels[i - 1], channels[i], act, bias) for i in range(1, depth + 1)]
        )
        self.pool = nn.MaxPool2d(2)
        # ups[j] / decoders[j] go from level depth-j up to level depth-j-1.
        self.ups = nn.ModuleList(
            [Up(channels[i], channels[i - 1], upsample, bias) for i in range(depth, 0, -1)]
        )
        self.decoders = nn.ModuleList(
            [DoubleConv(2 * channels[i - 1], channels[i - 1], act, bias) for i in range(depth, 0, -1)]
        )
        self.conv_out = nn.Conv2d(channels[0], out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor, sigma: Sigma = None) -> torch.Tensor:
        """Denoise ``x`` (N, C, H, W) at noise level ``sigma``; returns (N, out_channels, H, W)."""
        check_input(x, self.in_channels)
        h, w = x.shape[-2:]
        z = pad_to_multiple(x, 2**self.depth)
        if self.noise_level:
            z = torch.cat([z, noise_level_map(sigma, z)], dim=1)

        skips = []
        for i, encoder in enumerate(self.encoders):
            z = encoder(z if i == 0 else self.pool(z))
            skips.append(z)
        skips.pop()  # the bottleneck output is not a skip
        for up, decoder in zip(self.ups, self.decoders):
            z = decoder(torch.cat([up(z), skips.pop()], dim=1))

        out = self.conv_out(z)[..., :h, :w]
        return x + out if self.residual else out

