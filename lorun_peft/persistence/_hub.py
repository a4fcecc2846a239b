"""The Hugging Face Hub side of task bundles: download one bundle's files, upload a folder, turn
every Hub failure into a :class:`~lorun_peft.errors.HubError` that names the repo, revision and
files (the ``lorun push`` / ``pull`` / ``inspect BUNDLE`` commands are in :mod:`lorun_peft.cli.commands`).

Downloads go through ``huggingface_hub.snapshot_download`` with ``allow_patterns``, so only the
wanted bundle is fetched, the local cache is used, and ``HF_HUB_OFFLINE=1`` (read at call time
here, not only when huggingface_hub was imported) serves from the cache without any request.
``endpoint=`` (or ``HF_ENDPOINT`` at call time) points at another Hub, e.g. a local mirror.
Other huggingface_hub options pass through as ``**hub_kwargs``, their names checked against
huggingface_hub's own signatures (:func:`check_options`).
Tokens are handed to huggingface_hub only; they are scrubbed from every message raised here.

Names that come from a user or a repo are checked before they touch the file system:

>>> check_subfolder("cs-ratio-0.10/")
'cs-ratio-0.10'
>>> for bad in ("../secrets", "/etc", "a/../../b"):
...     try:
...         check_subfolder(bad)
...     except InvalidArgumentError:
...         print("refused", bad)
refused ../secrets
refused /etc
refused a/../../b
>>> scrub("401 for token hf_abcdefghijklmnopqrstuvwxyz", None)
'401 for token hf_***'
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import huggingface_hub
from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ..errors import CorruptFileError, HubError, InvalidArgumentError

__all__ = [
    "check_subfolder",
    "contained",
    "download",
    "upload",
    "hub_errors",
    "scrub",
    "is_repo_id",
    "offline",
    "check_options",
    "download_options",
    "upload_options",
]

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_TOKEN_LIKE = re.compile(r"hf_[A-Za-z0-9]{8,}")


# ---- names and paths ---------------------------------------------------------------------------
def is_repo_id(text: str) -> bool:
    """Whether ``text`` has the shape of a Hub repo id (``"user/name"`` or ``"name"``).

    >>> is_repo_id("user/lorun-cs"), is_repo_id("./bundles/cs"), is_repo_id("a/b/c")
    (True, False, False)
    """
    return isinstance(text, str) and bool(_REPO_ID.match(text)) and ".." not in text


def check_subfolder(subfolder: str | None) -> str | None:
    """A relative folder inside a repo or bundle folder, normalised to ``"a/b"``; ``None`` stays None.

    Refuses absolute paths, ``..`` and ``.`` parts, backslashes and empty parts, so the name can
    never point outside the folder it is joined to.
    """
    if subfolder is None:
        return None
    if not isinstance(subfolder, str):
        raise InvalidArgumentError(f"subfolder must be a string, got {type(subfolder).__name__}")
    text = subfolder.strip().rstrip("/")
    parts = text.split("/")
    if (
        not text
        or text.startswith("/")
        or "\\" in text
        or "\x00" in text
        or re.match(r"^[A-Za-z]:", text)
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise InvalidArgumentError(
            f"subfolder {subfolder!r} is not a plain relative folder name (no '..', no absolute path, no backslash)"
        )
    return text


def contained(root: str | os.PathLike, relative: str, *, allowed: str | os.PathLike | None = None) -> Path:
    """``root / relative`` resolved (symlinks followed), checked to lie inside ``allowed`` (default ``root``).

    Raises CorruptFileError when a symlink (or the name) leads outside. A Hub snapshot's files are
    symlinks into the repo's cache folder, so pass that folder as ``allowed`` there.
    """
    root = Path(root)
    fence = Path(allowed if allowed is not None else root).resolve()
    try:
        target = (root / relative).resolve()
    except (OSError, RuntimeError) as err:  # a symlink loop
        raise CorruptFileError(f"{root / relative} cannot be resolved: {err}") from None
    if target != fence and not target.is_relative_to(fence):
        raise CorruptFileError(f"{root / relative} leads outside {fence} (a symlink or name escaping the folder); refusing to read it")
    return target


# ---- errors ------------------------------------------------------------------------------------
def scrub(text: str, token: str | None) -> str:
    """``text`` without ``token`` and without anything shaped like a Hub token (``hf_...``)."""
    if token:
        text = text.replace(token, "***")
    return _TOKEN_LIKE.sub("hf_***", text)


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str | None, files: str, token: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub failures inside the block into HubError naming repo, revision and files.

    The message never contains the token; the original exception is chained only when its own
    text is token-free.
    """
    try:
        yield
    except HFValidationError as err:
        raise InvalidArgumentError(scrub(f"invalid Hub repo id or revision for {repo_id!r}: {err}", token)) from None
    except Exception as err:  # noqa: BLE001 - every Hub failure gets the same, clear wrapper
        if isinstance(err, (HubError, InvalidArgumentError, CorruptFileError)):
            raise
        where = f"repo {repo_id!r}, revision {revision or 'main'!r}, files {files}"
        reason = _reason(err)
        if reason is None:
            raise
        detail = scrub(f"{type(err).__name__}: {_short(err)}", token)
        message = scrub(f"{reason} ({where}). {detail}", token)
        cause = err if scrub(str(err), token) == str(err) else None  # never chain a text holding a token
        raise HubError(message) from cause


