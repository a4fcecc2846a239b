"""Any deepinv ``LinearPhysics`` (inpainting, deblurring, MRI, single-pixel cameras, ...) as a task:
its measurements are simulated by the physics itself, its noise model included; saved networks
record the physics as its class, constructor arguments and tensors
(:mod:`lorun_peft.operators.physics`).

>>> DeepinvPhysics().handles(object())
False
"""

from __future__ import annotations

import contextlib
from typing import Any

from .base import Task, register_task

__all__ = ["DeepinvPhysics"]


@contextlib.contextmanager
def _drawing_from(noise_model: Any, generator: Any) -> Any:
    """Have a deepinv noise model draw from ``generator`` (its ``rng``) for the time of a call."""
    before = getattr(noise_model, "rng", None)
    if generator is not None:
        noise_model.rng = generator
    try:
        yield noise_model
    finally:
        noise_model.rng = before


@register_task
class DeepinvPhysics(Task):
    name = "deepinv"
    summary = "any deepinv LinearPhysics, built in Python (Inpainting, BlurFFT, MRI, CompressedSensing, ...)"

    def handles(self, operator: Any) -> bool:
        from ..operators.physics import is_deepinv_physics

        return is_deepinv_physics(operator)

    def fit_image(self, operator: Any, x: Any) -> Any:
        """A physics built for one image size (``img_size``) measures the centre of a larger image."""
        from ..data.images import center_crop
        from ..errors import InvalidArgumentError

        size = getattr(operator, "img_size", None)
        if size is None or len(size) < 2:
            return x
        height, width = int(size[-2]), int(size[-1])
        if x.shape[-2] < height or x.shape[-1] < width:
            raise InvalidArgumentError(f"this {type(operator).__name__} physics measures {height} x {width} images; "
                                       f"this one is {x.shape[-2]} x {x.shape[-1]}")
        return center_crop(x, height, width)

    def export_size(self, operator: Any, image_size: Any) -> tuple[int, int] | None:
        """A physics built for one image size exports at that size."""
        size = getattr(operator, "img_size", None)
        if image_size is None and size is not None and len(size) >= 2:
            return int(size[-2]), int(size[-1])
        return super().export_size(operator, image_size)

    def simulate(self, operator: Any, x: Any, noise_sigma: float = 0.0, generator: Any = None) -> Any:
        """``A x`` through the physics' own noise model (drawn from ``generator``), plus Gaussian
        noise of ``noise_sigma`` if asked for."""
        import torch

        y = operator.A(x)
        noise = getattr(operator, "noise_model", None)
        if noise is not None:
            with _drawing_from(noise, generator):
                y = noise(y)
        if noise_sigma:
            y = y + noise_sigma * torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
        return y
