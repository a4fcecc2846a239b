"""The pretrained zoo shipped inside the package: one shared base denoiser and LoRun-9 task bundles.

The folder ``lorun_peft/pretrained/`` is Hub-ready (``base/`` + one bundle folder per task, each
with its model card, and ``SHA256SUMS``); ``lorun push`` publishes it unchanged. Every file's
SHA-256 is checked against ``SHA256SUMS`` before anything is loaded, so a damaged file is a clear
:class:`~lorun_peft.errors.CorruptFileError`, not a strange restoration. The bundles were trained
by ``python -m benchmarks.zoo train ...`` (see ``benchmarks/RESULTS.md``); no network is needed.

>>> import lorun_peft
>>> "cs-0.25" in lorun_peft.zoo.list()
True
>>> net = lorun_peft.zoo.load("cs-0.25")          # a ready LoRun-9 network, eval mode
>>> net.K, net.operator.ratio
(9, 0.25)
"""

from __future__ import annotations

import builtins
import hashlib
import os
from pathlib import Path

from .persistence import bundle, _hub as hub
from .errors import CorruptFileError, InvalidArgumentError
from .unfold import UnfoldedNetwork

__all__ = ["ROOT", "PREFIX", "list", "load", "load_base", "bundle_path", "base_path", "verify", "write_checksums", "is_zoo", "push"]

ROOT = Path(__file__).parent / "pretrained"
PREFIX = "zoo:"  # the CLI's spelling: --model zoo:cs-0.25
SUMS = "SHA256SUMS"
BASE = "base"


def list(root: str | os.PathLike = ROOT) -> builtins.list[str]:  # noqa: A001 - lorun_peft.zoo.list() reads well
    """The names of the task bundles in the zoo, sorted (``["cs-0.01", ..., "cs-0.50"]``)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != BASE and (p / bundle.CONFIG_NAME).is_file())


def base_path(root: str | os.PathLike = ROOT) -> Path:
    """The shared base's folder."""
    return Path(root) / BASE


def bundle_path(name: str, root: str | os.PathLike = ROOT) -> Path:
    """The folder of bundle ``name`` (``"cs-0.25"``, or ``"zoo:cs-0.25"``); a clear error if unknown."""
    if not isinstance(name, str):
        raise InvalidArgumentError(f"a zoo bundle name must be a string like 'cs-0.25', got {name!r}")
    name = name.removeprefix(PREFIX)
    known = list(root)
    if name not in known:
        raise InvalidArgumentError(f"the zoo has no bundle {name!r}; it has {known}")
    return Path(root) / name


def verify(name: str | None, root: str | os.PathLike = ROOT) -> None:
    """Check the SHA-256 of every file of the base and of bundle ``name`` (None: the base alone)
    against ``SHA256SUMS``."""
    root = Path(root)
    folder = bundle_path(name, root) if name is not None else root / BASE
    sums_file = root / SUMS
    if not sums_file.is_file():
        raise CorruptFileError(f"{sums_file} is missing: the zoo folder is incomplete")
    expected: dict[str, str] = {}
    for number, line in enumerate(sums_file.read_text().splitlines(), 1):
        digest, _, relative = line.partition("  ")
        if len(digest) != 64 or not relative:
            raise CorruptFileError(f"{sums_file} line {number} is not '<sha256>  <path>'")
        expected[relative] = digest
    wanted = [f for f in expected if f.startswith((f"{BASE}/", f"{folder.name}/"))]
    present = {p.relative_to(root).as_posix() for d in (root / BASE, folder) for p in d.rglob("*") if p.is_file()}
    unlisted = sorted(present - set(wanted))
    if unlisted:
        raise CorruptFileError(f"zoo files {unlisted[:3]} are not in {SUMS} (added or renamed by hand?)")
    for relative in wanted:
        path = root / relative
        if not path.is_file():
            raise CorruptFileError(f"zoo file {path} is missing")
        if hashlib.sha256(path.read_bytes()).hexdigest() != expected[relative]:
            raise CorruptFileError(f"zoo file {path} is damaged (its SHA-256 differs from {SUMS}); reinstall lorun_peft")


def load(name: str, root: str | os.PathLike = ROOT) -> UnfoldedNetwork:
    """A ready LoRun network (eval mode) from the zoo's base and bundle ``name``, after checking
    every file's SHA-256. Swap another task in with ``net.load_adapters(zoo.bundle_path("cs-0.10"))``.
    """
    verify(name, root)
    return UnfoldedNetwork.from_bundle(base_path(root), bundle_path(name, root))


def load_base(root: str | os.PathLike = ROOT) -> "torch.nn.Module":
    """The zoo's shared base denoiser (eval mode), after checking its files' SHA-256: the start of
    a new task's bundle that swaps into the zoo's networks (``lorun train --phase adapters --base zoo``)."""
    verify(None, root)
    return bundle.load_base(base_path(root))


def write_checksums(root: str | os.PathLike = ROOT) -> Path:
    """(Re)write ``root/SHA256SUMS`` over every file under ``root`` (after adding or replacing a
    bundle). Returns its path."""
    root = Path(root)
    lines = [
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(root).as_posix()}"
        for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != SUMS)
    ]
    target = root / SUMS
    target.write_text("\n".join(lines) + "\n")
    return target


def is_zoo(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a zoo folder (``SHA256SUMS`` and ``base/`` beside its bundles)."""
    folder = Path(folder)
    return (folder / SUMS).is_file() and (folder / BASE).is_dir()


def push(repo_id: str, root: str | os.PathLike = ROOT, **hub_options) -> object:
    """Check every bundle of the zoo at ``root`` (SHA-256 and loadable files), then upload the
    folder unchanged to the Hub repo ``repo_id`` in one commit. ``hub_options`` are those of
    ``lorun push`` (path_in_repo, revision, tag, private, commit_message, endpoint, token)."""
    root = Path(root)
    names = list(root)
    if not is_zoo(root) or not names:
        raise InvalidArgumentError(f"{root} is not a zoo folder with bundles ({SUMS}, {BASE}/ and bundle folders)")
    for name in names:
        verify(name, root)
        bundle.read_bundle(root / name)
    if not hub_options.get("commit_message"):
        hub_options["commit_message"] = f"Upload the lorun_peft zoo ({', '.join(names)})"
    return hub.upload(root, repo_id, **hub_options)
