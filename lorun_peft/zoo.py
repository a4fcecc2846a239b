"""The pretrained zoo shipped inside the package: a base denoiser and LoRun-9 task bundles over it.

The folder ``lorun_peft/pretrained/`` is Hub-ready (``base/``, one bundle folder per task, each with
its model card, and ``SHA256SUMS``); ``lorun push`` publishes it unchanged. Every shipped bundle, CS
and SR, loads over the one shared ``base/`` (a Gaussian denoiser trained further under block CS: the
paper's phase 1); the bundles of a family swap into one live network. A zoo may also hold a family
base ``base-<family>/``: a bundle named ``<family>-...`` then loads over it instead. Every file's
SHA-256 is checked against ``SHA256SUMS`` before anything is loaded, so a damaged file is a clear
:class:`~lorun_peft.errors.CorruptFileError`, not a strange restoration. The bundles were trained
by ``python -m benchmarks.zoo train ...`` (see ``benchmarks/RESULTS.md``); no network is needed.

>>> import lorun_peft
>>> "cs-0.25" in lorun_peft.zoo.list()
True
>>> net = lorun_peft.zoo.load("cs-0.25")          # a ready LoRun-9 network, eval mode
>>> net.K, net.operator.ratio
(9, 0.25)
>>> lorun_peft.zoo.base_name("cs-0.25"), lorun_peft.zoo.base_name("sr-x4-k0")  # one base serves both
('base', 'base')
"""

from __future__ import annotations

import builtins
import hashlib
import os
from pathlib import Path

from .persistence import bundle, _hub as hub
from .errors import CorruptFileError, InvalidArgumentError
from .unfold import UnfoldedNetwork

__all__ = ["ROOT", "PREFIX", "list", "load", "load_base", "bundle_path", "base_path", "base_name", "family_base",
           "base_for_spec", "verify", "write_checksums", "is_zoo", "push"]

ROOT = Path(__file__).parent / "pretrained"
PREFIX = "zoo:"  # the CLI's spelling: --model zoo:cs-0.25
SUMS = "SHA256SUMS"
BASE = "base"  # the shared base; a family's own is BASE-<family>


def list(root: str | os.PathLike = ROOT) -> builtins.list[str]:  # noqa: A001 - lorun_peft.zoo.list() reads well
    """The names of the task bundles in the zoo, sorted (``["cs-0.01", ..., "cs-0.50"]``)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not _is_base(p.name) and (p / bundle.CONFIG_NAME).is_file())


def _is_base(folder: str) -> bool:
    return folder == BASE or folder.startswith(f"{BASE}-")


def base_name(name: str | None, root: str | os.PathLike = ROOT) -> str:
    """The base folder bundle ``name`` loads over: ``base-<family>`` (``base-cs`` for ``"cs-0.25"``)
    when the zoo has one, else the shared ``base`` (also for ``name=None``)."""
    if name is None:
        return BASE
    family = family_base(name)
    return family if (Path(root) / family / bundle.BASE_CONFIG_NAME).is_file() else BASE


def family_base(name: str) -> str:
    """The name of the family base a bundle (or a path ending in one) would load over: ``base-cs``
    for ``"cs-0.25"``, ``"zoo:cs-0.25"``, ``"cs"`` or ``"zoo/cs-0.25"``."""
    return f"{BASE}-{str(name).removeprefix(PREFIX).rstrip('/').split('/')[-1].split('-')[0]}"


def base_path(root: str | os.PathLike = ROOT, name: str | None = None) -> Path:
    """The folder of the base bundle ``name`` loads over (see :func:`base_name`); the shared base's
    without ``name``."""
    return Path(root) / base_name(name, root)


def bundle_path(name: str, root: str | os.PathLike = ROOT) -> Path:
    """The folder of bundle ``name`` (``"cs-0.25"``, or ``"zoo:cs-0.25"``); a clear error if unknown."""
    if not isinstance(name, str):
        raise InvalidArgumentError(f"a zoo bundle name must be a string like 'cs-0.25', got {name!r}")
    name = name.removeprefix(PREFIX)
    known = list(root)
    if name not in known:
        raise InvalidArgumentError(f"the zoo has no bundle {name!r}; it has {known}")
    return Path(root) / name


def verify(name: str | None, root: str | os.PathLike = ROOT, *, base: bool = True) -> None:
    """Check the SHA-256 of every file of bundle ``name`` and of the base it loads over (None: the
    shared base alone) against ``SHA256SUMS``; ``base=False``: the bundle's files only (its base is
    already in memory, checked when :func:`load_base` read it)."""
    root = Path(root)
    folders = [base_path(root, name)] if base or name is None else []
    _verify_folders(root, folders if name is None else [*folders, bundle_path(name, root)])


def _verify_folders(root: Path, folders: builtins.list[Path]) -> None:
    sums_file = root / SUMS
    if not sums_file.is_file():
        raise CorruptFileError(f"{sums_file} is missing: the zoo folder is incomplete")
    expected: dict[str, str] = {}
    for number, line in enumerate(sums_file.read_text().splitlines(), 1):
        digest, _, relative = line.partition("  ")
        if len(digest) != 64 or not relative:
            raise CorruptFileError(f"{sums_file} line {number} is not '<sha256>  <path>'")
        expected[relative] = digest
    wanted = [f for f in expected if f.startswith(tuple(f"{d.name}/" for d in folders))]
    present = {p.relative_to(root).as_posix() for d in folders for p in d.rglob("*") if p.is_file()}
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
    return UnfoldedNetwork.from_bundle(base_path(root, name), bundle_path(name, root))


def load_base(name: str | None = None, root: str | os.PathLike = ROOT) -> "torch.nn.Module":
    """The base that bundle or family ``name`` loads over (``"cs-0.25"`` or ``"cs"``: ``base-cs/``
    where the zoo has one, else ``base/``), or the zoo's shared base (``name=None``), in eval mode,
    after checking its files' SHA-256: the start of a new task's bundle that swaps into the zoo's
    networks of that family (the command line's ``--base zoo:cs``; ``--base zoo`` is the shared base)."""
    folder = base_path(root, name)
    _verify_folders(Path(root), [folder])
    return bundle.load_base(folder)


def base_for_spec(spec: str | os.PathLike | None) -> "torch.nn.Module | None":
    """The command line's ``--base``: ``zoo`` is the shared base, ``zoo:cs`` or ``zoo:cs-0.25`` the
    base of that family or bundle; None for any other spec (a folder or a Hub repo)."""
    text = str(spec) if spec is not None else ""
    if text == "zoo":
        return load_base()
    return load_base(text.removeprefix(PREFIX)) if text.startswith(PREFIX) and text != PREFIX else None


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
