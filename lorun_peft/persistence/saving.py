"""Saving a network's task as a bundle folder (:func:`save_adapters`) and its shared base once
(:func:`save_base`), in the format of :mod:`lorun_peft.persistence.schema`, with a model card each.

Each save fills a temporary folder beside the target and renames it in
(:func:`lorun_peft.persistence.atomic.atomic_folder`): files 0644, folders 0755, never a half-written bundle.

>>> import tempfile
>>> from torch import nn
>>> folder = save_base(nn.Conv2d(1, 1, 3), tempfile.mkdtemp() + "/base")
>>> sorted(p.name for p in folder.iterdir())
['README.md', 'base_config.json', 'model.safetensors']
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from . import _hub as hub
from ..adapters.stages import save_stages
from .cards import base_card, bundle_card
from ..denoisers import DENOISERS
from ..errors import InvalidArgumentError
from ._files import parse_safetensors, sha256, tensor_bytes, to_json, write
from .fingerprint import base_module, base_state, fingerprint, live_fingerprint, require_lora
from .protocol import Network
from .atomic import atomic_folder
from ..operators.base import OPERATORS
from ..operators.physics import is_deepinv_physics, physics_config
from .schema import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    BASE_CONFIG_NAME,
    BASE_FORMAT,
    BASE_WEIGHTS_NAME,
    CARD_NAME,
    CONFIG_NAME,
    FORMAT,
    FORMAT_VERSION,
    UNFOLD_KEYS,
    UNFOLDING_NAME,
    cast,
    library_version,
    to_storage_dtype,
)

__all__ = ["save_adapters", "save_base", "operator_config", "denoiser_info"]


def operator_config(operator: Any) -> dict[str, Any]:
    """The operator's ``config()``, checked to rebuild a registered operator and to be plain JSON; a
    deepinv physics' :func:`~lorun_peft.operators.physics.physics_config` (checked to rebuild it bit-exact)."""
    if is_deepinv_physics(operator):
        return json.loads(to_json(physics_config(operator), f"deepinv physics {type(operator).__name__}'s config"))
    config_fn = getattr(operator, "config", None)
    if not callable(config_fn):
        raise InvalidArgumentError(
            f"operator {type(operator).__name__} has no config(): a bundle must be able to rebuild its operator. "
            "Subclass lorun_peft.operators.LinearOperator, implement _config_args() and decorate it with @register_operator"
        )
    config = config_fn()
    if not isinstance(config, dict) or config.get("type") not in OPERATORS:
        raise InvalidArgumentError(
            f"operator {type(operator).__name__}'s config() type {config.get('type') if isinstance(config, dict) else config!r} "
            f"is not registered (known: {sorted(OPERATORS)}); decorate the class with @register_operator"
        )
    return json.loads(to_json(config, "the operator's config()"))


def denoiser_info(model: nn.Module) -> dict[str, Any]:
    """What rebuilds ``model``: its class (module, qualname), registry name if built in, and ``config()``."""
    cls = type(model)
    config = getattr(model, "config", None)
    config = config() if callable(config) else config
    config = json.loads(to_json(dict(config), "the denoiser's config()")) if isinstance(config, Mapping) else None
    registry = next((name for name, c in DENOISERS.items() if c is cls), None)
    return {"module": cls.__module__, "qualname": cls.__qualname__, "registry_name": registry, "config": config}


def _check_metrics(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise InvalidArgumentError(f"metrics must be a dict such as {{'psnr': 34.1, 'ssim': 0.95}}, got {type(metrics).__name__}")
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        ok = isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))
        if not isinstance(key, str) or not ok:
            raise InvalidArgumentError(f"metrics[{key!r}] must be a finite number or a string, got {value!r}")
        out[key] = value
    return out


def _bundle_config(net: Network, metrics: dict[str, Any]) -> dict[str, Any]:
    step = next(net.steps.parameters())
    settings = net.config.to_dict()  # the network's settings, written by the one schema
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library": "lorun_peft",
        "library_version": library_version(),
        **{key: settings[key] for key in UNFOLD_KEYS},
        "adapter_names": list(net.adapter_names),
        "ranks": {row.name: row.rank for row in net.rank_table().layers},
        "dtype": str(step.dtype).removeprefix("torch."),
        "operator": operator_config(net.operator),
        "denoiser": denoiser_info(net.denoisers.model),
        "base_fingerprint": live_fingerprint(net),
        "metrics": metrics,
    }


def _recast_file(path: Path, dtype: torch.dtype) -> None:
    """Rewrite a safetensors file (PEFT's adapter weights) with its floating tensors in ``dtype``."""
    write(path, tensor_bytes(cast(parse_safetensors(path.read_bytes(), str(path)), dtype), {"format": "pt"}))


