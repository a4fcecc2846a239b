"""A small window-attention Transformer denoiser after the LoRun paper's appendix (Fig. 13).

Swin-style blocks (LayerNorm, multi-head self-attention inside ``window_size`` x ``window_size``
windows, shifted by half a window in every second block, then a feed-forward MLP) between a 3x3
conv embedding and a 3x3 conv output, with a residual connection to the input. All weight layers
are ``nn.Conv2d`` or ``nn.Linear`` with short names that are easy to target with LoRA:
``conv_in``, ``blocks.<i>.attn.qkv``, ``blocks.<i>.attn.proj``, ``blocks.<i>.mlp.fc1``,
``blocks.<i>.mlp.fc2``, ``conv_out``. The only other parameters are LayerNorm affines and each
attention's relative position bias table; they stay in the shared base denoiser.

>>> import torch
>>> from lorun_peft.denoisers import Transformer
>>> net = Transformer(1, dim=8, depth=2, heads=2, window_size=4)
>>> net(torch.rand(2, 1, 17, 23), sigma=0.1).shape
torch.Size([2, 1, 17, 23])
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from timm.layers import DropPath, Mlp, trunc_normal_
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

__all__ = ["Transformer"]


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * num_windows, window_size**2, C); H and W divisible by window_size."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, c)


def window_merge(windows: torch.Tensor, window_size: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: back to (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window_size, w // window_size, window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def shifted_window_mask(h: int, w: int, window_size: int, shift: int, device: torch.device) -> torch.Tensor:
    """Additive mask (num_windows, n, n), n = window_size**2, for attention in shifted windows.

    After a cyclic shift by ``shift`` pixels, a window can hold pixels from up to four image
    regions that are not neighbours; pixels may only attend to pixels of their own region.
    """
    labels = torch.zeros(1, h, w, 1, device=device)
    cuts = (slice(0, -window_size), slice(-window_size, -shift), slice(-shift, None))
    region = 0
    for rows in cuts:
        for cols in cuts:
            labels[:, rows, cols, :] = region
            region += 1
    labels = window_partition(labels, window_size).squeeze(-1)  # (num_windows, n)
    different = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(different.shape, device=device).masked_fill(different, float("-inf"))


class WindowAttention(nn.Module):
    """Multi-head self-attention within a window, with a learned relative position bias."""

    def __init__(self, dim: int, heads: int, window_size: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

        span = 2 * window_size - 1
        self.relative_position_bias_table = nn.Parameter(torch.zeros(span * span, heads))
        coords = torch.stack(
            torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
        ).flatten(1)  # (2, n)
        offsets = coords[:, :, None] - coords[:, None, :] + window_size - 1  # (2, n, n)
        self.register_buffer("relative_position_index", offsets[0] * span + offsets[1], persistent=False)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B * num_windows, n, C); mask: (num_windows, n, n) additive, or None."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (b, heads, n, n)
        bias = self.relative_position_bias_table[self.relative_position_index]  # (n, n, heads)
        attn = attn + bias.permute(2, 0, 1)
        if mask is not None:
            windows = mask.shape[0]
            attn = attn.view(b // windows, windows, self.heads, n, n) + mask[:, None]
            attn = attn.view(b, self.heads, n, n)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)


class TransformerBlock(nn.Module):
    """x + attn(norm(x)) then x + mlp(norm(x)), attention in (optionally shifted) windows."""

    def __init__(
        self, dim: int, heads: int, window_size: int, shift: int, mlp_ratio: float, drop_path: float
    ) -> None:
        super().__init__()
        self.window_size, self.shift = window_size, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window_size)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, max(1, round(dim * mlp_ratio)), act_layer=nn.GELU)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, H, W, C) with H, W divisible by the window size; mask used when shifted."""
        _, h, w, _ = x.shape
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.window_size), mask if self.shift else None)
        y = window_merge(y, self.window_size, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Transformer(Buildable, nn.Module):
    """Window-attention Transformer denoiser: ``D(x, sigma) = x + conv_out(f + blocks(f))``,
    ``f = conv_in([x, noise map])``.

    Inputs of any H x W are padded to a multiple of ``window_size`` and cropped back.

    Args:
        in_channels: channels of the input image (1 gray, 3 RGB, 28 CASSI bands, ...).
        out_channels: output channels; default ``in_channels``.
        dim: embedding channels.
        depth: number of Transformer blocks (every second one uses shifted windows).
        heads: attention heads; must divide ``dim``.
        window_size: side of the square attention windows.
        mlp_ratio: hidden width of the feed-forward MLP relative to ``dim``.
        noise_level: if True, ``sigma`` is fed as an extra constant input channel;
            if False, ``sigma`` is ignored.
        residual: add the input to the output (needs ``out_channels == in_channels``).
        drop_path: stochastic-depth rate of the last block (linearly increasing from 0).

    Attributes:
        config: the constructor arguments, a JSON-able dict; ``net.config()`` returns a copy.

    Parameter counts (gray input, noise_level=True): default (dim 16, depth 2) 5,829;
    preset ``"paper-cs"`` (dim 16, depth 4) 11,177, about the paper's CS Transformer Block-9
    (0.10M) divided by 9 stages.

    >>> import torch
    >>> net = Transformer.preset("paper-cs")
    >>> sum(p.numel() for p in net.parameters())
    11177
    >>> Transformer(3)(torch.rand(1, 3, 33, 33), sigma=torch.tensor([0.05])).shape
    torch.Size([1, 3, 33, 33])
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper-cs": {"in_channels": 1, "dim": 16, "depth": 4, "heads": 2, "window_size": 8},
    }

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        dim: int = 16,
        depth: int = 2,
        heads: int = 2,
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        noise_level: bool = True,
        residual: bool = True,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        in_channels = check_int(in_channels, "in_channels", 1)
        out_channels = in_channels if out_channels is None else out_channels
        out_channels = check_int(out_channels, "out_channels", 1)
        dim = check_int(dim, "dim", 1)
        depth = check_int(depth, "depth", 0)
        heads = check_int(heads, "heads", 1)
        window_size = check_int(window_size, "window_size", 1)
        if dim % heads:
            raise InvalidArgumentError(f"heads must divide dim, got heads={heads} and dim={dim}")
        if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0:
            raise InvalidArgumentError(f"mlp_ratio must be a number > 0, got {mlp_ratio!r}")
        if isinstance(drop_path, bool) or not isinstance(drop_path, (int, float)) or not 0 <= drop_path < 1:
            raise InvalidArgumentError(f"drop_path must be a number in [0, 1), got {drop_path!r}")
        check_flags(in_channels, out_channels, noise_level=noise_level, residual=residual)
        # A dict that can be called: see DenoiserConfig (PEFT reads model.config).
        self.config = DenoiserConfig(
            in_channels=in_channels,
            out_channels=out_channels,
            dim=dim,
            depth=depth,
            heads=heads,
            window_size=window_size,
            mlp_ratio=float(mlp_ratio),
            noise_level=noise_level,
            residual=residual,
            drop_path=float(drop_path),
        )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.window_size, self.noise_level, self.residual = window_size, noise_level, residual
        self.shift = window_size // 2

        self.conv_in = nn.Conv2d(in_channels + (1 if noise_level else 0), dim, 3, padding=1)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            [
                TransformerBlock(dim, heads, window_size, self.shift if i % 2 else 0, mlp_ratio, rates[i])
                for i in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(dim)
        self.conv_out = nn.Conv2d(dim, out_channels, 3, padding=1)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, sigma: Sigma = None) -> torch.Tensor:
        """Denoise ``x`` (N, C, H, W) at noise level ``sigma``; returns (N, out_channels, H, W)."""
        check_input(x, self.in_channels)
        h, w = x.shape[-2:]
        z = pad_to_multiple(x, self.window_size)
        if self.noise_level:
            z = torch.cat([z, noise_level_map(sigma, z)], dim=1)
        features = self.conv_in(z)

        tokens = features.permute(0, 2, 3, 1)  # (N, H, W, dim)
        mask = None
        if self.shift and len(self.blocks) > 1:
            mask = shifted_window_mask(*tokens.shape[1:3], self.window_size, self.shift, x.device)
            mask = mask.to(tokens.dtype)
        for block in self.blocks:
            tokens = block(tokens, mask)
        features = features + self.norm(tokens).permute(0, 3, 1, 2)

        out = self.conv_out(features)[..., :h, :w]
        return x + out if self.residual else out

