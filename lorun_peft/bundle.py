"""Task bundles: one degradation setting's K stage adapters, step parameters and operator, saved as
safetensors + JSON, loaded into a fresh network or swapped into a live one, pushed to and pulled
from the Hugging Face Hub.

A bundle folder holds::

    lorun_config.json                     K, algorithm, gamma, ranks, operator config, denoiser class,
                                          base fingerprint, library version, sha256 of every file below
    unfolding.safetensors                 step parameters ("steps.*") and operator state ("operator.*")
    stage_k/adapter_config.json           PEFT's own format: PeftModel.from_pretrained(base, folder,
    stage_k/adapter_model.safetensors       subfolder="stage_k") loads stage k with plain PEFT
    README.md                             model card with the Hub's metadata header

The base denoiser is saved once (``save_base``: ``model.safetensors`` + ``base_config.json``) and
bundles name it by fingerprint: sha256 over the sorted names, dtypes, shapes and bytes of the plain
denoiser's state (PEFT's ``base_layer.`` wrapping removed, adapters left out).

Nothing is unpickled: only JSON and safetensors are read. Saving writes a temporary folder beside
the target and renames it in. Swapping (``load_adapters``) checks everything and builds every new
tensor before it touches the live network, so a bad bundle raises and leaves the network as it was.

>>> import tempfile, torch
>>> from lorun_peft import unfold
>>> from lorun_peft.denoisers import UNet
>>> from lorun_peft.operators import BlockCS
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> net = unfold(UNet(1, width=4, depth=1), BlockCS(0.25, block=8), K=2, noise_level=True)
>>> folder = save_adapters(net, tempfile.mkdtemp() + "/cs-0.25")
>>> sorted(p.name for p in folder.iterdir())
['README.md', 'lorun_config.json', 'stage_0', 'stage_1', 'unfolding.safetensors']
>>> other = unfold(UNet(1, width=4, depth=1), BlockCS(0.10, block=8), K=2, noise_level=True)
>>> other.denoisers.model.load_state_dict(net.denoisers.model.state_dict())  # same base weights
<All keys matched successfully>
>>> _ = load_adapters(other, folder)       # swaps adapters, steps and the (re-shaped) operator
>>> other.operator.measurements
16
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import stat
import tempfile
import time
import uuid
import weakref
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from peft import get_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from . import hub
from .denoisers import DENOISERS, build_denoiser
from .errors import CorruptFileError, HubError, IncompatibleBundleError, InvalidArgumentError
from .io import fsync_dir as _fsync_dir
from .io import permit_tree as _permit_tree
from .operators import operator_from_config
from .operators.base import OPERATORS
from .steps import STEPS

__all__ = [
    "BundleMethods",
    "Bundle",
    "BundleInfo",
    "save_adapters",
    "save_base",
    "read_bundle",
    "load_adapters",
    "load_base",
    "list_bundles",
    "push_adapters",
    "push_base",
    "push_folder",
    "pull",
    "copy_bundle",
    "inspect",
    "base_state",
    "fingerprint",
    "FORMAT_VERSION",
]

FORMAT, BASE_FORMAT, FORMAT_VERSION = "lorun_peft.bundle", "lorun_peft.base", 1
CONFIG_NAME, UNFOLDING_NAME, CARD_NAME = "lorun_config.json", "unfolding.safetensors", "README.md"
BASE_CONFIG_NAME, BASE_WEIGHTS_NAME = "base_config.json", "model.safetensors"
ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME = "adapter_config.json", "adapter_model.safetensors"
BUNDLE_PATTERNS = (CONFIG_NAME, UNFOLDING_NAME, CARD_NAME, f"stage_*/{ADAPTER_CONFIG_NAME}", f"stage_*/{ADAPTER_WEIGHTS_NAME}")
BASE_PATTERNS = (BASE_CONFIG_NAME, BASE_WEIGHTS_NAME, CARD_NAME)
MAX_JSON_BYTES = 16 * 2**20
# Adapter-config keys that are bookkeeping (PEFT sets them while saving) or only steer the
# initialisation of new weights: a swap copies trained weights, so they need not agree.
_IGNORED_ADAPTER_KEYS = {
    "peft_version", "inference_mode", "auto_mapping", "base_model_name_or_path", "revision",
    "init_lora_weights", "init_weights", "loftq_config", "eva_config", "corda_config", "lora_ga_config",
}
_TASK_TAGS = {"BlockCS": "compressive-sensing", "BlurDownsample": "super-resolution", "CASSI": "spectral-snapshot-compressive-imaging"}


def _library_version() -> str:
    try:
        return metadata.version("lorun_peft")
    except metadata.PackageNotFoundError:
        return "unknown"


# ==== the base: plain state and fingerprint ==================================================
def base_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The plain denoiser's state_dict: of a network's base, a PEFT-wrapped or a plain denoiser.

    PEFT moves each adapted layer's weights under ``<layer>.base_layer``; this undoes the renaming
    and leaves the adapters out, so a wrapped base gives the same names as the module it wraps.
    """
    if isinstance(model, BundleMethods):
        if model.share == "lora":
            model = model.denoisers.model
        elif model.share == "base":
            model = model.denoisers.denoiser
        else:
            raise InvalidArgumentError("a Block-K network (share='none') has K denoisers, not one shared base")
    model = getattr(getattr(model, "base_model", None), "model", model)  # a PeftModel: the wrapped module
    tuners = {name for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)}  # PEFT touch point
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        layer = next((i for i in range(len(parts)) if ".".join(parts[:i]) in tuners), None)
        if layer is not None:
            if parts[layer] != "base_layer":
                continue  # an adapter's tensor
            parts = parts[:layer] + parts[layer + 1 :]
        state[".".join(parts)] = value
    return state


def fingerprint(model: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """``"sha256:<hex>"`` over the sorted names, dtypes, shapes and bytes of the base's state.

    >>> from torch import nn
    >>> layer = nn.Linear(2, 2)
    >>> fingerprint(layer) == fingerprint(dict(layer.state_dict()))
    True
    """
    state = model if isinstance(model, Mapping) else base_state(model)
    digest = hashlib.sha256(b"lorun_peft base fingerprint v1\n")
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        header = json.dumps([name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape)])
        digest.update(header.encode() + b"\n")
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return "sha256:" + digest.hexdigest()


class _NetCache:
    """What swaps reuse for one network: its base tensors, stage slots and base fingerprint.

    Valid while the network's parameter objects stay the same (checked on every swap by their
    ids, about 1 ms); in-place changes to base tensors (``_version``, data pointer) redo the
    fingerprint. Kept in a weak dictionary, so nothing is added to the network itself.
    """

    def __init__(self, key: tuple, base: dict[str, torch.Tensor]) -> None:
        self.key, self.base = key, base
        self.slots: list[dict[str, nn.Parameter]] | None = None
        self.fingerprint: tuple[tuple, str] | None = None


