"""Swapping a task bundle into a live LoRun network (:func:`load_adapters`): all K adapters, the
step parameters and the operator. Everything is checked and every new tensor built first
(:func:`plan_swap`); only then are the weights copied in, so a bad bundle raises and leaves the
network exactly as it was.

>>> import tempfile, torch
>>> from lorun_peft import unfold
>>> from lorun_peft.denoisers import UNet
>>> from lorun_peft.operators import BlockCS
>>> _ = torch.manual_seed(0)
>>> net = unfold(UNet(1, width=4, depth=1), BlockCS(0.25, block=8), K=2, noise_level=True)
>>> folder = net.save_adapters(tempfile.mkdtemp() + "/cs-0.25")
>>> other = unfold(UNet(1, width=4, depth=1), BlockCS(0.10, block=8), K=2, noise_level=True)
>>> other.denoisers.model.load_state_dict(net.denoisers.model.state_dict())  # same base weights
<All keys matched successfully>
>>> _ = load_adapters(other, folder)       # swaps adapters, steps and the (re-shaped) operator
>>> other.operator.measurements
16
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import _hub as hub
from ..adapters.stages import adapter_config_mismatch, adapter_structure, canonical, stage_configs
from ..errors import CorruptFileError, IncompatibleBundleError, InvalidArgumentError, LorunError
from .fingerprint import live_fingerprint, net_cache, require_lora
from .protocol import Network
from ..config import UnfoldConfig
from ..operators import rebuild_operator
from ..operators.base import describe_operator
from ..operators.physics import is_deepinv_physics
from .reading import read_bundle
from .schema import Bundle, check_tensors

__all__ = ["load_adapters", "plan_swap", "Swap"]


@dataclass
class Swap:
    """Everything a swap changes, computed before anything is changed."""

    copies: list[tuple[torch.Tensor, torch.Tensor]]
    operator: nn.Module | None

    def apply(self, net: Network) -> None:
        with torch.no_grad():
            for live, new in self.copies:
                live.copy_(new)
        if self.operator is not None:
            net.operator = self.operator


def plan_swap(net: Network, bundle: Bundle) -> Swap:
    """Check ``bundle`` against ``net`` and prepare every new tensor; changes nothing."""
    config, label = bundle.config, bundle.label
    mismatched = [
        f"{key}: bundle {config[key]!r}, network {getattr(net, key)!r}"
        for key in UnfoldConfig.SWAP_KEYS
        if config[key] != getattr(net, key)
    ]
    if mismatched:
        raise IncompatibleBundleError(f"bundle {label} does not fit this network: " + "; ".join(mismatched))
    cache = net_cache(net)
    live_fp = live_fingerprint(net, cache)
    if config["base_fingerprint"] != live_fp:
        raise IncompatibleBundleError(
            f"bundle {label} was trained on another base denoiser (fingerprint {config['base_fingerprint'][:19]}..., "
            f"this network's base is {live_fp[:19]}...)"
        )
    copies: list[tuple[torch.Tensor, torch.Tensor]] = []
    slots = cache.stage_slots(net)
    agreed: set[tuple[str, str]] = set()  # (saved config text, live config text) pairs already compared
    for k, (name, (live_config, live_text)) in enumerate(zip(net.adapter_names, stage_configs(net.denoisers))):
        texts = (adapter_structure(bundle.adapter_configs[k]), live_text)
        if texts not in agreed:
            if texts[0] != texts[1]:
                detail = adapter_config_mismatch(bundle.adapter_configs[k], live_config)
                raise IncompatibleBundleError(f"bundle {label}: {name}'s adapter config {detail}")
            agreed.add(texts)
        live = {key: p.detach() for key, p in slots[k].items()}
        check_tensors(bundle.stages[k], live, f"bundle {label}, {name}")
        copies += [(slots[k][key], tensor) for key, tensor in bundle.stages[k].items()]

    live_steps = net.steps.state_dict()
    check_tensors(bundle.steps, live_steps, f"bundle {label}, step parameters")
    copies += [(live_steps[key], tensor) for key, tensor in bundle.steps.items()]
    return _plan_operator(net, bundle, copies)


def _same_operator(live_op: Any, saved: Any) -> bool:
    """Whether the live operator has the saved settings (its tensors' shapes are checked apart)."""
    if not isinstance(live_op, nn.Module):
        return False
    if is_deepinv_physics(live_op):
        with contextlib.suppress(LorunError):  # one that cannot be described is replaced by the saved one
            return describe_operator(live_op) == saved  # exactly: sorted sizes could match another shape
        return False
    return callable(getattr(live_op, "config", None)) and canonical(live_op.config()) == canonical(saved)


def _plan_operator(net: Network, bundle: Bundle, copies: list[tuple[torch.Tensor, torch.Tensor]]) -> Swap:
    """Update the live operator in place when its settings and shapes agree; else rebuild it from the bundle."""
    config, label = bundle.config, bundle.label
    device = next(net.steps.parameters()).device
    live_op = net.operator
    if _same_operator(live_op, config["operator"]):
        live_state = live_op.state_dict()
        with contextlib.suppress(IncompatibleBundleError):
            check_tensors(bundle.operator_state, live_state, "operator")
            return Swap(copies + [(live_state[k], t) for k, t in bundle.operator_state.items()], None)
    operator = rebuild_operator(config["operator"], f"bundle {label}", bundle.operator_state)
    if not isinstance(operator, nn.Module):
        raise IncompatibleBundleError(f"bundle {label}: the operator is not a torch module")
    operator.to(device)
    check_tensors(bundle.operator_state, operator.state_dict(), f"bundle {label}, operator state vs its config", CorruptFileError, dtypes=False)
    if not is_deepinv_physics(operator):  # a physics is built from its state, in deepinv's own memory layout
        operator.load_state_dict({k: v.to(device) for k, v in bundle.operator_state.items()}, strict=True, assign=True)
    operator.train(net.training)
    return Swap(copies, operator)


def load_adapters(
    net: Network,
    bundle: Bundle | str | os.PathLike,
    *,
    subfolder: str | None = None,
    revision: str | None = None,
    **hub_kwargs: Any,
) -> Network:
    """Swap a whole task into a live network: all K adapters, step parameters and the operator.

    ``bundle``: a folder, a Hub repo id (+ ``subfolder``, ``revision``, huggingface_hub download
    options such as ``token`` as ``hub_kwargs``) or a :class:`~lorun_peft.persistence.schema.Bundle` from
    :func:`~lorun_peft.persistence.reading.read_bundle`. Adapter and step weights are copied into the existing
    parameters (no re-wrapping with PEFT); the operator is updated in place, or rebuilt from the
    bundle's config when its settings or shapes change (e.g. another CS ratio). Everything is
    checked first: on any error the network is left exactly as it was. Returns ``net``.
    """
    require_lora(net, "load_adapters")
    options = hub.check_options(hub_kwargs, "download")
    if not isinstance(bundle, Bundle):
        bundle = read_bundle(bundle, subfolder=subfolder, revision=revision, **options)
    elif subfolder is not None or revision is not None:
        raise InvalidArgumentError("subfolder and revision apply when loading from a folder or repo, not to a Bundle object")
    plan_swap(net, bundle).apply(net)
    return net
