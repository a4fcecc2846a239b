"""A network's shared base denoiser and the fingerprint bundles name it by: sha256 over the sorted
names, dtypes, shapes and bytes of the plain denoiser's state (PEFT's wrapping undone, adapters
left out), so a bundle can only be loaded onto the base it was trained on.

>>> from torch import nn
>>> layer = nn.Linear(2, 2)
>>> fingerprint(layer) == fingerprint(dict(layer.state_dict()))
True
>>> fingerprint(layer).startswith("sha256:")
True
"""

from __future__ import annotations

import hashlib
import json
import weakref
from typing import Any, Mapping

import torch
from torch import nn

from ..adapters.stages import plain_state, saved_adapter_slots, unwrap
from ..errors import InvalidArgumentError
from .protocol import Network

__all__ = ["base_module", "base_state", "fingerprint", "live_fingerprint", "require_lora"]


def require_lora(net: Any, what: str) -> None:
    """Raise InvalidArgumentError unless ``net`` is a LoRun network (``share="lora"``)."""
    if not isinstance(net, Network):
        raise InvalidArgumentError(f"{what} needs an UnfoldedNetwork, got {type(net).__name__}")
    if net.share != "lora":
        kind = "Block-1 (share='base'): call net.to_lora() first" if net.share == "base" else "Block-K (share='none')"
        raise InvalidArgumentError(f"{what}: bundles hold LoRun stage adapters, but this network is {kind}")


def base_module(model: Network | nn.Module) -> nn.Module:
    """The shared base denoiser: of a network (LoRun or Block-1), a PeftModel, or a plain module."""
    if isinstance(model, Network):
        if model.share == "lora":
            return model.denoisers.model
        if model.share == "base":
            return model.denoisers.denoiser
        raise InvalidArgumentError("a Block-K network (share='none') has K denoisers, not one shared base")
    return unwrap(model)


def base_state(model: Network | nn.Module) -> dict[str, torch.Tensor]:
    """The plain denoiser's state_dict: of a network's base, a PEFT-wrapped or a plain denoiser.

    PEFT moves each adapted layer's weights under ``<layer>.base_layer``; this undoes the renaming
    and leaves the adapters out, so a wrapped base gives the same names as the module it wraps.
    """
    return plain_state(base_module(model))


def fingerprint(model: Network | nn.Module | Mapping[str, torch.Tensor]) -> str:
    """``"sha256:<hex>"`` over the sorted names, dtypes, shapes and bytes of the base's state."""
    state = model if isinstance(model, Mapping) else base_state(model)
    digest = hashlib.sha256(b"lorun_peft base fingerprint v1\n")
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        header = json.dumps([name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape)])
        digest.update(header.encode() + b"\n")
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return "sha256:" + digest.hexdigest()


class NetCache:
    """What swaps reuse for one network: its base tensors, stage slots and base fingerprint.

    Valid while the network's parameter objects stay the same (checked on every swap by their
    ids, about 1 ms); in-place changes to base tensors (``_version``, data pointer) redo the
    fingerprint. Kept in a weak dictionary, so nothing is added to the network itself.
    """

    def __init__(self, key: tuple, base: dict[str, torch.Tensor]) -> None:
        self.key, self.base = key, base
        self.slots: list[dict[str, nn.Parameter]] | None = None
        self.fingerprint: tuple[tuple, str] | None = None

    def stage_slots(self, net: Network) -> list[dict[str, nn.Parameter]]:
        """For each stage: PEFT's saved key (as in adapter_model.safetensors) -> the live parameter."""
        if self.slots is None:
            self.slots = [saved_adapter_slots(net.denoisers, k) for k in range(len(net.adapter_names))]
        return self.slots


_CACHES: weakref.WeakKeyDictionary[nn.Module, NetCache] = weakref.WeakKeyDictionary()


def net_cache(net: Network) -> NetCache:
    """The network's :class:`NetCache`, rebuilt when its parameter objects changed."""
    key = (id(net.denoisers), tuple(id(p) for p in net.denoisers.peft_model.parameters()))
    cache = _CACHES.get(net)
    if cache is None or cache.key != key:
        cache = _CACHES[net] = NetCache(key, base_state(net))
    return cache


def live_fingerprint(net: Network, cache: NetCache | None = None) -> str:
    """The network's base fingerprint, recomputed only when a base tensor changed."""
    if net.share != "lora":
        return fingerprint(net)
    cache = cache or net_cache(net)
    versions = tuple((t.data_ptr(), getattr(t, "_version", None)) for t in cache.base.values())
    if cache.fingerprint is None or cache.fingerprint[0] != versions or any(v is None for _, v in versions):
        cache.fingerprint = (versions, fingerprint(cache.base))
    return cache.fingerprint[1]