_CACHES: "weakref.WeakKeyDictionary[nn.Module, _NetCache]" = weakref.WeakKeyDictionary()


def _net_cache(net: BundleMethods) -> _NetCache:
    key = (id(net.denoisers), tuple(id(p) for p in net.denoisers.peft_model.parameters()))
    cache = _CACHES.get(net)
    if cache is None or cache.key != key:
        cache = _CACHES[net] = _NetCache(key, base_state(net))
    return cache


def _live_fingerprint(net: BundleMethods, cache: _NetCache | None = None) -> str:
    """The network's base fingerprint, recomputed only when a base tensor changed."""
    if net.share != "lora":
        return fingerprint(net)
    cache = cache or _net_cache(net)
    versions = tuple((t.data_ptr(), getattr(t, "_version", None)) for t in cache.base.values())
    if cache.fingerprint is None or cache.fingerprint[0] != versions or any(v is None for _, v in versions):
        cache.fingerprint = (versions, fingerprint(cache.base))
    return cache.fingerprint[1]


# ==== folders: atomic writes and safe reads ===================================================
def _atomic_folder(target: str | os.PathLike, fill: Callable[[Path], None], marker: str) -> Path:
    """Write a folder beside ``target`` with ``fill(tmp)``, then rename it to ``target``.

    Replacing an existing folder takes two renames (old aside to ``.NAME.old-*``, new in), then
    the old one is deleted. A process killed between the two renames leaves no ``target`` but a
    complete ``.NAME.old-*``: readers fall back to it (see ``_resolve_local``) and the next save
    cleans it up. At every moment a complete old or complete new folder exists.
    """
    target = Path(target)
    if target.name in ("", ".", ".."):
        raise InvalidArgumentError(f"cannot save to {str(target)!r}: give a folder name")
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.is_file():
        raise InvalidArgumentError(f"{target} exists and is not a folder; refusing to replace it")
    if target.is_dir() and any(target.iterdir()) and not (target / marker).is_file():
        raise InvalidArgumentError(f"{target} exists and is not a saved lorun folder (no {marker}); refusing to replace it")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    old: Path | None = None
    try:
        fill(tmp)
        _permit_tree(tmp)  # files 0644 and folders 0755 under umask 022, whoever wrote them
        _fsync_tree(tmp)
        if target.exists():
            old = parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
            os.rename(target, old)
        os.rename(tmp, target)
        _fsync_dir(parent)
    except BaseException:
        if old is not None and old.exists() and not target.exists():
            os.rename(old, target)  # put the old folder back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _sweep(parent, target.name)
    return target


