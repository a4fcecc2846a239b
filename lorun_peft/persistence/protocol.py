"""What the persistence modules read off a network: :class:`Network`, the attributes of an
``UnfoldedNetwork`` they use, declared here so that they can recognise and annotate networks
without importing ``unfold.py`` (which imports them). Every ``UnfoldedNetwork`` is a ``Network``
through :class:`~lorun_peft.persistence.methods.BundleMethods`.

>>> from lorun_peft.unfold import UnfoldedNetwork
>>> issubclass(UnfoldedNetwork, Network)
True
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

__all__ = ["Network"]


class Network:
    """What the bundle modules read off a network: a base class of
    :class:`~lorun_peft.persistence.methods.BundleMethods` (so of every ``UnfoldedNetwork``) that lets them
    recognise and annotate networks without importing ``unfold.py``."""

    K: int
    algorithm: str
    gamma: float
    share: str
    adapter: str
    noise_level: bool
    target_modules: Sequence[str] | str | None
    adapter_options: dict[str, Any]
    adapter_names: list[str]
    steps: nn.Module
    operator: Any
    denoisers: nn.Module
    training: bool