def save_adapters(
    net: Network,
    path: str | os.PathLike,
    *,
    metrics: Mapping[str, Any] | None = None,
    base_model: str | None = None,
    storage_dtype: str | None = None,
) -> Path:
    """Save the network's task (K adapters, step parameters, operator) as a bundle folder at ``path``.

    ``metrics`` (e.g. ``{"psnr": 34.1, "ssim": 0.95, "dataset": "Set11"}``) go into the config and
    the model card; ``base_model`` (a Hub repo id of the saved base) into the card's metadata.
    ``storage_dtype="float16"`` (or "bfloat16") stores the tensors at half the size; loading casts
    them back to the network's dtype (measure what the rounding costs before shipping). An existing
    bundle at ``path`` is replaced atomically. Returns the folder.
    """
    require_lora(net, "save_adapters")
    store = to_storage_dtype(storage_dtype)
    config = _bundle_config(net, _check_metrics(metrics))
    if store is not None:
        config["storage_dtype"] = storage_dtype
    if base_model is not None and not hub.is_repo_id(base_model):
        raise InvalidArgumentError(f"base_model must be a Hub repo id like 'user/base', got {base_model!r}")
    tensors = {f"steps.{k}": v for k, v in net.steps.state_dict().items()}
    if isinstance(net.operator, nn.Module):
        tensors.update({f"operator.{k}": v for k, v in net.operator.state_dict().items()})
    if store is not None:
        tensors = cast(tensors, store)
    unfolding = tensor_bytes(tensors, {"format": "pt", "lorun_format": str(FORMAT_VERSION)})

    def fill(folder: Path) -> None:
        save_stages(net.denoisers, folder)  # stage_k/{adapter_config.json, adapter_model.safetensors}, PEFT's format
        if store is not None:
            for stage in net.adapter_names:
                _recast_file(folder / stage / ADAPTER_WEIGHTS_NAME, store)
        write(folder / UNFOLDING_NAME, unfolding)
        names = [UNFOLDING_NAME] + [f"{s}/{n}" for s in net.adapter_names for n in (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME)]
        config["files"] = {name: sha256((folder / name).read_bytes()) for name in names}
        write(folder / CONFIG_NAME, to_json(config, "lorun_config"))
        write(folder / CARD_NAME, bundle_card(config, base_model))

    return atomic_folder(path, fill, CONFIG_NAME)


def save_base(model: Network | nn.Module, path: str | os.PathLike, *, storage_dtype: str | None = None) -> Path:
    """Save the plain base denoiser once: ``model.safetensors`` + ``base_config.json`` (+ a card).

    ``model`` is a network (its shared base) or a denoiser module. ``storage_dtype="float16"``
    stores the weights at half the size, only if that is exact (round the base first, e.g.
    ``base.half().float()``, before training bundles on it), so the fingerprint is unchanged.
    Returns the folder.
    """
    store = to_storage_dtype(storage_dtype)
    state = base_state(model)
    if store is not None:
        inexact = [k for k, v in state.items() if v.is_floating_point() and not torch.equal(v.to(store).to(v.dtype), v)]
        if inexact:
            raise InvalidArgumentError(
                f"base weights {inexact[:3]} are not exactly representable in {storage_dtype}; round the base "
                f"(for example base.half().float()) before training bundles on it, or save without storage_dtype"
            )
    config = {
        "format": BASE_FORMAT,
        "format_version": FORMAT_VERSION,
        "library": "lorun_peft",
        "library_version": library_version(),
        "denoiser": denoiser_info(base_module(model)),
        "fingerprint": fingerprint(state),
        "parameters": sum(v.numel() for v in state.values()),
    }
    if store is not None:
        dtypes = {str(v.dtype).removeprefix("torch.") for v in state.values() if v.is_floating_point()}
        if len(dtypes) != 1:
            raise InvalidArgumentError(f"storage_dtype needs a base of one floating dtype, got {sorted(dtypes)}")
        config["storage_dtype"], config["dtype"] = storage_dtype, dtypes.pop()
        state = cast(state, store)
    weights = tensor_bytes(state, {"format": "pt", "lorun_fingerprint": config["fingerprint"]})

    def fill(folder: Path) -> None:
        write(folder / BASE_WEIGHTS_NAME, weights)
        write(folder / BASE_CONFIG_NAME, to_json(config, "base_config"))
        write(folder / CARD_NAME, base_card(config))

    return atomic_folder(path, fill, BASE_CONFIG_NAME)

