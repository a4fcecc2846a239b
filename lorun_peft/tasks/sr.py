"""Super-resolution with a known blur kernel: ``y = S (k * x)``; images are cropped to multiples of
the scale, and scored as SR papers do (RGB on its luma, the border shaved by the scale).

>>> import argparse
>>> op = SuperResolution().make_operator(argparse.Namespace(scale=2, kernel=0, kernel_file=None, patch=64), channels=1)
>>> type(op).__name__, op.scale
('BlurDownsample', 2)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from .base import Option, Task, register_task

__all__ = ["SuperResolution", "kernel_from_args", "KERNEL_OPTIONS"]

KERNEL_OPTIONS = (
    Option("--kernel", "kernel index, 0-11 of the built-in bank or of --kernel-file (default 0)", type=int, default=0),
    Option("--kernel-file", "kernels from a .mat/.npy/.png file (e.g. USRNet's kernels_12.mat)", type=Path),
)


def kernel_from_args(args: argparse.Namespace) -> Any:
    """The kernel ``--kernel`` picks from the built-in bank or from ``--kernel-file``."""
    from ..operators.kernels import kernel_bank, load_kernels

    bank = load_kernels(args.kernel_file) if getattr(args, "kernel_file", None) else kernel_bank()
    if not 0 <= args.kernel < len(bank):
        raise InvalidArgumentError(f"--kernel must be in 0..{len(bank) - 1}, got {args.kernel}")
    return bank[args.kernel]


@register_task
class SuperResolution(Task):
    name = "sr"
    summary = "super-resolution: blur with a known kernel, then keep every s-th pixel"
    operator_types = ("BlurDownsample",)
    default_channels = 3
    colour = "luma"
    tiles = "stages"
    options = (Option("--scale", "downsampling factor (default 4)", type=int, default=4), *KERNEL_OPTIONS)

    def make_operator(self, args: argparse.Namespace, channels: int) -> Any:
        from ..operators import BlurDownsample

        kernel = kernel_from_args(args)
        patch = getattr(args, "patch", None)
        if patch is not None and patch % args.scale:
            raise InvalidArgumentError(f"--patch {patch} must be a multiple of --scale {args.scale}")
        return BlurDownsample(kernel, scale=args.scale, channels=channels)

    def fit_image(self, operator: Any, x: Any) -> Any:
        from ..data.images import modcrop

        return modcrop(x, operator.scale)

    def metric_options(self, operator: Any) -> dict[str, Any]:
        return {"y_channel": True, "border": operator.scale}

    def size_multiple(self, operator: Any) -> tuple[int, str]:
        return operator.scale, "scale"
