"""Reference denoisers from the LoRun paper's appendix, built so PEFT LoRA can adapt every weight.

Every weight layer is an ``nn.Conv2d`` (groups=1) or ``nn.Linear``; both models take
``forward(x, sigma=None)`` and return a tensor of the input's shape for any H x W.
``net.config()`` gives the constructor arguments as a JSON-able dict (``net.config`` is itself
that dict, callable, because PEFT reads ``model.config`` as a dict; see DenoiserConfig).

>>> from lorun_peft.denoisers import DENOISERS, build_denoiser
>>> sorted(DENOISERS)
['transformer', 'unet']
>>> net = build_denoiser("unet", in_channels=1, width=8)
>>> net.config()["width"]
8
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lorun_peft.denoisers.transformer import Transformer
from lorun_peft.denoisers.base import DenoiserConfig
from lorun_peft.denoisers.unet import UNet
from lorun_peft.errors import InvalidArgumentError

__all__ = ["DENOISERS", "DenoiserConfig", "Transformer", "UNet", "build_denoiser"]

DENOISERS: dict[str, type[nn.Module]] = {"unet": UNet, "transformer": Transformer}


def build_denoiser(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered denoiser by name; ``kwargs`` go to its constructor.

    >>> build_denoiser("transformer", in_channels=3).config()["in_channels"]
    3
    """
    if name not in DENOISERS:
        raise InvalidArgumentError(f"name: unknown denoiser {name!r}; available: {sorted(DENOISERS)}")
    return DENOISERS[name](**kwargs)
