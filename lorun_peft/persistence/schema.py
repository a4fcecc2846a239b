"""The on-disk format of task bundles and bases: file names, format versions, the keys of
``lorun_config.json`` and their checks, float16/bfloat16 storage, and the in-memory
:class:`Bundle` a read produces.

A bundle folder holds::

    lorun_config.json                     K, algorithm, gamma, ranks, operator config, denoiser class,
                                          base fingerprint, library version, sha256 of every file below
    unfolding.safetensors                 step parameters ("steps.*") and operator state ("operator.*")
    stage_k/adapter_config.json           PEFT's own format: PeftModel.from_pretrained(base, folder,
    stage_k/adapter_model.safetensors       subfolder="stage_k") loads stage k with plain PEFT
    README.md                             model card with the Hub's metadata header

A base folder holds ``model.safetensors``, ``base_config.json`` and ``README.md``.

>>> check_bundle_config({"format": "lorun_peft.bundle", "format_version": 99}, "lorun_config.json")
Traceback (most recent call last):
...
lorun_peft.errors.IncompatibleBundleError: lorun_config.json: format_version 99 is not supported (this lorun_peft reads 1..1); upgrade lorun_peft
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Mapping

import torch

from ..errors import CorruptFileError, IncompatibleBundleError, InvalidArgumentError
from ..config import UnfoldConfig

__all__ = [
    "Bundle", "FORMAT_VERSION", "CONFIG_NAME", "UNFOLDING_NAME", "CARD_NAME", "BASE_CONFIG_NAME", "BASE_WEIGHTS_NAME",
    "ADAPTER_CONFIG_NAME", "ADAPTER_WEIGHTS_NAME", "BUNDLE_PATTERNS", "BASE_PATTERNS", "CONFIG_KEYS", "STORAGE_DTYPES",
    "check_bundle_config", "check_tensors", "to_storage_dtype", "cast", "library_version",
]

FORMAT, BASE_FORMAT, FORMAT_VERSION = "lorun_peft.bundle", "lorun_peft.base", 1
CONFIG_NAME, UNFOLDING_NAME, CARD_NAME = "lorun_config.json", "unfolding.safetensors", "README.md"
BASE_CONFIG_NAME, BASE_WEIGHTS_NAME = "base_config.json", "model.safetensors"
ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME = "adapter_config.json", "adapter_model.safetensors"
BUNDLE_PATTERNS = (CONFIG_NAME, UNFOLDING_NAME, CARD_NAME, f"stage_*/{ADAPTER_CONFIG_NAME}", f"stage_*/{ADAPTER_WEIGHTS_NAME}")
BASE_PATTERNS = (BASE_CONFIG_NAME, BASE_WEIGHTS_NAME, CARD_NAME)
STORAGE_DTYPES = ("float16", "bfloat16")
# the keys of lorun_config.json that are UnfoldConfig fields (the rest describe the files)
UNFOLD_KEYS = ("K", "algorithm", "gamma", "share", "adapter", "noise_level", "target_modules", "adapter_options")
CONFIG_KEYS = {
    "format", "format_version", "library", "library_version", "K", "algorithm", "gamma", "share", "adapter",
    "noise_level", "target_modules", "adapter_options", "adapter_names", "ranks", "dtype", "operator", "denoiser",
    "base_fingerprint", "metrics", "files", "storage_dtype",
}


@dataclass
class Bundle:
    """A bundle read and checked in memory (files parsed, sha256 verified); ready to swap in."""

    label: str
    config: dict[str, Any]
    adapter_configs: list[dict[str, Any]]
    stages: list[dict[str, torch.Tensor]]
    steps: dict[str, torch.Tensor]
    operator_state: dict[str, torch.Tensor]
    sizes: dict[str, int] = field(default_factory=dict)


def library_version() -> str:
    """The installed lorun_peft's version, written into every config."""
    try:
        return metadata.version("lorun_peft")
    except metadata.PackageNotFoundError:
        return "unknown"


def bundle_files(K: int) -> set[str]:  # noqa: N803
    """The files a K-stage bundle's config lists with their sha256."""
    return {UNFOLDING_NAME} | {f"stage_{k}/{n}" for k in range(K) for n in (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME)}