def _sweep(parent: Path, name: str) -> None:
    """Delete old copies left beside ``name`` and temporary folders of saves killed over 10 min ago."""
    for leftover in parent.glob(f".{name}.old-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in parent.glob(f".{name}.tmp-*"):
        with contextlib.suppress(OSError):
            if time.time() - leftover.stat().st_mtime > 600:
                shutil.rmtree(leftover, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(root))


def _resolve_local(folder: Path, marker: str) -> Path:
    """``folder``, or the complete old copy a save killed between its two renames left beside it."""
    if folder.exists():
        return folder
    olds = [p for p in folder.parent.glob(f".{folder.name}.old-*") if (p / marker).is_file()]
    return max(olds, key=lambda p: p.stat().st_mtime) if olds else folder


@dataclass
class _Place:
    """Where a bundle or base lives: the folder, the fence its files must stay in, a label, and for
    local folders the folder's inode when found (a save replacing it meanwhile changes it)."""

    folder: Path
    fence: Path
    label: str
    inode: int | None = None


def _locate(
    source: str | os.PathLike,
    subfolder: str | None,
    revision: str | None,
    patterns: Sequence[str],
    marker: str,
    hub_options: Mapping[str, Any],
) -> _Place:
    """Find a saved folder: a local path (optionally + subfolder) or a Hub repo (+ subfolder, revision)."""
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidArgumentError(f"expected a folder path or a Hub repo id, got {type(source).__name__}")
    subfolder = hub.check_subfolder(subfolder)
    root = Path(source)
    local = root / subfolder if subfolder else root
    if isinstance(source, Path) or root.exists() or _resolve_local(local, marker).exists() or not hub.is_repo_id(str(source)):
        if revision is not None:
            raise InvalidArgumentError(f"revision={revision!r} applies to Hub repos; {str(source)!r} is a local folder")
        folder = _resolve_local(local, marker)
        if not folder.is_dir():
            raise InvalidArgumentError(f"{local} is not a folder (and not a Hub repo id 'user/name')")
        if subfolder:
            hub.contained(root, os.path.relpath(folder, root))  # the subfolder must not escape via a symlink
        if not (folder / marker).is_file():
            raise InvalidArgumentError(f"{folder} has no {marker}: not a folder saved by lorun_peft")
        return _Place(folder, _local_fence(folder), str(folder), folder.stat().st_ino)
    prefix = f"{subfolder}/" if subfolder else ""
    snapshot, fence = _download(str(source), [prefix + p for p in patterns], revision, hub_options)
    label = f"{source}{'/' + subfolder if subfolder else ''} (revision {revision or 'main'})"
    folder = hub.contained(snapshot, subfolder or ".", allowed=snapshot)
    if not (folder / marker).is_file():
        offline = " (offline: only the local cache was searched)" if hub.offline() else ""
        raise HubError(
            f"no saved lorun folder at {subfolder or 'the root'!r} in repo {str(source)!r}, revision {revision or 'main'!r}: "
            f"file {prefix}{marker} not found{offline}"
        )
    return _Place(folder, fence, label)


def _download(repo_id: str, patterns: list[str], revision: str | None, options: Mapping[str, Any]) -> tuple[Path, Path]:
    try:
        return hub.download(repo_id, patterns, revision=revision, **options)
    except HubError as err:
        raise HubError(f"{err} (and there is no local folder {repo_id!r})") from err


def _local_fence(folder: Path) -> Path:
    """The folder a local bundle's files must stay in: itself, or for a folder inside the Hub cache
    (``models--ORG--NAME/snapshots/COMMIT/...``, whose files link to ``../../blobs``) that repo's cache folder."""
    absolute = folder.absolute()
    for parent in absolute.parents:
        if parent.name == "snapshots" and parent.parent.name.startswith("models--"):
            return parent.parent
    return folder


def _read_bytes(place: _Place, relative: str, limit: int | None = None) -> bytes:
    """The bytes of ``place.folder / relative``: a regular file that must not lead outside the fence."""
    path = place.folder / relative
    step = place.folder
    for part in Path(relative).parts:  # resolve (slow) only when a symlink is on the way
        step = step / part
        if step.is_symlink():
            path = hub.contained(place.folder, relative, allowed=place.fence)
            break
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise CorruptFileError(f"{place.label} lacks {relative}: the folder is incomplete") from None
    if not stat.S_ISREG(info.st_mode):
        raise CorruptFileError(f"{place.folder / relative} is not a regular file")
    if limit is not None and info.st_size > limit:
        raise CorruptFileError(f"{place.folder / relative} is {info.st_size} bytes, too large for a config file")
    return path.read_bytes()


def _parse_json(data: bytes, where: str) -> dict[str, Any]:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not allowed")

    try:
        value = json.loads(data.decode("utf-8"), parse_constant=refuse)
    except (UnicodeDecodeError, ValueError) as err:
        raise CorruptFileError(f"{where} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise CorruptFileError(f"{where} must hold a JSON object, got {type(value).__name__}")
    return value


def _parse_safetensors(data: bytes, where: str) -> dict[str, torch.Tensor]:
    try:
        return load_safetensors(data)
    except Exception as err:  # noqa: BLE001 - safetensors raises several types for bad files
        raise CorruptFileError(f"{where} is not a valid safetensors file (truncated or corrupted?): {err}") from None


def _to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise InvalidArgumentError(f"{what} must be JSON-serialisable (plain numbers, strings, lists, dicts): {err}") from None


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tensor_bytes(tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    return save_safetensors(plain, metadata=metadata)


# ==== saving ==================================================================================
def _require_lora(net: Any, what: str) -> None:
    if not isinstance(net, BundleMethods):
        raise InvalidArgumentError(f"{what} needs an UnfoldedNetwork, got {type(net).__name__}")
    if net.share != "lora":
        kind = "Block-1 (share='base'): call net.to_lora() first" if net.share == "base" else "Block-K (share='none')"
        raise InvalidArgumentError(f"{what}: bundles hold LoRun stage adapters, but this network is {kind}")


def _operator_config(operator: Any) -> dict[str, Any]:
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
    return json.loads(_to_json(config, "the operator's config()"))


def _denoiser_info(model: nn.Module) -> dict[str, Any]:
    cls = type(model)
    config = getattr(model, "config", None)
    config = config() if callable(config) else config
    config = json.loads(_to_json(dict(config), "the denoiser's config()")) if isinstance(config, Mapping) else None
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


def _bundle_config(net: BundleMethods, metrics: dict[str, Any]) -> dict[str, Any]:
    step = next(net.steps.parameters())
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library": "lorun_peft",
        "library_version": _library_version(),
        "K": net.K,
        "algorithm": net.algorithm,
        "gamma": net.gamma,
        "share": net.share,
        "adapter": net.adapter,
        "noise_level": net.noise_level,
        "target_modules": net.target_modules if isinstance(net.target_modules, (str, type(None))) else list(net.target_modules),
        "adapter_options": json.loads(_to_json(net.adapter_options, "adapter_options")),
        "adapter_names": list(net.adapter_names),
        "ranks": {row.name: row.rank for row in net.rank_table().layers},
        "dtype": str(step.dtype).removeprefix("torch."),
        "operator": _operator_config(net.operator),
        "denoiser": _denoiser_info(net.denoisers.model),
        "base_fingerprint": _live_fingerprint(net),
        "metrics": metrics,
    }


STORAGE_DTYPES = ("float16", "bfloat16")


def _storage_dtype(value: str | None) -> torch.dtype | None:
    if value is None:
        return None
    if value not in STORAGE_DTYPES:
        raise InvalidArgumentError(f"storage_dtype must be None or one of {STORAGE_DTYPES}, got {value!r}")
    return getattr(torch, value)


def _cast(tensors: Mapping[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``tensors`` with the floating ones in ``dtype`` (storing at half size, and reading back)."""
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}


def _recast_file(path: Path, dtype: torch.dtype) -> None:
    """Rewrite a safetensors file (PEFT's adapter weights) with its floating tensors in ``dtype``."""
    _write(path, _tensor_bytes(_cast(_parse_safetensors(path.read_bytes(), str(path)), dtype), {"format": "pt"}))


def save_adapters(
    net: BundleMethods,
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
    _require_lora(net, "save_adapters")
    store = _storage_dtype(storage_dtype)
    config = _bundle_config(net, _check_metrics(metrics))
    if store is not None:
        config["storage_dtype"] = storage_dtype
    if base_model is not None and not hub.is_repo_id(base_model):
        raise InvalidArgumentError(f"base_model must be a Hub repo id like 'user/base', got {base_model!r}")
    tensors = {f"steps.{k}": v for k, v in net.steps.state_dict().items()}
    if isinstance(net.operator, nn.Module):
        tensors.update({f"operator.{k}": v for k, v in net.operator.state_dict().items()})
    if store is not None:
        tensors = _cast(tensors, store)
    unfolding = _tensor_bytes(tensors, {"format": "pt", "lorun_format": str(FORMAT_VERSION)})

    def fill(folder: Path) -> None:
        # PEFT writes stage_k/{adapter_config.json, adapter_model.safetensors} in its own format.
        net.denoisers.peft_model.save_pretrained(str(folder), selected_adapters=list(net.adapter_names))
        (folder / CARD_NAME).unlink(missing_ok=True)  # PEFT's generic card; ours follows
        if store is not None:
            for stage in net.adapter_names:
                _recast_file(folder / stage / ADAPTER_WEIGHTS_NAME, store)
        _write(folder / UNFOLDING_NAME, unfolding)
        names = [UNFOLDING_NAME] + [f"{s}/{n}" for s in net.adapter_names for n in (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME)]
        config["files"] = {name: _sha256((folder / name).read_bytes()) for name in names}
        _write(folder / CONFIG_NAME, _to_json(config, "lorun_config"))
        _write(folder / CARD_NAME, _model_card(config, base_model))

    return _atomic_folder(path, fill, CONFIG_NAME)


def save_base(model: BundleMethods | nn.Module, path: str | os.PathLike, *, storage_dtype: str | None = None) -> Path:
    """Save the plain base denoiser once: ``model.safetensors`` + ``base_config.json`` (+ a card).

    ``model`` is a network (its shared base) or a denoiser module. ``storage_dtype="float16"``
    stores the weights at half the size, only if that is exact (round the base first, e.g.
    ``base.half().float()``, before training bundles on it), so the fingerprint is unchanged.
    Returns the folder.
    """
    store = _storage_dtype(storage_dtype)
    state = base_state(model)
    if store is not None:
        inexact = [k for k, v in state.items() if v.is_floating_point() and not torch.equal(v.to(store).to(v.dtype), v)]
        if inexact:
            raise InvalidArgumentError(
                f"base weights {inexact[:3]} are not exactly representable in {storage_dtype}; round the base "
                f"(for example base.half().float()) before training bundles on it, or save without storage_dtype"
            )
    if isinstance(model, BundleMethods):
        module = model.denoisers.model if model.share == "lora" else model.denoisers.denoiser
    else:
        module = getattr(getattr(model, "base_model", None), "model", model)
    config = {
        "format": BASE_FORMAT,
        "format_version": FORMAT_VERSION,
        "library": "lorun_peft",
        "library_version": _library_version(),
        "denoiser": _denoiser_info(module),
        "fingerprint": fingerprint(state),
        "parameters": sum(v.numel() for v in state.values()),
    }
    if store is not None:
        dtypes = {str(v.dtype).removeprefix("torch.") for v in state.values() if v.is_floating_point()}
        if len(dtypes) != 1:
            raise InvalidArgumentError(f"storage_dtype needs a base of one floating dtype, got {sorted(dtypes)}")
        config["storage_dtype"], config["dtype"] = storage_dtype, dtypes.pop()
        state = _cast(state, store)
    weights = _tensor_bytes(state, {"format": "pt", "lorun_fingerprint": config["fingerprint"]})

    def fill(folder: Path) -> None:
        _write(folder / BASE_WEIGHTS_NAME, weights)
        _write(folder / BASE_CONFIG_NAME, _to_json(config, "base_config"))
        _write(folder / CARD_NAME, _base_card(config))

    return _atomic_folder(path, fill, BASE_CONFIG_NAME)


def _yaml_header(tags: list[str], base_model: str | None, library: str = "peft") -> str:
    lines = ["---", f"library_name: {library}", "pipeline_tag: image-to-image", "tags:"]
    lines += [f"- {json.dumps(tag)}" for tag in tags]
    if base_model:
        lines.append(f"base_model: {json.dumps(base_model)}")
    return "\n".join(lines + ["---", ""])


def _task(operator: Mapping[str, Any]) -> str:
    skip = ("type", "seed", "init", "learnable")  # how the operator was initialised, not what it measures
    settings = ", ".join(f"{k}={v}" for k, v in operator.items() if k not in skip and isinstance(v, (int, float, str)))
    return f"{operator.get('type')} ({settings})"


def _model_card(config: dict[str, Any], base_model: str | None) -> str:
    operator = config["operator"]
    tags = ["lorun_peft", "peft", config["adapter"], "deep-unfolding", "image-restoration"]
    tags += [_TASK_TAGS[operator["type"]]] if operator["type"] in _TASK_TAGS else []
    denoiser = config["denoiser"]
    rows = [
        ("task", _task(operator)),
        ("stages K", config["K"]),
        ("algorithm", config["algorithm"].upper()),
        ("adapters", f"{config['adapter']}, gamma = {config['gamma']}%, ranks {min(config['ranks'].values())}-{max(config['ranks'].values())}"),
        ("noise-level input", config["noise_level"]),
        ("base denoiser", f"`{denoiser['module']}.{denoiser['qualname']}`"),
        ("base fingerprint", f"`{config['base_fingerprint']}`"),
        ("lorun_peft version", config["library_version"]),
    ]
    for key, value in config["metrics"].items():
        label = {"psnr": "PSNR (dB)", "ssim": "SSIM"}.get(key.lower(), key)
        rows.append((label, f"{value:.4g}" if isinstance(value, float) else value))
    table = "\n".join(["| setting | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])
    return (
        _yaml_header(tags, base_model)
        + f"\n# LoRun task bundle: {_task(operator)}\n\n"
        "A deep LoRA-unfolding network (LoRun) task for [lorun_peft](https://pypi.org/project/lorun_peft/): "
        f"{config['K']} PEFT adapters, one per unfolding stage, for one frozen shared base denoiser, plus the "
        "stage step parameters and the degradation operator's state. The base is saved separately and must match "
        "the fingerprint below.\n\n"
        f"{table}\n\n## Use\n\n```python\nimport lorun_peft\n"
        "net = lorun_peft.load(BASE, BUNDLE)            # BASE: saved base folder, Hub repo or module\n"
        "net = lorun_peft.load(BASE, BUNDLE, module=MyDenoiser(...))  # a base of your own denoiser class\n"
        "net.load_adapters(OTHER_BUNDLE)               # swap the task in the live network\n```\n\n"
        "Each stage is also a plain PEFT adapter: "
        '`peft.PeftModel.from_pretrained(base, BUNDLE, subfolder="stage_0")`.\n\n'
        "## Files\n\n- `lorun_config.json`: settings, fingerprint, sha256 of every file\n"
        "- `unfolding.safetensors`: step parameters and operator state\n"
        "- `stage_k/adapter_config.json`, `stage_k/adapter_model.safetensors`: PEFT adapters\n"
    )


def _base_card(config: dict[str, Any]) -> str:
    denoiser = config["denoiser"]
    return (
        _yaml_header(["lorun_peft", "deep-unfolding", "image-restoration", "denoiser"], None, library="lorun_peft")
        + f"\n# LoRun base denoiser: {denoiser['qualname']}\n\n"
        f"The frozen shared base of LoRun task bundles (fingerprint `{config['fingerprint']}`, "
        f"{config['parameters']:,} parameters). Load with `lorun_peft.load(THIS, BUNDLE)`.\n"
    )


# ==== reading a bundle ========================================================================
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


CONFIG_KEYS = {
    "format", "format_version", "library", "library_version", "K", "algorithm", "gamma", "share", "adapter",
    "noise_level", "target_modules", "adapter_options", "adapter_names", "ranks", "dtype", "operator", "denoiser",
    "base_fingerprint", "metrics", "files", "storage_dtype",
}


def _check_bundle_config(config: dict[str, Any], where: str) -> None:
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
    checks = {
        "algorithm": (lambda v: isinstance(v, str) and v in STEPS, f"one of {sorted(STEPS)}"),
        "share": (lambda v: v == "lora", "'lora'"),
        "adapter": (lambda v: isinstance(v, str), "a string"),
        "noise_level": (lambda v: isinstance(v, bool), "true or false"),
        "gamma": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
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
    expected = {UNFOLDING_NAME} | {f"stage_{k}/{n}" for k in range(K) for n in (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME)}
    if set(config["files"]) != expected:
        extra, missing = sorted(set(config["files"]) - expected), sorted(expected - set(config["files"]))
        raise CorruptFileError(f"{where}: the file list does not match K={K} (extra {extra[:4]}, missing {missing[:4]}); the config was edited")


def _read_place(place: _Place) -> Bundle:
    where = f"{CONFIG_NAME} of {place.label}"
    config = _parse_json(_read_bytes(place, CONFIG_NAME, MAX_JSON_BYTES), where)
    _check_bundle_config(config, where)
    sizes: dict[str, int] = {}

    def read_checked(name: str) -> bytes:
        data = _read_bytes(place, name, MAX_JSON_BYTES if name.endswith(".json") else None)
        sizes[name] = len(data)
        if _sha256(data) != config["files"][name]:
            if name.endswith(".safetensors"):
                _parse_safetensors(data, f"{name} in {place.label}")  # the clearer message for a damaged file
            raise CorruptFileError(f"{name} in {place.label} changed since the bundle was saved (sha256 mismatch): corrupted or edited")
        return data

    listed = {f"stage_{k}" for k in range(config["K"])}
    extra = sorted(p.name for p in place.folder.glob("stage_*") if p.name not in listed)
    if extra:
        raise CorruptFileError(f"{place.label} holds {extra[:4]}, stages its {CONFIG_NAME} (K={config['K']}) does not list")
    adapter_configs, stages = [], []
    for k in range(config["K"]):
        name = f"stage_{k}/{ADAPTER_CONFIG_NAME}"
        adapter_configs.append(_parse_json(read_checked(name), f"{name} in {place.label}"))
        name = f"stage_{k}/{ADAPTER_WEIGHTS_NAME}"
        stages.append(_parse_safetensors(read_checked(name), f"{name} in {place.label}"))
    unfolding = _parse_safetensors(read_checked(UNFOLDING_NAME), f"{UNFOLDING_NAME} in {place.label}")
    unknown = [k for k in unfolding if not k.startswith(("steps.", "operator."))]
    if unknown:
        raise CorruptFileError(f"{UNFOLDING_NAME} in {place.label} holds unexpected tensors {unknown[:4]}")
    steps = {k.removeprefix("steps."): v for k, v in unfolding.items() if k.startswith("steps.")}
    operator_state = {k.removeprefix("operator."): v for k, v in unfolding.items() if k.startswith("operator.")}
    if config.get("storage_dtype") is not None:  # stored at half size: back to the saved network's dtype
        dtype = getattr(torch, config["dtype"], None)
        if not isinstance(dtype, torch.dtype):
            raise CorruptFileError(f"{where}: 'dtype' {config['dtype']!r} is not a torch dtype")
        stages, steps, operator_state = [_cast(t, dtype) for t in stages], _cast(steps, dtype), _cast(operator_state, dtype)
    return Bundle(place.label, config, adapter_configs, stages, steps, operator_state, sizes)


def read_bundle(
    source: str | os.PathLike,
    *,
    subfolder: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Bundle:
    """Read and verify a bundle from a local folder or a Hub repo (+ subfolder, revision) into memory.

    Raises CorruptFileError for damaged, incomplete or edited files, HubError for Hub failures.
    """
    options = {"token": token, "endpoint": endpoint, "cache_dir": cache_dir}
    place = _locate(source, subfolder, revision, BUNDLE_PATTERNS, CONFIG_NAME, options)
    try:
        return _read_place(place)
    except CorruptFileError:
        if place.inode is None:
            raise
        again = _locate(source, subfolder, revision, BUNDLE_PATTERNS, CONFIG_NAME, options)
        if again.inode == place.inode:
            raise
        return _read_place(again)  # a save replaced the folder while we read it: read the new one once


# ==== swapping into a live network ===========================================================
@dataclass
class _Swap:
    """Everything a swap changes, computed before anything is changed."""

    copies: list[tuple[torch.Tensor, torch.Tensor]]
    operator: nn.Module | None

    def apply(self, net: BundleMethods) -> None:
        with torch.no_grad():
            for live, new in self.copies:
                live.copy_(new)
        if self.operator is not None:
            net.operator = self.operator


def _stage_slots(net: BundleMethods, cache: _NetCache) -> list[dict[str, nn.Parameter]]:
    """For each stage: PEFT's saved key (as in adapter_model.safetensors) -> the live parameter.

    PEFT's own ``get_peft_model_state_dict`` gives the keys; parameters are matched by storage.
    """
    if cache.slots is not None:
        return cache.slots
    slots = []
    for k, name in enumerate(net.adapter_names):
        by_pointer = {p.data_ptr(): p for p in net.denoisers.adapter_parameters(k)}
        stage = {}
        for file_key, tensor in get_peft_model_state_dict(net.denoisers.peft_model, adapter_name=name).items():
            if tensor.data_ptr() not in by_pointer:
                raise IncompatibleBundleError(
                    f"PEFT saves {file_key!r} for {name}, which is not one of the stage's adapter parameters "
                    "(e.g. bias='all'); such networks cannot swap bundles"
                )
            stage[file_key] = by_pointer[tensor.data_ptr()]
        slots.append(stage)
    cache.slots = slots
    return slots


def _canon(value: Any) -> Any:
    """A JSON-comparable form: sets and lists of plain values sorted (PEFT treats them as sets)."""
    if isinstance(value, Mapping):
        return {str(k): _canon(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_canon(v) for v in value]
        if all(isinstance(v, (str, int, float)) for v in items):
            return sorted(items, key=lambda v: (type(v).__name__, v))
        return items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(getattr(value, "value", value))  # enums such as PeftType


def _structure_text(config: Mapping[str, Any]) -> str:
    """Canonical JSON of an adapter config's fields that shape the adapter (empty values dropped,
    so a field one PEFT version writes with its empty default and another lacks still agrees)."""
    kept = {k: _canon(v) for k, v in config.items() if k not in _IGNORED_ADAPTER_KEYS and v}
    return json.dumps(kept, sort_keys=True)


def _adapter_config_differences(saved: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    a, b = json.loads(_structure_text(saved)), json.loads(_structure_text(live))
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _check_tensors(
    saved: Mapping[str, torch.Tensor],
    live: Mapping[str, torch.Tensor],
    what: str,
    error: type[Exception] = IncompatibleBundleError,
    dtypes: bool = True,
) -> None:
    if set(saved) != set(live):
        extra, missing = sorted(set(saved) - set(live)), sorted(set(live) - set(saved))
        raise error(f"{what}: tensors differ from this network's (bundle only: {extra[:3]}, network only: {missing[:3]})")
    for name, tensor in saved.items():
        if tensor.shape != live[name].shape or (dtypes and tensor.dtype != live[name].dtype):
            raise error(
                f"{what}: {name} is {tuple(tensor.shape)} {tensor.dtype} in the bundle but "
                f"{tuple(live[name].shape)} {live[name].dtype} in this network"
            )


def _config_mismatch(label: str, name: str, saved: Mapping[str, Any], live: Mapping[str, Any]) -> str:
    differences = _adapter_config_differences(saved, live)
    detail = ""
    if "rank_pattern" in differences:
        a, b = saved.get("rank_pattern") or {}, live.get("rank_pattern") or {}
        changed = [f"{n.lstrip('^')} {a.get(n)} vs {b.get(n)}" for n in sorted(set(a) | set(b)) if a.get(n) != b.get(n)]
        detail = f" (the rank pattern does not fit; layer ranks, bundle vs network: {'; '.join(changed[:4])})"
    return f"bundle {label}: {name}'s adapter config differs from this network's in {differences}{detail}"


def _plan_swap(net: BundleMethods, bundle: Bundle) -> _Swap:
    """Check ``bundle`` against ``net`` and prepare every new tensor; changes nothing."""
    config, label = bundle.config, bundle.label
    mismatched = [
        f"{key}: bundle {config[key]!r}, network {getattr(net, key)!r}"
        for key in ("K", "algorithm", "gamma", "adapter", "noise_level")
        if config[key] != getattr(net, key)
    ]
    if mismatched:
        raise IncompatibleBundleError(f"bundle {label} does not fit this network: " + "; ".join(mismatched))
    cache = _net_cache(net)
    live_fp = _live_fingerprint(net, cache)
    if config["base_fingerprint"] != live_fp:
        raise IncompatibleBundleError(
            f"bundle {label} was trained on another base denoiser (fingerprint {config['base_fingerprint'][:19]}..., "
            f"this network's base is {live_fp[:19]}...)"
        )
    copies: list[tuple[torch.Tensor, torch.Tensor]] = []
    slots = _stage_slots(net, cache)
    agreed: set[tuple[str, str]] = set()  # (saved config text, live config text) pairs already compared
    live_texts: dict[int, tuple[dict[str, Any], str]] = {}  # PEFT may share one config object between stages
    for k, name in enumerate(net.adapter_names):
        config_object = net.denoisers.peft_model.peft_config[name]
        if id(config_object) not in live_texts:
            as_dict = config_object.to_dict()
            live_texts[id(config_object)] = (as_dict, _structure_text(as_dict))
        live_config, live_text = live_texts[id(config_object)]
        texts = (_structure_text(bundle.adapter_configs[k]), live_text)
        if texts not in agreed:
            if texts[0] != texts[1]:
                raise IncompatibleBundleError(_config_mismatch(label, name, bundle.adapter_configs[k], live_config))
            agreed.add(texts)
        live = {key: p.detach() for key, p in slots[k].items()}
        _check_tensors(bundle.stages[k], live, f"bundle {label}, {name}")
        copies += [(slots[k][key], tensor) for key, tensor in bundle.stages[k].items()]

    live_steps = net.steps.state_dict()
    _check_tensors(bundle.steps, live_steps, f"bundle {label}, step parameters")
    copies += [(live_steps[key], tensor) for key, tensor in bundle.steps.items()]

    device = next(net.steps.parameters()).device
    live_op = net.operator
    same_kind = callable(getattr(live_op, "config", None)) and isinstance(live_op, nn.Module)
    if same_kind and _canon(live_op.config()) == _canon(config["operator"]):
        live_state = live_op.state_dict()
        with contextlib.suppress(IncompatibleBundleError):
            _check_tensors(bundle.operator_state, live_state, "operator")
            return _Swap(copies + [(live_state[k], t) for k, t in bundle.operator_state.items()], None)
    try:
        operator = operator_from_config(dict(config["operator"]))
    except Exception as err:  # noqa: BLE001 - any failure to rebuild is the bundle's problem
        raise IncompatibleBundleError(f"bundle {label}: its operator {config['operator'].get('type')!r} cannot be rebuilt here: {err}") from None
    if not isinstance(operator, nn.Module):
        raise IncompatibleBundleError(f"bundle {label}: the operator is not a torch module")
    operator.to(device)
    _check_tensors(bundle.operator_state, operator.state_dict(), f"bundle {label}, operator state vs its config", CorruptFileError, dtypes=False)
    operator.load_state_dict({k: v.to(device) for k, v in bundle.operator_state.items()}, strict=True, assign=True)
    operator.train(net.training)
    return _Swap(copies, operator)


def load_adapters(
    net: BundleMethods,
    bundle: Bundle | str | os.PathLike,
    *,
    subfolder: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> BundleMethods:
    """Swap a whole task into a live network: all K adapters, step parameters and the operator.

    ``bundle``: a folder, a Hub repo id (+ ``subfolder``, ``revision``) or a :class:`Bundle` from
    :func:`read_bundle`. Adapter and step weights are copied into the existing parameters (no
    re-wrapping with PEFT); the operator is updated in place, or rebuilt from the bundle's config
    when its settings or shapes change (e.g. another CS ratio). Everything is checked first: on
    any error the network is left exactly as it was. Returns ``net``.
    """
    _require_lora(net, "load_adapters")
    if not isinstance(bundle, Bundle):
        bundle = read_bundle(bundle, subfolder=subfolder, revision=revision, token=token, endpoint=endpoint, cache_dir=cache_dir)
    elif subfolder is not None or revision is not None:
        raise InvalidArgumentError("subfolder and revision apply when loading from a folder or repo, not to a Bundle object")
    _plan_swap(net, bundle).apply(net)
    return net


# ==== building a network from a base and a bundle ============================================
def load_base(
    base: str | os.PathLike,
    *,
    module: nn.Module | None = None,
    subfolder: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> nn.Module:
    """Load a base saved by :func:`save_base` from a folder or Hub repo.

    The library's own denoisers (``lorun_peft.denoisers.DENOISERS``) are rebuilt from the saved
    config; for any other class pass an instance as ``module`` to receive the weights (class paths
    written in a file are never imported). The weights' fingerprint is checked.
    """
    place = _locate(base, subfolder, revision, BASE_PATTERNS, BASE_CONFIG_NAME, {"token": token, "endpoint": endpoint, "cache_dir": cache_dir})
    config, weights = _read_base(place)
    if module is None:
        module = _build_library_denoiser(config["denoiser"], place.label)
    if not isinstance(module, nn.Module):
        raise InvalidArgumentError(f"module must be a torch.nn.Module instance, got {type(module).__name__}")
    _check_tensors(weights, module.state_dict(), f"base {place.label} vs the module {type(module).__name__}")
    module.load_state_dict(weights, strict=True, assign=True)
    return module


def _read_base(place: _Place) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A saved base's config and weights, after checking the config's format and the weights' fingerprint."""
    config = _parse_json(_read_bytes(place, BASE_CONFIG_NAME, MAX_JSON_BYTES), f"{BASE_CONFIG_NAME} of {place.label}")
    if config.get("format") != BASE_FORMAT or not isinstance(config.get("denoiser"), dict) or not isinstance(config.get("fingerprint"), str):
        raise CorruptFileError(f"{BASE_CONFIG_NAME} of {place.label} is not a lorun_peft base config (edited or damaged?)")
    weights = _parse_safetensors(_read_bytes(place, BASE_WEIGHTS_NAME), f"{BASE_WEIGHTS_NAME} in {place.label}")
    if config.get("storage_dtype") is not None:  # stored at half size (exactly): back to the trained dtype
        dtype = getattr(torch, str(config.get("dtype")), None)
        if config["storage_dtype"] not in STORAGE_DTYPES or not isinstance(dtype, torch.dtype):
            raise CorruptFileError(f"{BASE_CONFIG_NAME} of {place.label} has a bad storage_dtype/dtype (edited or damaged?)")
        weights = _cast(weights, dtype)
    if fingerprint(weights) != config["fingerprint"]:
        raise CorruptFileError(f"{BASE_WEIGHTS_NAME} in {place.label} does not match the fingerprint in {BASE_CONFIG_NAME} (corrupted or edited)")
    return config, weights


def _build_library_denoiser(info: Mapping[str, Any], label: str) -> nn.Module:
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


# ==== listing, inspecting, copying ===========================================================
@dataclass(frozen=True, repr=False)
class BundleInfo:
    """One bundle found by :func:`list_bundles`: its folder name (``"."`` for the root) and settings."""

    name: str
    config: dict[str, Any]
    location: str

    @property
    def task(self) -> str:
        """The operator and its settings, e.g. ``"BlockCS (block=32, ..., ratio=0.1)"``."""
        return _task(self.config.get("operator") or {})

    def __repr__(self) -> str:
        return f"BundleInfo(name={self.name!r}, task={self.task!r}, K={self.config.get('K')!r})"

    def __str__(self) -> str:
        c = self.config
        metrics = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in (c.get("metrics") or {}).items())
        return f"{self.name}: {self.task}, K={c.get('K')}, {c.get('algorithm')}, {c.get('adapter')} gamma={c.get('gamma')}" + (f", {metrics}" if metrics else "")


def list_bundles(
    repo_id_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> list[BundleInfo]:
    """The bundles (folders with ``lorun_config.json``) in a local folder or Hub repo, with their settings.

    On the Hub only the ``lorun_config.json`` files are downloaded.
    """
    source = repo_id_or_path
    if isinstance(source, Path) or Path(source).exists() or not hub.is_repo_id(str(source)):
        if revision is not None:
            raise InvalidArgumentError(f"revision={revision!r} applies to Hub repos; {str(source)!r} is a local folder")
        root = Path(source)
        if not root.is_dir():
            raise InvalidArgumentError(f"{root} is not a folder (and not a Hub repo id 'user/name')")
        fence, label = _local_fence(root), str(root)
    else:
        options = {"token": token, "endpoint": endpoint, "cache_dir": cache_dir}
        root, fence = _download(str(source), [CONFIG_NAME, f"*/{CONFIG_NAME}"], revision, options)
        label = f"{source} (revision {revision or 'main'})"
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if CONFIG_NAME in files:
            relative = Path(folder).relative_to(root).as_posix()
            place = _Place(Path(folder), fence, f"{label}/{relative}")
            config = _parse_json(_read_bytes(place, CONFIG_NAME, MAX_JSON_BYTES), f"{CONFIG_NAME} of {place.label}")
            found.append(BundleInfo(relative, config, place.label))
    return found


def inspect(
    bundle: str | os.PathLike,
    *,
    subfolder: str | None = None,
    revision: str | None = None,
    base: nn.Module | str | os.PathLike | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> str:
    """A readable report of a bundle (task, K, ranks, sizes, fingerprint check against ``base``),
    or the list of bundles when ``bundle`` is a folder or repo of bundles."""
    options = {"token": token, "endpoint": endpoint, "cache_dir": cache_dir}
    if subfolder is None:
        infos = list_bundles(bundle, revision=revision, **options)
        if not any(info.name == "." for info in infos):
            lines = [f"{len(infos)} bundle(s) in {bundle}:"] + [f"  {info}" for info in infos]
            return "\n".join(lines)
    b = read_bundle(bundle, subfolder=subfolder, revision=revision, **options)
    c = b.config
    stage_params = [sum(t.numel() for t in stage.values()) for stage in b.stages]
    lines = [
        f"bundle     {b.label}",
        f"task       {_task(c['operator'])}",
        f"stages     K={c['K']}, {c['algorithm'].upper()}, noise level input: {c['noise_level']}",
        f"adapters   {c['adapter']}, gamma {c['gamma']}%, {stage_params[0]:,} parameters per stage, {sum(stage_params):,} in all",
        f"steps/op   {sum(t.numel() for t in b.steps.values())} step parameters, {sum(t.numel() for t in b.operator_state.values()):,} operator values",
        f"base       {c['denoiser'].get('module')}.{c['denoiser'].get('qualname')}, fingerprint {c['base_fingerprint']}",
        f"files      {sum(b.sizes.values()):,} bytes, sha256 verified; saved by lorun_peft {c.get('library_version')}",
    ]
    if c["metrics"]:
        lines.append("metrics    " + ", ".join(f"{k}={v}" for k, v in c["metrics"].items()))
    if base is not None:
        place = _locate(base, None, None, BASE_PATTERNS, BASE_CONFIG_NAME, options) if not isinstance(base, nn.Module) else None
        if place is None:
            found = fingerprint(base)
        else:
            found = fingerprint(_parse_safetensors(_read_bytes(place, BASE_WEIGHTS_NAME), f"{BASE_WEIGHTS_NAME} in {place.label}"))
        verdict = "matches" if found == c["base_fingerprint"] else f"DOES NOT match (base is {found})"
        lines.append(f"base check fingerprint {verdict}")
    width = max(len(n) for n in c["ranks"]) if c["ranks"] else 5
    lines += ["", f"{'layer':<{width}}  rank"] + [f"{n:<{width}}  {r}" for n, r in c["ranks"].items()]
    return "\n".join(lines)


def copy_bundle(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy a local bundle (e.g. one pulled into the Hub cache) into ``target``, atomically; the
    copy is verified (every file parses and matches its sha256) before it is renamed in."""
    place = _locate(source, None, None, BUNDLE_PATTERNS, CONFIG_NAME, {})
    names = [CONFIG_NAME, *_read_place(place).config["files"]]
    names += [CARD_NAME] if (place.folder / CARD_NAME).exists() else []

    def fill(folder: Path) -> None:
        for name in names:
            _write(folder / name, _read_bytes(place, name))
        _read_place(_Place(folder, folder, str(folder)))

    return _atomic_folder(target, fill, CONFIG_NAME)


# ==== the Hub =================================================================================
def push_adapters(
    net: BundleMethods,
    repo_id: str,
    *,
    path_in_repo: str | None = None,
    revision: str | None = None,
    tag: str | None = None,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    base_model: str | None = None,
    endpoint: str | None = None,
) -> Any:
    """Save the task bundle to a temporary folder and upload only it to ``repo_id/path_in_repo``.

    Creates the repo (and branch ``revision``) if missing; ``tag`` tags the new commit. Stage
    files left from an older bundle with more stages are deleted in the same commit.
    Returns huggingface_hub's CommitInfo.
    """
    with tempfile.TemporaryDirectory(prefix="lorun-push-") as tmp:
        folder = save_adapters(net, Path(tmp) / "bundle", metrics=metrics, base_model=base_model)
        return hub.upload(
            folder, repo_id, path_in_repo=path_in_repo, revision=revision, tag=tag, token=token, private=private,
            commit_message=commit_message or f"Upload LoRun bundle ({_task(_operator_config(net.operator))}, K={net.K})",
            endpoint=endpoint, allow_patterns=list(BUNDLE_PATTERNS), delete_patterns=["stage_*/*"],
        )


def push_base(
    model: BundleMethods | nn.Module,
    repo_id: str,
    *,
    path_in_repo: str | None = None,
    revision: str | None = None,
    tag: str | None = None,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    endpoint: str | None = None,
) -> Any:
    """Save the plain base to a temporary folder and upload it (see :func:`push_adapters`)."""
    with tempfile.TemporaryDirectory(prefix="lorun-push-") as tmp:
        folder = save_base(model, Path(tmp) / "base")
        return hub.upload(
            folder, repo_id, path_in_repo=path_in_repo, revision=revision, tag=tag, token=token, private=private,
            commit_message=commit_message or "Upload LoRun base denoiser", endpoint=endpoint, allow_patterns=list(BASE_PATTERNS),
        )


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    path_in_repo: str | None = None,
    revision: str | None = None,
    tag: str | None = None,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    endpoint: str | None = None,
) -> Any:
    """Upload a bundle or base folder saved earlier (checked first); see :func:`push_adapters`."""
    folder = Path(folder)
    if (folder / CONFIG_NAME).is_file():
        _read_place(_Place(folder, _local_fence(folder), str(folder)))
        patterns, deletes = list(BUNDLE_PATTERNS), ["stage_*/*"]
    elif (folder / BASE_CONFIG_NAME).is_file():
        _read_base(_Place(folder, _local_fence(folder), str(folder)))
        patterns, deletes = list(BASE_PATTERNS), None
    else:
        raise InvalidArgumentError(f"{folder} is neither a bundle ({CONFIG_NAME}) nor a saved base ({BASE_CONFIG_NAME})")
    return hub.upload(
        folder, repo_id, path_in_repo=path_in_repo, revision=revision, tag=tag, token=token, private=private,
        commit_message=commit_message or f"Upload {folder.name} with lorun_peft", endpoint=endpoint,
        allow_patterns=patterns, delete_patterns=deletes,
    )


def pull(
    repo_id: str,
    *,
    subfolder: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Download one bundle into the Hub cache, verify it, and return its local folder."""
    options = {"token": token, "endpoint": endpoint, "cache_dir": cache_dir}
    place = _locate(repo_id, subfolder, revision, BUNDLE_PATTERNS, CONFIG_NAME, options)
    _read_place(place)
    return place.folder


# ==== the network methods =====================================================================
class BundleMethods:
    """Bundle methods for :class:`~lorun_peft.unfold.UnfoldedNetwork` (a mixin base class).

    Each method calls the module function of the same name with the network as first argument.
    """

    def save_adapters(
        self, path: str | os.PathLike, *, metrics: Mapping[str, Any] | None = None, base_model: str | None = None,
        storage_dtype: str | None = None,
    ) -> Path:
        """Save this task (adapters, steps, operator) as a bundle folder; see :func:`save_adapters`."""
        return save_adapters(self, path, metrics=metrics, base_model=base_model, storage_dtype=storage_dtype)

    def load_adapters(
        self,
        bundle: Bundle | str | os.PathLike,
        *,
        subfolder: str | None = None,
        revision: str | None = None,
        token: str | None = None,
        endpoint: str | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> "BundleMethods":
        """Swap a task bundle into this live network, atomically; see :func:`load_adapters`."""
        return load_adapters(self, bundle, subfolder=subfolder, revision=revision, token=token, endpoint=endpoint, cache_dir=cache_dir)

    def save_base(self, path: str | os.PathLike, *, storage_dtype: str | None = None) -> Path:
        """Save the plain shared base denoiser; see :func:`save_base`."""
        return save_base(self, path, storage_dtype=storage_dtype)

    def push_adapters(
        self,
        repo_id: str,
        *,
        path_in_repo: str | None = None,
        revision: str | None = None,
        tag: str | None = None,
        token: str | None = None,
        private: bool | None = None,
        commit_message: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        base_model: str | None = None,
        endpoint: str | None = None,
    ) -> Any:
        """Upload this task's bundle to the Hub; see :func:`push_adapters`."""
        return push_adapters(
            self, repo_id, path_in_repo=path_in_repo, revision=revision, tag=tag, token=token, private=private,
            commit_message=commit_message, metrics=metrics, base_model=base_model, endpoint=endpoint,
        )

    def push_base(
        self,
        repo_id: str,
        *,
        path_in_repo: str | None = None,
        revision: str | None = None,
        tag: str | None = None,
        token: str | None = None,
        private: bool | None = None,
        commit_message: str | None = None,
        endpoint: str | None = None,
    ) -> Any:
        """Upload the plain base to the Hub; see :func:`push_base`."""
        return push_base(
            self, repo_id, path_in_repo=path_in_repo, revision=revision, tag=tag, token=token, private=private,
            commit_message=commit_message, endpoint=endpoint,
        )

    def base_fingerprint(self) -> str:
        """The sha256 fingerprint bundles use to name this network's base."""
        return _live_fingerprint(self)

    @classmethod
    def from_bundle(
        cls,
        base: nn.Module | str | os.PathLike,
        bundle: Bundle | str | os.PathLike,
        *,
        subfolder: str | None = None,
        revision: str | None = None,
        module: nn.Module | None = None,
        base_subfolder: str | None = None,
        base_revision: str | None = None,
        token: str | None = None,
        endpoint: str | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> "BundleMethods":
        """Build a ready LoRun network (in eval mode) from a base and a bundle (``lorun_peft.load``).

        ``base``: the plain denoiser module with the base weights, or a saved base (folder or Hub repo
        + ``base_subfolder``/``base_revision``; see :func:`load_base` for ``module``). ``bundle``: a
        folder, Hub repo (+ ``subfolder``, ``revision``) or :class:`Bundle`. The base must have the
        fingerprint the bundle was trained on.
        """
        options = {"token": token, "endpoint": endpoint, "cache_dir": cache_dir}
        if not isinstance(bundle, Bundle):
            bundle = read_bundle(bundle, subfolder=subfolder, revision=revision, **options)
        if isinstance(base, nn.Module):
            if module is not None:
                raise InvalidArgumentError("pass either a base module or module=, not both")
            denoiser = base
        else:
            denoiser = load_base(base, module=module, subfolder=base_subfolder, revision=base_revision, **options)
        config = bundle.config
        found = fingerprint(denoiser)
        if found != config["base_fingerprint"]:
            raise IncompatibleBundleError(
                f"bundle {bundle.label} was trained on another base (fingerprint {config['base_fingerprint'][:19]}..., given base {found[:19]}...)"
            )
        try:
            operator = operator_from_config(dict(config["operator"]))
        except Exception as err:  # noqa: BLE001
            raise IncompatibleBundleError(f"bundle {bundle.label}: its operator cannot be rebuilt here: {err}") from None
        net = cls(
            denoiser, operator, config["K"], algorithm=config["algorithm"], gamma=config["gamma"], adapter=config["adapter"],
            target_modules=config.get("target_modules"), noise_level=config["noise_level"],
            adapter_options=config.get("adapter_options") or None,
        )
        dtype = getattr(torch, config["dtype"], None)
        if isinstance(dtype, torch.dtype) and dtype != next(net.steps.parameters()).dtype:
            net.steps.to(dtype)
        load_adapters(net, bundle)
        return net.eval()
