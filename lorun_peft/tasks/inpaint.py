"""Inpainting: pixels missing at random (or where a mask file says), the measurement an image with
holes.

>>> import argparse
>>> op = MissingPixels().make_operator(argparse.Namespace(missing=0.5, mask=None, seed=0, patch=16), channels=1)
>>> type(op).__name__
'Inpainting'
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any, Iterator

from .base import Option, Task, register_task

__all__ = ["MissingPixels"]


@register_task
class MissingPixels(Task):
    name = "inpaint"
    summary = "inpainting: a share of the pixels missing at random"
    operator_types = ("Inpainting",)
    tiles = "stages"
    options = (
        Option("--missing", "share of the pixels missing at random, in [0, 1) (default 0.5)", type=float, default=0.5),
        Option("--mask", "a mask file of the known pixels (1 known, 0 missing; .npy or an image)", type=Path),
    )

    def make_operator(self, args: argparse.Namespace, channels: int) -> Any:
        from ..operators import Inpainting as InpaintingOperator

        if args.mask is not None:
            return InpaintingOperator(_read_mask(args.mask), channels=channels)
        return InpaintingOperator(missing=args.missing, channels=channels, seed=args.seed)

    def use_mask(self, operator: Any, path: Path) -> None:
        operator.use_mask(_read_mask(path))

    @contextlib.contextmanager
    def sized_for_probe(self, operator: Any, size: tuple[int, int]) -> Iterator[None]:
        """A fixed mask cannot be resized: a random one of ``size`` (the same missing share and seed)
        stands in meanwhile; a random mask follows the size as usual."""
        from ..operators.inpainting import random_mask

        if operator.follow:
            with super().sized_for_probe(operator, size):
                yield
            return
        saved = operator.mask, operator.follow
        operator.mask, operator.follow = random_mask(operator.missing, tuple(size), operator.seed).to(operator.mask), False
        try:
            yield
        finally:
            operator.mask, operator.follow = saved

    def export_size(self, operator: Any, image_size: Any) -> tuple[int, int] | None:
        """A mask of a fixed size exports at that size; a random mask at any size asked for."""
        if operator.image_size is not None and image_size is None:
            return tuple(operator.image_size)
        return super().export_size(operator, image_size)


def _read_mask(path: Path) -> Any:
    """A known-pixel mask from .npy (any numbers, 0 missing) or an image (black missing)."""
    import numpy as np
    import torch

    from ..data.images import load_image
    from ..errors import CorruptFileError

    if Path(path).suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise CorruptFileError(f"mask {path} is not a readable .npy file: {err}") from err
        return torch.from_numpy((np.asarray(array, dtype=np.float64) != 0).astype(np.float32)).squeeze()
    return (load_image(path, 1)[0] > 0.5).float()
