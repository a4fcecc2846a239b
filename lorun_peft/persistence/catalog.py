"""Finding and describing saved bundles: :func:`list_bundles` in a folder or Hub repo,
:func:`inspect` for a readable report, :func:`copy_bundle` to copy one out of the Hub cache.

>>> import tempfile
>>> list_bundles(tempfile.mkdtemp())
[]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from . import _hub as hub
from .cards import task_summary
from ..errors import InvalidArgumentError
from ._files import (
    MAX_JSON_BYTES,
    Place,
    download,
    local_fence,
    locate,
    parse_json,
    parse_safetensors,
    read_bytes,
    write,
)
from .fingerprint import fingerprint
from .atomic import atomic_folder
from .reading import read_bundle, read_place
from .schema import BASE_CONFIG_NAME, BASE_PATTERNS, BASE_WEIGHTS_NAME, BUNDLE_PATTERNS, CARD_NAME, CONFIG_NAME

__all__ = ["BundleInfo", "list_bundles", "inspect", "copy_bundle"]


@dataclass(frozen=True, repr=False)
class BundleInfo:
    """One bundle found by :func:`list_bundles`: its folder name (``"."`` for the root) and settings."""

    name: str
    config: dict[str, Any]
    location: str

    @property
    def task(self) -> str:
        """The operator and its settings, e.g. ``"BlockCS (block=32, ..., ratio=0.1)"``."""
        return task_summary(self.config.get("operator") or {})

    def __repr__(self) -> str:
        return f"BundleInfo(name={self.name!r}, task={self.task!r}, K={self.config.get('K')!r})"

    def __str__(self) -> str:
        c = self.config
        metrics = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in (c.get("metrics") or {}).items())
        return f"{self.name}: {self.task}, K={c.get('K')}, {c.get('algorithm')}, {c.get('adapter')} gamma={c.get('gamma')}" + (f", {metrics}" if metrics else "")


def list_bundles(repo_id_or_path: str | os.PathLike, *, revision: str | None = None, **hub_kwargs: Any) -> list[BundleInfo]:
    """The bundles (folders with ``lorun_config.json``) in a local folder or Hub repo, with their settings.

    On the Hub only the ``lorun_config.json`` files are downloaded; ``hub_kwargs`` are
    huggingface_hub download options (``token``, ``endpoint``, ``cache_dir``, ...).
    """
    options = hub.check_options(hub_kwargs, "download")
    source = repo_id_or_path
    if isinstance(source, Path) or Path(source).exists() or not hub.is_repo_id(str(source)):
        if revision is not None:
            raise InvalidArgumentError(f"revision={revision!r} applies to Hub repos; {str(source)!r} is a local folder")
        root = Path(source)
        if not root.is_dir():
            raise InvalidArgumentError(f"{root} is not a folder (and not a Hub repo id 'user/name')")
        fence, label = local_fence(root), str(root)
    else:
        root, fence = download(str(source), [CONFIG_NAME, f"*/{CONFIG_NAME}"], revision, options)
        label = f"{source} (revision {revision or 'main'})"
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if CONFIG_NAME in files:
            relative = Path(folder).relative_to(root).as_posix()
            place = Place(Path(folder), fence, f"{label}/{relative}")
            config = parse_json(read_bytes(place, CONFIG_NAME, MAX_JSON_BYTES), f"{CONFIG_NAME} of {place.label}")
            found.append(BundleInfo(relative, config, place.label))
    return found


def inspect(
    bundle: str | os.PathLike,
    *,
    subfolder: str | None = None,
    revision: str | None = None,
    base: nn.Module | str | os.PathLike | None = None,
    **hub_kwargs: Any,
) -> str:
    """A readable report of a bundle (task, K, ranks, sizes, fingerprint check against ``base``),
    or the list of bundles when ``bundle`` is a folder or repo of bundles."""
    options = hub.check_options(hub_kwargs, "download")
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
        f"task       {task_summary(c['operator'])}",
        f"stages     K={c['K']}, {c['algorithm'].upper()}, noise level input: {c['noise_level']}",
        f"adapters   {c['adapter']}, gamma {c['gamma']}%, {stage_params[0]:,} parameters per stage, {sum(stage_params):,} in all",
        f"steps/op   {sum(t.numel() for t in b.steps.values())} step parameters, {sum(t.numel() for t in b.operator_state.values()):,} operator values",
        f"base       {c['denoiser'].get('module')}.{c['denoiser'].get('qualname')}, fingerprint {c['base_fingerprint']}",
        f"files      {sum(b.sizes.values()):,} bytes, sha256 verified; saved by lorun_peft {c.get('library_version')}",
    ]
    if c["metrics"]:
        lines.append("metrics    " + ", ".join(f"{k}={v}" for k, v in c["metrics"].items()))
    if base is not None:
        if isinstance(base, nn.Module):
            found = fingerprint(base)
        else:
            place = locate(base, None, None, BASE_PATTERNS, BASE_CONFIG_NAME, options)
            found = fingerprint(parse_safetensors(read_bytes(place, BASE_WEIGHTS_NAME), f"{BASE_WEIGHTS_NAME} in {place.label}"))
        verdict = "matches" if found == c["base_fingerprint"] else f"DOES NOT match (base is {found})"
        lines.append(f"base check fingerprint {verdict}")
    width = max(len(n) for n in c["ranks"]) if c["ranks"] else 5
    lines += ["", f"{'layer':<{width}}  rank"] + [f"{n:<{width}}  {r}" for n, r in c["ranks"].items()]
    return "\n".join(lines)


def copy_bundle(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy a local bundle (e.g. one pulled into the Hub cache) into ``target``, atomically; the
    copy is verified (every file parses and matches its sha256) before it is renamed in."""
    place = locate(source, None, None, BUNDLE_PATTERNS, CONFIG_NAME, {})
    names = [CONFIG_NAME, *read_place(place).config["files"]]
    names += [CARD_NAME] if (place.folder / CARD_NAME).exists() else []

    def fill(folder: Path) -> None:
        for name in names:
            write(folder / name, read_bytes(place, name))
        read_place(Place(folder, folder, str(folder)))

    return atomic_folder(target, fill, CONFIG_NAME)
