"""Deblurring with a known kernel: ``y = k * x`` (circular), each channel blurred alike.

>>> import argparse
>>> op = Deblurring().make_operator(argparse.Namespace(kernel=8, kernel_file=None), channels=1)
>>> type(op).__name__
'Blur'
"""

from __future__ import annotations

import argparse
from typing import Any

from .base import Task, register_task
from .sr import KERNEL_OPTIONS, kernel_from_args

__all__ = ["Deblurring"]


@register_task
class Deblurring(Task):
    name = "deblur"
    summary = "deblurring with a known kernel (Gaussian or motion)"
    operator_types = ("Blur",)
    tiles = "stages"
    options = KERNEL_OPTIONS

    def make_operator(self, args: argparse.Namespace, channels: int) -> Any:
        from ..operators import Blur

        return Blur(kernel_from_args(args), channels=channels)
