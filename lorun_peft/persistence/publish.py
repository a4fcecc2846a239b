"""Bundles and bases on the Hugging Face Hub: push a network's task (:func:`push_adapters`), its base
(:func:`push_base`) or a folder saved earlier (:func:`push_folder`), and :func:`pull` one bundle
into the Hub cache. The transfers and their errors are :mod:`lorun_peft.persistence._hub`'s; huggingface_hub's
keyword options pass through as ``**hub_kwargs`` (``token``, ``endpoint``, ``private``, ...),
their names checked against its signatures.

>>> push_folder("bundles/cs-0.10", "user/lorun-cs", privat=True)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
lorun_peft.errors.InvalidArgumentError: unknown Hub upload option 'privat'; accepted: ...
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from . import _hub as hub
from .cards import task_summary
from ..errors import InvalidArgumentError
from ._files import Place, local_fence, locate
from .protocol import Network
from .networks import NETWORK_CONFIG, check_network_folder
from .networks import PATTERNS as NETWORK_PATTERNS
from .reading import read_base, read_place
from .saving import operator_config, save_adapters, save_base
from .schema import BASE_CONFIG_NAME, BASE_PATTERNS, BUNDLE_PATTERNS, CONFIG_NAME

__all__ = ["push_adapters", "push_base", "push_folder", "pull"]


def push_adapters(
    net: Network,
    repo_id: str,
    *,
    path_in_repo: str | None = None,
    revision: str | None = None,
    tag: str | None = None,
    commit_message: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    base_model: str | None = None,
    **hub_kwargs: Any,
) -> Any:
    """Save the task bundle to a temporary folder and upload only it to ``repo_id/path_in_repo``.

    Creates the repo (and branch ``revision``) if missing; ``tag`` tags the new commit. Stage
    files left from an older bundle with more stages are deleted in the same commit.
    ``hub_kwargs``: ``token``, ``private``, ``endpoint`` and the other options of ``HfApi``,
    ``create_repo`` and ``upload_folder`` (:func:`lorun_peft.persistence._hub.upload_options`).
    Returns huggingface_hub's CommitInfo.
    """
    options = hub.check_options(hub_kwargs, "upload")
    with tempfile.TemporaryDirectory(prefix="lorun-push-") as tmp:
        folder = save_adapters(net, Path(tmp) / "bundle", metrics=metrics, base_model=base_model)
        return hub.upload(
            folder, repo_id, path_in_repo=path_in_repo, revision=revision, tag=tag,
            commit_message=commit_message or f"Upload LoRun bundle ({task_summary(operator_config(net.operator))}, K={net.K})",
            allow_patterns=list(BUNDLE_PATTERNS), delete_patterns=["stage_*/*"], **options,
        )


def push_base(
    model: Network | nn.Module,
    repo_id: str,
    *,
    path_in_repo: str | None = None,
    revision: str | None = None,
    tag: str | None = None,
    commit_message: str | None = None,
    **hub_kwargs: Any,
) -> Any:
    """Save the plain base to a temporary folder and upload it (see :func:`push_adapters`)."""
    options = hub.check_options(hub_kwargs, "upload")
    with tempfile.TemporaryDirectory(prefix="lorun-push-") as tmp:
        folder = save_base(model, Path(tmp) / "base")
        return hub.upload(
            folder, repo_id, path_in_repo=path_in_repo, revision=revision, tag=tag,
            commit_message=commit_message or "Upload LoRun base denoiser", allow_patterns=list(BASE_PATTERNS), **options,
        )


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    path_in_repo: str | None = None,
    revision: str | None = None,
    tag: str | None = None,
    commit_message: str | None = None,
    **hub_kwargs: Any,
) -> Any:
    """Upload a bundle, base or network folder saved earlier (checked first); see :func:`push_adapters`."""
    options = hub.check_options(hub_kwargs, "upload")
    folder = Path(folder)
    if (folder / CONFIG_NAME).is_file():
        read_place(Place(folder, local_fence(folder), str(folder)))
        patterns, deletes = list(BUNDLE_PATTERNS), ["stage_*/*"]
    elif (folder / NETWORK_CONFIG).is_file():  # a whole network (save_pretrained): its config must read
        check_network_folder(folder)
        patterns, deletes = list(NETWORK_PATTERNS), list(NETWORK_PATTERNS)
    elif (folder / BASE_CONFIG_NAME).is_file():
        read_base(Place(folder, local_fence(folder), str(folder)))
        patterns, deletes = list(BASE_PATTERNS), None
    else:
        raise InvalidArgumentError(
            f"{folder} is neither a bundle ({CONFIG_NAME}), a saved network ({NETWORK_CONFIG}) nor a saved base ({BASE_CONFIG_NAME})"
        )
    return hub.upload(
        folder, repo_id, path_in_repo=path_in_repo, revision=revision, tag=tag,
        commit_message=commit_message or f"Upload {folder.name} with lorun_peft",
        allow_patterns=patterns, delete_patterns=deletes, **options,
    )


def pull(repo_id: str, *, subfolder: str | None = None, revision: str | None = None, **hub_kwargs: Any) -> Path:
    """Download one bundle into the Hub cache, verify it, and return its local folder.

    ``hub_kwargs``: huggingface_hub download options (``token``, ``endpoint``, ``cache_dir``, ...).
    """
    options = hub.check_options(hub_kwargs, "download")
    place = locate(repo_id, subfolder, revision, BUNDLE_PATTERNS, CONFIG_NAME, options)
    read_place(place)
    return place.folder