def _reason(err: Exception) -> str | None:
    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, GatedRepoError) or status == 403:
        return "no permission to access this repo (gated or private; check your token or `hf auth login`)"
    if isinstance(err, RevisionNotFoundError):
        return "revision not found in the repo"
    if isinstance(err, RepositoryNotFoundError):
        return "repository not found, or private without a valid token, or the revision does not exist"
    if isinstance(err, LocalEntryNotFoundError):
        return "not in the local cache and the Hub cannot be reached (offline: HF_HUB_OFFLINE=1 or no network)"
    if isinstance(err, EntryNotFoundError):
        return "file not found in the repo"
    if status == 401:
        return "not authorised (invalid or missing token)"
    if isinstance(err, HfHubHTTPError):
        return f"the Hub answered HTTP {status}"
    if isinstance(err, OSError):  # connection refused, timeouts, offline mode (OfflineModeIsEnabled)
        return "the Hub cannot be reached"
    return None


def _short(err: Exception, limit: int = 400) -> str:
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- options -----------------------------------------------------------------------------------
# huggingface_hub's keyword options pass through lorun_peft's functions as **hub_kwargs, checked
# against huggingface_hub's own signatures, less those lorun_peft sets itself (or that would put
# files outside the Hub cache, which readers use as the fence their files must stay in).
_DOWNLOAD_RESERVED = frozenset({
    "repo_id", "repo_type", "revision", "allow_patterns", "ignore_patterns", "local_dir", "library_name",
    "library_version", "dry_run",
})
_UPLOAD_RESERVED = frozenset({
    "self", "repo_id", "repo_type", "revision", "folder_path", "path_in_repo", "commit_message", "allow_patterns",
    "delete_patterns", "exist_ok", "library_name", "library_version", "run_as_future",
})


@functools.cache
def _upload_targets() -> dict[str, str]:
    """Each accepted upload option -> the HfApi call it goes to (the client first, e.g. ``token``)."""
    targets: dict[str, str] = {}
    api = huggingface_hub.HfApi  # the library's own class, even where a test replaced this module's HfApi
    for call, function in (("client", api.__init__), ("create_repo", api.create_repo), ("upload_folder", api.upload_folder)):
        for name in inspect.signature(function).parameters:
            if name not in _UPLOAD_RESERVED and not name.startswith("space_"):
                targets.setdefault(name, call)
    return targets


@functools.cache
def _download_options() -> tuple[str, ...]:
    parameters = inspect.signature(huggingface_hub.snapshot_download).parameters
    return tuple(sorted(set(parameters) - _DOWNLOAD_RESERVED))


def download_options() -> list[str]:
    """The keyword options downloads accept: ``snapshot_download``'s, less those lorun_peft sets.

    >>> {"token", "endpoint", "cache_dir", "local_files_only"} <= set(download_options())
    True
    """
    return list(_download_options())


def upload_options() -> list[str]:
    """The keyword options uploads accept: those of ``HfApi()``, ``HfApi.create_repo`` and
    ``HfApi.upload_folder``, less those lorun_peft sets (``token``, ``endpoint``, ``private``, ...)."""
    return sorted(_upload_targets())


