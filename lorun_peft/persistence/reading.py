"""Reading saved bundles and bases from a local folder or a Hub repo (+ subfolder, revision), every
file checked: the config against :mod:`lorun_peft.persistence.schema`, each file against its sha256, a base's
weights against its fingerprint. Only JSON and safetensors are read; nothing is unpickled.

>>> import tempfile
>>> from lorun_peft.denoisers import UNet
>>> from lorun_peft.persistence.saving import save_base
>>> folder = save_base(UNet(1, width=4, depth=1), tempfile.mkdtemp() + "/base")
>>> type(load_base(folder)).__name__        # lorun_peft's own denoisers are rebuilt from the config
'UNet'
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import torch
from torch import nn

from . import _hub as hub
from ..denoisers import DENOISERS, build_denoiser
from ..errors import CorruptFileError, InvalidArgumentError
from ._files import MAX_JSON_BYTES, Place, locate, parse_json, parse_safetensors, read_bytes, sha256
from .fingerprint import fingerprint
from .schema import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    BASE_CONFIG_NAME,
    BASE_FORMAT,
    BASE_PATTERNS,
    BASE_WEIGHTS_NAME,
    BUNDLE_PATTERNS,
    CONFIG_NAME,
    STORAGE_DTYPES,
    UNFOLDING_NAME,
    Bundle,
    cast,
    check_bundle_config,
    check_tensors,
)

__all__ = ["read_bundle", "read_place", "load_base", "read_base", "build_library_denoiser"]


def read_place(place: Place) -> Bundle:
    """The bundle at a located place, every file parsed and checked against its sha256."""
    where = f"{CONFIG_NAME} of {place.label}"
    config = parse_json(read_bytes(place, CONFIG_NAME, MAX_JSON_BYTES), where)
    check_bundle_config(config, where)
    sizes: dict[str, int] = {}

    def read_checked(name: str) -> bytes:
        data = read_bytes(place, name, MAX_JSON_BYTES if name.endswith(".json") else None)
        sizes[name] = len(data)
        if sha256(data) != config["files"][name]:
            if name.endswith(".safetensors"):
                parse_safetensors(data, f"{name} in {place.label}")  # the clearer message for a damaged file
            raise CorruptFileError(f"{name} in {place.label} changed since the bundle was saved (sha256 mismatch): corrupted or edited")
        return data

    listed = {f"stage_{k}" for k in range(config["K"])}
    extra = sorted(p.name for p in place.folder.glob("stage_*") if p.name not in listed)
    if extra:
        raise CorruptFileError(f"{place.label} holds {extra[:4]}, stages its {CONFIG_NAME} (K={config['K']}) does not list")
    adapter_configs, stages = [], []
    for k in range(config["K"]):
        name = f"stage_{k}/{ADAPTER_CONFIG_NAME}"
        adapter_configs.append(parse_json(read_checked(name), f"{name} in {place.label}"))
        name = f"stage_{k}/{ADAPTER_WEIGHTS_NAME}"
        stages.append(parse_safetensors(read_checked(name), f"{name} in {place.label}"))
    unfolding = parse_safetensors(read_checked(UNFOLDING_NAME), f"{UNFOLDING_NAME} in {place.label}")
    unknown = [k for k in unfolding if not k.startswith(("steps.", "operator."))]
    if unknown:
        raise CorruptFileError(f"{UNFOLDING_NAME} in {place.label} holds unexpected tensors {unknown[:4]}")
    steps = {k.removeprefix("steps."): v for k, v in unfolding.items() if k.startswith("steps.")}
    operator_state = {k.removeprefix("operator."): v for k, v in unfolding.items() if k.startswith("operator.")}
    if config.get("storage_dtype") is not None:  # stored at half size: back to the saved network's dtype
        dtype = getattr(torch, config["dtype"], None)
        if not isinstance(dtype, torch.dtype):
            raise CorruptFileError(f"{where}: 'dtype' {config['dtype']!r} is not a torch dtype")
        stages, steps, operator_state = [cast(t, dtype) for t in stages], cast(steps, dtype), cast(operator_state, dtype)
    return Bundle(place.label, config, adapter_configs, stages, steps, operator_state, sizes)


def read_bundle(source: str | os.PathLike, *, subfolder: str | None = None, revision: str | None = None, **hub_kwargs: Any) -> Bundle:
    """Read and verify a bundle from a local folder or a Hub repo (+ subfolder, revision) into memory.

    ``hub_kwargs``: huggingface_hub download options (``token``, ``endpoint``, ``cache_dir``, ...;
    see :func:`lorun_peft.persistence._hub.download_options`). Raises CorruptFileError for damaged, incomplete
    or edited files, HubError for Hub failures.
    """
    options = hub.check_options(hub_kwargs, "download")
    place = locate(source, subfolder, revision, BUNDLE_PATTERNS, CONFIG_NAME, options)
    try:
        return read_place(place)
    except CorruptFileError:
        if place.inode is None:
            raise
        again = locate(source, subfolder, revision, BUNDLE_PATTERNS, CONFIG_NAME, options)
        if again.inode == place.inode:
            raise
        return read_place(again)  # a save replaced the folder while we read it: read the new one once


def load_base(
    base: str | os.PathLike,
    *,
    module: nn.Module | None = None,
    subfolder: str | None = None,
    revision: str | None = None,
    **hub_kwargs: Any,
) -> nn.Module:
    """Load a base saved by :func:`~lorun_peft.persistence.saving.save_base` from a folder or Hub repo.

    The library's own denoisers (``lorun_peft.denoisers.DENOISERS``) are rebuilt from the saved
    config; for any other class pass an instance as ``module`` to receive the weights (class paths
    written in a file are never imported). The weights' fingerprint is checked. ``hub_kwargs``:
    as for :func:`read_bundle`.
    """
    options = hub.check_options(hub_kwargs, "download")
    place = locate(base, subfolder, revision, BASE_PATTERNS, BASE_CONFIG_NAME, options)
    config, weights = read_base(place)
    if module is None:
        module = build_library_denoiser(config["denoiser"], place.label)
    if not isinstance(module, nn.Module):
        raise InvalidArgumentError(f"module must be a torch.nn.Module instance, got {type(module).__name__}")
    check_tensors(weights, module.state_dict(), f"base {place.label} vs the module {type(module).__name__}")
    module.load_state_dict(weights, strict=True, assign=True)
    return module


def read_base(place: Place) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A saved base's config and weights, after checking the config's format and the weights' fingerprint."""
    config = parse_json(read_bytes(place, BASE_CONFIG_NAME, MAX_JSON_BYTES), f"{BASE_CONFIG_NAME} of {place.label}")
    if config.get("format") != BASE_FORMAT or not isinstance(config.get("denoiser"), dict) or not isinstance(config.get("fingerprint"), str):
        raise CorruptFileError(f"{BASE_CONFIG_NAME} of {place.label} is not a lorun_peft base config (edited or damaged?)")
    weights = parse_safetensors(read_bytes(place, BASE_WEIGHTS_NAME), f"{BASE_WEIGHTS_NAME} in {place.label}")
    if config.get("storage_dtype") is not None:  # stored at half size (exactly): back to the trained dtype
        dtype = getattr(torch, str(config.get("dtype")), None)
        if config["storage_dtype"] not in STORAGE_DTYPES or not isinstance(dtype, torch.dtype):
            raise CorruptFileError(f"{BASE_CONFIG_NAME} of {place.label} has a bad storage_dtype/dtype (edited or damaged?)")
        weights = cast(weights, dtype)
    if fingerprint(weights) != config["fingerprint"]:
        raise CorruptFileError(f"{BASE_WEIGHTS_NAME} in {place.label} does not match the fingerprint in {BASE_CONFIG_NAME} (corrupted or edited)")
    return config, weights


def build_library_denoiser(info: Mapping[str, Any], label: str) -> nn.Module:
    """One of lorun_peft's own denoisers, rebuilt from its saved spec (module, qualname, registry name, config)."""
    name, config = info.get("registry_name"), info.get("config")
    cls = DENOISERS.get(name) if isinstance(name, str) else None
    if cls is None or (cls.__module__, cls.__qualname__) != (info.get("module"), info.get("qualname")):
        raise InvalidArgumentError(
            f"base {label} is a {info.get('module')}.{info.get('qualname')}, not one of lorun_peft's denoisers "
            f"({sorted(DENOISERS)}); build that module yourself and pass it: load_base(base, module=MyDenoiser(...))"
        )
    if not isinstance(config, dict):
        raise CorruptFileError(f"base {label}: the denoiser config is missing")
    try:
        return build_denoiser(name, **config)
    except (TypeError, InvalidArgumentError) as err:
        raise CorruptFileError(f"base {label}: cannot rebuild {name} from its saved config: {err}") from None