def check_bundle_config(config: dict[str, Any], where: str) -> None:
    """Raise CorruptFileError (IncompatibleBundleError for a newer format) unless ``config`` is a
    complete, consistent ``lorun_config.json``."""

    def bad(key: str, want: str) -> CorruptFileError:
        return CorruptFileError(f"{where}: {key!r} must be {want}, got {config.get(key)!r} (edited or damaged file?)")

    if config.get("format") != FORMAT:
        raise bad("format", repr(FORMAT))
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise IncompatibleBundleError(f"{where}: format_version {version!r} is not supported (this lorun_peft reads 1..{FORMAT_VERSION}); upgrade lorun_peft")
    K = config.get("K")  # noqa: N806
    if not isinstance(K, int) or isinstance(K, bool) or K < 1:
        raise bad("K", "an int >= 1")
    settings = {k: config[k] for k in UNFOLD_KEYS if k in config}
    UnfoldConfig.from_dict(settings, where)  # the network's settings: checked by the one schema
    checks = {
        "share": (lambda v: v == "lora", "'lora'"),
        "operator": (lambda v: isinstance(v, dict) and isinstance(v.get("type"), str), "an object with a 'type'"),
        "base_fingerprint": (lambda v: isinstance(v, str) and v.startswith("sha256:"), "'sha256:...'"),
        "adapter_names": (lambda v: v == [f"stage_{k}" for k in range(K)], f"['stage_0', ..., 'stage_{K - 1}']"),
        "ranks": (lambda v: isinstance(v, dict), "an object"),
        "dtype": (lambda v: isinstance(v, str), "a string"),
        "metrics": (lambda v: isinstance(v, dict), "an object"),
        "files": (lambda v: isinstance(v, dict) and all(isinstance(h, str) for h in v.values()), "an object of sha256 strings"),
        "storage_dtype": (lambda v: v is None or v in STORAGE_DTYPES, f"absent or one of {STORAGE_DTYPES}"),
    }
    for key, (ok, want) in checks.items():
        if not ok(config.get(key)):
            raise bad(key, want)
    unknown = sorted(set(config) - CONFIG_KEYS)
    if unknown:
        raise CorruptFileError(f"{where}: unknown keys {unknown[:5]} (edited file, or written by a newer lorun_peft)")
    expected = bundle_files(K)
    if set(config["files"]) != expected:
        extra, missing = sorted(set(config["files"]) - expected), sorted(expected - set(config["files"]))
        raise CorruptFileError(f"{where}: the file list does not match K={K} (extra {extra[:4]}, missing {missing[:4]}); the config was edited")


def check_tensors(
    saved: Mapping[str, torch.Tensor],
    live: Mapping[str, torch.Tensor],
    what: str,
    error: type[Exception] = IncompatibleBundleError,
    dtypes: bool = True,
) -> None:
    """Raise ``error`` unless ``saved`` has the names, shapes (and with ``dtypes`` the dtypes) of ``live``."""
    if set(saved) != set(live):
        extra, missing = sorted(set(saved) - set(live)), sorted(set(live) - set(saved))
        raise error(f"{what}: tensors differ from this network's (bundle only: {extra[:3]}, network only: {missing[:3]})")
    for name, tensor in saved.items():
        if tensor.shape != live[name].shape or (dtypes and tensor.dtype != live[name].dtype):
            raise error(
                f"{what}: {name} is {tuple(tensor.shape)} {tensor.dtype} in the bundle but "
                f"{tuple(live[name].shape)} {live[name].dtype} in this network"
            )


def to_storage_dtype(value: str | None) -> torch.dtype | None:
    """The torch dtype of a ``storage_dtype=`` argument (None: store as trained)."""
    if value is None:
        return None
    if value not in STORAGE_DTYPES:
        raise InvalidArgumentError(f"storage_dtype must be None or one of {STORAGE_DTYPES}, got {value!r}")
    return getattr(torch, value)


def cast(tensors: Mapping[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``tensors`` with the floating ones in ``dtype`` (storing at half size, and reading back)."""
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