def check_options(options: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """``options`` as a dict, after checking every name is a ``kind`` ("download" or "upload") option.

    >>> check_options({"tokn": "hf_x"}, "download")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    lorun_peft.errors.InvalidArgumentError: unknown Hub download option 'tokn'; accepted: cache_dir, ...
    """
    if options:
        accepted = download_options() if kind == "download" else upload_options()
        for name in options:
            if name not in accepted:
                raise InvalidArgumentError(f"unknown Hub {kind} option {name!r}; accepted: {', '.join(accepted)}")
    return dict(options)


# ---- transfers ---------------------------------------------------------------------------------
def offline() -> bool:
    """Whether HF_HUB_OFFLINE is on (read now, and as huggingface_hub read it at import)."""
    value = os.environ.get("HF_HUB_OFFLINE", "")
    return bool(constants.HF_HUB_OFFLINE) or value.strip().upper() in ("1", "ON", "YES", "TRUE")


def _endpoint(endpoint: str | None) -> str | None:
    return endpoint or os.environ.get("HF_ENDPOINT") or None


def download(repo_id: str, patterns: Sequence[str], *, revision: str | None = None, **hub_kwargs: Any) -> tuple[Path, Path]:
    """Fetch the files matching ``patterns`` (cache first); returns (snapshot folder, cache folder of the repo).

    ``hub_kwargs``: ``snapshot_download``'s options (:func:`download_options`: ``token``,
    ``endpoint``, ``cache_dir``, ``local_files_only``, ...). The second path is the fence for
    :func:`contained`: snapshot files are symlinks into it.
    """
    options = check_options(hub_kwargs, "download")
    if not is_repo_id(repo_id):
        raise InvalidArgumentError(f"{repo_id!r} is neither an existing local folder nor a Hub repo id ('user/name')")
    token = options.get("token")
    options["endpoint"] = _endpoint(options.get("endpoint"))
    options["cache_dir"] = options.get("cache_dir") or os.environ.get("HF_HUB_CACHE") or None
    options["local_files_only"] = bool(options.get("local_files_only")) or offline()
    with hub_errors(repo_id, revision, ", ".join(patterns), token if isinstance(token, str) else None):
        snapshot = snapshot_download(repo_id, revision=revision, allow_patterns=list(patterns), library_name="lorun_peft", **options)
    snapshot = Path(snapshot)
    return snapshot, snapshot.parent.parent


def upload(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    path_in_repo: str | None = None,
    revision: str | None = None,
    tag: str | None = None,
    commit_message: str | None = None,
    allow_patterns: Sequence[str] | None = None,
    delete_patterns: Sequence[str] | None = None,
    **hub_kwargs: Any,
) -> Any:
    """Create the repo if missing (and the branch ``revision``), upload ``folder`` into
    ``path_in_repo`` in one commit, optionally tag that commit. Returns huggingface_hub's CommitInfo.

    ``hub_kwargs``: options of ``HfApi()``, ``create_repo`` and ``upload_folder``
    (:func:`upload_options`: ``token``, ``endpoint``, ``private``, ``create_pr``, ...).
    """
    options = check_options(hub_kwargs, "upload")
    if not is_repo_id(repo_id):
        raise InvalidArgumentError(f"repo_id must look like 'user/name', got {repo_id!r}")
    path_in_repo = check_subfolder(path_in_repo)
    if offline():
        raise HubError(f"cannot push to {repo_id!r}: HF_HUB_OFFLINE is set")
    calls: dict[str, dict[str, Any]] = {"client": {}, "create_repo": {}, "upload_folder": {}}
    for name, value in options.items():
        calls[_upload_targets()[name]][name] = value
    client = {**calls["client"], "endpoint": _endpoint(calls["client"].get("endpoint")), "token": calls["client"].get("token")}
    token = client["token"] if isinstance(client["token"], str) else None
    api = HfApi(**client, library_name="lorun_peft")
    with hub_errors(repo_id, revision, str(path_in_repo or "/"), token):
        private = calls["create_repo"].pop("private", None)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model", **calls["create_repo"])
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            path_in_repo=path_in_repo,
            revision=revision,
            commit_message=commit_message or "Upload with lorun_peft",
            allow_patterns=list(allow_patterns) if allow_patterns else None,
            delete_patterns=list(delete_patterns) if delete_patterns else None,
            repo_type="model",
            **calls["upload_folder"],
        )
        if tag is not None:
            api.create_tag(repo_id, tag=tag, revision=getattr(info, "oid", None) or revision, repo_type="model")
    return info
