"""Finding a saved folder (a local path or a Hub repo + subfolder + revision) and reading its files
safely: regular files only, never through a symlink leading out of the folder (or, for a Hub
snapshot, out of the repo's cache folder), JSON with a size limit and no NaN, safetensors only.
Nothing is unpickled.

>>> import tempfile
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp())
>>> write(folder / "config.json", to_json({"K": 9}, "the config"))
>>> place = locate(folder, None, None, ["*.json"], "config.json", {})
>>> parse_json(read_bytes(place, "config.json", MAX_JSON_BYTES), "config.json")
{'K': 9}
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from . import _hub as hub
from ..errors import CorruptFileError, HubError, HubFolderNotFoundError, InvalidArgumentError
from .atomic import settled_folder

__all__ = [
    "Place", "locate", "download", "local_fence", "read_bytes", "parse_json", "parse_safetensors",
    "to_json", "write", "sha256", "tensor_bytes", "MAX_JSON_BYTES",
]

MAX_JSON_BYTES = 16 * 2**20


@dataclass
class Place:
    """Where a bundle or base lives: the folder, the fence its files must stay in, a label, and for
    local folders the folder's inode when found (a save replacing it meanwhile changes it)."""

    folder: Path
    fence: Path
    label: str
    inode: int | None = None


def locate(
    source: str | os.PathLike,
    subfolder: str | None,
    revision: str | None,
    patterns: Sequence[str],
    marker: str,
    hub_options: Mapping[str, Any],
) -> Place:
    """Find a saved folder holding ``marker``: a local path (optionally + subfolder) or a Hub repo
    (+ subfolder, revision), downloading only the files matching ``patterns``."""
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidArgumentError(f"expected a folder path or a Hub repo id, got {type(source).__name__}")
    subfolder = hub.check_subfolder(subfolder)
    root = Path(source)
    local = root / subfolder if subfolder else root
    if isinstance(source, Path) or root.exists() or settled_folder(local, marker).exists() or not hub.is_repo_id(str(source)):
        if revision is not None:
            raise InvalidArgumentError(f"revision={revision!r} applies to Hub repos; {str(source)!r} is a local folder")
        folder = settled_folder(local, marker)
        if not folder.is_dir():
            raise InvalidArgumentError(f"{local} is not a folder (and not a Hub repo id 'user/name')")
        if subfolder:
            hub.contained(root, os.path.relpath(folder, root))  # the subfolder must not escape via a symlink
        if not (folder / marker).is_file():
            raise InvalidArgumentError(f"{folder} has no {marker}: not a folder saved by lorun_peft")
        return Place(folder, local_fence(folder), str(folder), folder.stat().st_ino)
    prefix = f"{subfolder}/" if subfolder else ""
    snapshot, fence = download(str(source), [prefix + p for p in patterns], revision, hub_options)
    label = f"{source}{'/' + subfolder if subfolder else ''} (revision {revision or 'main'})"
    folder = hub.contained(snapshot, subfolder or ".", allowed=snapshot)
    if not (folder / marker).is_file():
        offline = " (offline: only the local cache was searched)" if hub.offline() else ""
        raise HubFolderNotFoundError(
            f"no saved lorun folder at {subfolder or 'the root'!r} in repo {str(source)!r}, revision {revision or 'main'!r}: "
            f"file {prefix}{marker} not found{offline}",
            subfolder=subfolder or None,
        )
    return Place(folder, fence, label)


def download(repo_id: str, patterns: list[str], revision: str | None, options: Mapping[str, Any]) -> tuple[Path, Path]:
    """:func:`lorun_peft.persistence._hub.download`, saying in its errors that no local folder of that name exists."""
    try:
        return hub.download(repo_id, patterns, revision=revision, **options)
    except HubError as err:
        raise HubError(f"{err} (and there is no local folder {repo_id!r})") from err


def local_fence(folder: Path) -> Path:
    """The folder a local bundle's files must stay in: itself, or for a folder inside the Hub cache
    (``models--ORG--NAME/snapshots/COMMIT/...``, whose files link to ``../../blobs``) that repo's cache folder."""
    absolute = folder.absolute()
    for parent in absolute.parents:
        if parent.name == "snapshots" and parent.parent.name.startswith("models--"):
            return parent.parent
    return folder


def read_bytes(place: Place, relative: str, limit: int | None = None) -> bytes:
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


def parse_json(data: bytes, where: str) -> dict[str, Any]:
    """A JSON object from ``data`` (NaN and Infinity refused); CorruptFileError naming ``where`` if not."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not allowed")

    try:
        value = json.loads(data.decode("utf-8"), parse_constant=refuse)
    except (UnicodeDecodeError, ValueError) as err:
        raise CorruptFileError(f"{where} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise CorruptFileError(f"{where} must hold a JSON object, got {type(value).__name__}")
    return value


def parse_safetensors(data: bytes, where: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file's bytes; CorruptFileError naming ``where`` if damaged."""
    try:
        return load_safetensors(data)
    except Exception as err:  # noqa: BLE001 - safetensors raises several types for bad files
        raise CorruptFileError(f"{where} is not a valid safetensors file (truncated or corrupted?): {err}") from None


def to_json(value: Any, what: str) -> str:
    """Indented, key-sorted JSON; InvalidArgumentError naming ``what`` if it is not plain data."""
    try:
        return json.dumps(value, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise InvalidArgumentError(f"{what} must be JSON-serialisable (plain numbers, strings, lists, dicts): {err}") from None


def write(path: Path, data: bytes | str) -> None:
    """Write a file inside a folder being filled by :func:`lorun_peft.persistence.atomic.atomic_folder`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tensor_bytes(tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file's bytes for ``tensors`` (copied to the CPU, contiguous)."""
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    return save_safetensors(plain, metadata=metadata)
