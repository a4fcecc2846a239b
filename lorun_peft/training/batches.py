"""Training batches: images as a tensor, a list or a Dataset (:class:`Source` draws random batches
from one seeded generator, so a resumed run sees the same ones), whole images for validation
(:func:`image_list`) and :func:`due` for "every n steps and at the end".

>>> import torch
>>> source = Source(torch.rand(4, 1, 8, 8))
>>> tuple(source.batch(torch.Generator().manual_seed(0), 2, 0, 1).shape)
(2, 1, 8, 8)
>>> due(10, 10, 3), due(6, 10, 3), due(7, 10, 3)
(True, True, False)
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from ..errors import InvalidArgumentError

__all__ = ["Images", "Source", "image_list", "due"]

Images = torch.Tensor | Sequence[torch.Tensor] | Dataset


def due(step: int, steps: int, every: int) -> bool:
    """Whether something done "every ``every`` steps and at the end" is due after ``step`` of ``steps``."""
    return step == steps or bool(every and step % every == 0)


class Source:
    """Draws training batches from a tensor or a dataset; all randomness from one generator."""

    def __init__(self, data: Images) -> None:
        self.dataset: Dataset | None = None
        if isinstance(data, Dataset) and not isinstance(data, torch.Tensor):
            if len(data) == 0:  # type: ignore[arg-type]
                raise InvalidArgumentError("data is an empty dataset")
            self.dataset, self.size = data, len(data)  # type: ignore[arg-type]
        else:
            self.images = _as_image_tensor(data)
            self.size = len(self.images)

    def batch(self, generator: torch.Generator, batch_size: int, rank: int, world: int) -> torch.Tensor:
        """This process's slice of one global batch of ``batch_size * world`` images."""
        index = torch.randint(self.size, (batch_size * world,), generator=generator)
        mine = slice(rank * batch_size, (rank + 1) * batch_size)
        if self.dataset is None:
            return self.images[index[mine]]
        random_item = getattr(self.dataset, "random_item", None)
        if random_item is not None:
            seeds = torch.randint(2**62, (batch_size * world,), generator=generator)[mine].tolist()
            items = [random_item(int(i), torch.Generator().manual_seed(s)) for i, s in zip(index[mine].tolist(), seeds)]
        else:
            items = [self.dataset[int(i)] for i in index[mine].tolist()]
        items = [item[0] if isinstance(item, (tuple, list)) else item for item in items]
        return _stack_items(items, index[mine].tolist())


def _stack_items(items: list[Any], indices: list[int]) -> torch.Tensor:
    for i, item in zip(indices, items):
        if not isinstance(item, torch.Tensor) or item.dim() != 3 or not item.is_floating_point():
            what = f"{tuple(item.shape)} {item.dtype}" if isinstance(item, torch.Tensor) else type(item).__name__
            raise InvalidArgumentError(f"dataset item {i} must be a floating-point C x H x W tensor, got {what}")
        if not bool(torch.isfinite(item).all()):
            raise InvalidArgumentError(f"dataset item {i} holds NaN or Inf")
    shapes = {tuple(item.shape) for item in items}
    if len(shapes) > 1:
        raise InvalidArgumentError(
            f"dataset items have different shapes {sorted(shapes)}; give the dataset a patch_size (random crops)"
        )
    return torch.stack(items)


def _as_image_tensor(data: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        images = data
    else:
        try:
            images = torch.stack([torch.as_tensor(item) for item in data])
        except (RuntimeError, TypeError) as err:
            raise InvalidArgumentError(f"data must be a N x C x H x W tensor or a sequence of equal-shaped C x H x W tensors: {err}") from err
    if images.dim() != 4 or len(images) == 0:
        raise InvalidArgumentError(f"data must be a non-empty N x C x H x W batch of clean images, got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise InvalidArgumentError(f"data must be floating point (images scaled to [0, 1]), got {images.dtype}")
    bad = (~torch.isfinite(images)).flatten(1).any(1).nonzero().flatten().tolist()
    if bad:
        raise InvalidArgumentError(f"data holds NaN or Inf in image(s) {bad[:10]}")
    return images


def image_list(images: Images, what: str) -> list[torch.Tensor]:
    """Whole images (C x H x W) from a tensor, a sequence or a dataset (its ``full`` items if any)."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise InvalidArgumentError(f"{what} must be N x C x H x W, got shape {tuple(images.shape)}")
        out = list(images)
    elif isinstance(images, Dataset):
        full = getattr(images, "full", None)
        out = [full(i) if full else images[i] for i in range(len(images))]  # type: ignore[arg-type]
        out = [item[0] if isinstance(item, (tuple, list)) else item for item in out]
    else:
        out = list(images)
    if not out:
        raise InvalidArgumentError(f"{what} holds no image")
    for i, x in enumerate(out):
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or not x.is_floating_point():
            raise InvalidArgumentError(f"{what}: image {i} must be a floating-point C x H x W tensor")
    return out
