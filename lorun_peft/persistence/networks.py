"""Whole networks on disk, PEFT-style: ``net.save_pretrained(dir)``, ``UnfoldedNetwork.from_pretrained(dir or repo)``
and ``net.push_to_hub(repo)``, for every share mode.

A saved network is a folder holding ``unfold_config.json`` (the network's
:class:`~lorun_peft.config.UnfoldConfig`: settings, operator config, denoiser spec) and a model card,
plus the weights:

- LoRun (``share="lora"``): ``base/`` (the shared base, as ``save_base`` writes it) and ``bundle/``
  (the task bundle, as ``save_adapters`` writes it), so the bundle still swaps into other networks
  of the same base and pushes on its own;
- Block-1 and Block-K: ``network.safetensors``, the whole state dict.

Built-in denoisers rebuild from the config; for a denoiser class of your own pass
``denoiser=MyDenoiser(...)`` (an instance, whose weights are replaced) or ``denoiser=MyDenoiser``
(a class, called with the saved config's arguments). Nothing is unpickled.

>>> import tempfile, torch
>>> from lorun_peft import unfold
>>> from lorun_peft.denoisers import UNet
>>> from lorun_peft.operators import BlockCS
>>> from lorun_peft.unfold import UnfoldedNetwork
>>> net = unfold(UNet(1, width=4, depth=1), BlockCS(0.25, block=8), K=2, share="base").eval()
>>> folder = net.save_pretrained(tempfile.mkdtemp() + "/block1")
>>> again = UnfoldedNetwork.from_pretrained(folder)
>>> y = net.operator.A(torch.rand(1, 1, 16, 16))
>>> torch.equal(again(y), net(y))
True
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from . import _hub as hub
from .cards import network_card
from ..config import UnfoldConfig
from ..errors import CorruptFileError, InvalidArgumentError
from ._files import MAX_JSON_BYTES, Place, locate, parse_json, parse_safetensors, read_bytes, tensor_bytes, to_json, write
from .fingerprint import base_module
from .protocol import Network
from .atomic import atomic_folder
from ..operators import rebuild_operator
from .reading import build_library_denoiser
from .saving import denoiser_info, operator_config, save_adapters, save_base
from .schema import BASE_CONFIG_NAME, CARD_NAME, CONFIG_NAME, cast, check_tensors, library_version, to_storage_dtype

__all__ = ["save_pretrained", "read_pretrained", "push_to_hub", "unfold_config", "check_network_folder", "NETWORK_CONFIG",
           "NETWORK_WEIGHTS", "PATTERNS"]

NETWORK_FORMAT = "lorun_peft.network"
NETWORK_CONFIG, NETWORK_WEIGHTS = "unfold_config.json", "network.safetensors"
BASE_DIR, BUNDLE_DIR = "base", "bundle"
PATTERNS = (NETWORK_CONFIG, NETWORK_WEIGHTS, CARD_NAME, f"{BASE_DIR}/*", f"{BUNDLE_DIR}/*", f"{BUNDLE_DIR}/stage_*/*")
_FILE_KEYS = ("format", "library_version", "dtype", "storage_dtype")  # written beside the UnfoldConfig fields


def unfold_config(net: Network) -> UnfoldConfig:
    """``net.config`` with the operator's config and the base denoiser's spec filled in."""
    first = net.denoisers.denoisers[0] if net.share == "none" else base_module(net)  # Block-K: the K share one class
    return net.config.replace(operator=operator_config(net.operator), denoiser=denoiser_info(first))


def save_pretrained(net: Network, path: str | os.PathLike, *, storage_dtype: str | None = None,
                    metrics: Mapping[str, Any] | None = None) -> Path:
    """Write the network into folder ``path`` (see the module docstring), atomically; returns it.
    ``storage_dtype`` "float16"/"bfloat16" stores the weights at half size (read back in the
    network's dtype); ``metrics`` go into the LoRun bundle's card."""
    dtype = to_storage_dtype(storage_dtype)
    config = unfold_config(net)
    header = {"format": NETWORK_FORMAT, "library_version": library_version(),
              "dtype": str(next(net.steps.parameters()).dtype).removeprefix("torch."), "storage_dtype": storage_dtype}

    def fill(folder: Path) -> None:
        if net.share == "lora":
            save_base(net, folder / BASE_DIR, storage_dtype=storage_dtype)
            save_adapters(net, folder / BUNDLE_DIR, metrics=metrics, storage_dtype=storage_dtype)
        else:
            state = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
            write(folder / NETWORK_WEIGHTS, tensor_bytes(cast(state, dtype) if dtype else state, {"format": "pt"}))
        write(folder / NETWORK_CONFIG, to_json({**header, **config.to_dict()}, "the network's configuration"))
        write(folder / CARD_NAME, network_card(config.to_dict()))

    return atomic_folder(path, fill, NETWORK_CONFIG)


def _read_config(place: Place) -> tuple[dict[str, Any], UnfoldConfig]:
    """A saved network's ``unfold_config.json``: the file keys (format, versions, dtypes) and the
    checked :class:`UnfoldConfig`."""
    where = f"{NETWORK_CONFIG} of {place.label}"
    data = parse_json(read_bytes(place, NETWORK_CONFIG, MAX_JSON_BYTES), where)
    if data.get("format") != NETWORK_FORMAT:
        raise CorruptFileError(f"{where}: 'format' must be {NETWORK_FORMAT!r}, got {data.get('format')!r}")
    header = {k: data.pop(k, None) for k in _FILE_KEYS}
    return header, UnfoldConfig.from_dict(data, where)


def check_network_folder(folder: Path) -> UnfoldConfig:
    """Read and check a saved network's ``unfold_config.json`` and that its weights are there
    (before publishing it); returns its config."""
    place = locate(folder, None, None, PATTERNS, NETWORK_CONFIG, {})
    _, config = _read_config(place)
    needed = [f"{BASE_DIR}/{BASE_CONFIG_NAME}", f"{BUNDLE_DIR}/{CONFIG_NAME}"] if config.share == "lora" else [NETWORK_WEIGHTS]
    missing = [name for name in needed if not (place.folder / name).is_file()]
    if missing:
        raise CorruptFileError(f"{place.label} is incomplete: {missing} missing")
    return config


def _denoiser(given: nn.Module | type | None, spec: Mapping[str, Any] | None, label: str) -> nn.Module:
    if isinstance(given, nn.Module):
        return given
    if spec is None:
        raise CorruptFileError(f"{label}: the configuration has no denoiser spec")
    if isinstance(given, type) and issubclass(given, nn.Module):
        try:
            return given(**(spec.get("config") or {}))
        except TypeError as err:
            raise InvalidArgumentError(f"{label}: {given.__name__}(**saved config) failed ({err}); pass an instance instead") from None
    if given is not None:
        raise InvalidArgumentError(f"denoiser must be a torch.nn.Module instance or class, got {type(given).__name__}")
    return build_library_denoiser(spec, label)


def read_pretrained(cls: type, source: str | os.PathLike, *, subfolder: str | None = None, revision: str | None = None,
                    denoiser: nn.Module | type | None = None, **hub_kwargs: Any) -> Network:
    """The network saved by :func:`save_pretrained` in a folder or Hub repo (+ ``subfolder``,
    ``revision``), as ``cls`` in eval mode; see the module docstring for ``denoiser``."""
    options = hub.check_options(hub_kwargs, "download")
    try:
        place = locate(source, subfolder, revision, PATTERNS, NETWORK_CONFIG, options)
    except InvalidArgumentError as err:
        local = Path(source) / (subfolder or "")
        if (local / CONFIG_NAME).is_file():
            raise InvalidArgumentError(f"{local} is a task bundle, not a saved network: load it with lorun_peft.load(BASE, BUNDLE)") from None
        raise err
    header, config = _read_config(place)
    if config.share == "lora":
        module = _denoiser(denoiser, config.denoiser, place.label) if denoiser is not None else None
        net = cls.from_bundle(place.folder / BASE_DIR, place.folder / BUNDLE_DIR, module=module)
        net.config = net.config.replace(checkpoint=config.checkpoint)  # the one setting a bundle does not hold
        return net
    state = parse_safetensors(read_bytes(place, NETWORK_WEIGHTS), f"{NETWORK_WEIGHTS} of {place.label}")
    dtype = getattr(torch, str(header["dtype"]), None)
    operator_state = {k.removeprefix("operator."): v for k, v in state.items() if k.startswith("operator.")}
    if isinstance(dtype, torch.dtype):
        operator_state = cast(operator_state, dtype)  # a deepinv physics is built from its saved tensors
    operator = rebuild_operator(config.operator, place.label, operator_state)
    net = cls(_denoiser(denoiser, config.denoiser, place.label), operator, config)
    if isinstance(dtype, torch.dtype):  # the floating tensors only: .to(dtype) would make a physics' complex ones real
        net._apply(lambda t: t.to(dtype) if t.is_floating_point() else t)
    live = net.state_dict()
    check_tensors(state, live, f"{place.label}: the weights do not fit the network its configuration builds", dtypes=False)
    net.load_state_dict({k: v.to(live[k].dtype) for k, v in state.items()})
    return net.eval()


def push_to_hub(net: Network, repo_id: str, *, path_in_repo: str | None = None, revision: str | None = None,
                tag: str | None = None, commit_message: str | None = None, storage_dtype: str | None = None,
                **hub_kwargs: Any) -> Any:
    """``save_pretrained`` into a temporary folder, then upload it to ``repo_id/path_in_repo`` in one
    commit (files of an older save under that path are replaced). Returns huggingface_hub's CommitInfo."""
    options = hub.check_options(hub_kwargs, "upload")
    with tempfile.TemporaryDirectory(prefix="lorun-push-") as tmp:
        folder = save_pretrained(net, Path(tmp) / "network", storage_dtype=storage_dtype)
        return hub.upload(
            folder, repo_id, path_in_repo=path_in_repo, revision=revision, tag=tag,
            commit_message=commit_message or f"Upload a {net.K}-stage unfolded network (share={net.share!r}) with lorun_peft",
            allow_patterns=list(PATTERNS), delete_patterns=list(PATTERNS), **options,
        )
