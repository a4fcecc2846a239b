"""The standard test sets by name: ``--data set5``, as deepinv users write it (``lorun data list``).

Set5, Set14, BSD100, Urban100 and CBSD68 are one ``.tar.gz`` each in the Hub dataset repos deepinv
reads: downloaded once with ``hf_hub_download``, then extracted (image files only, flat, no links;
into a temporary folder renamed into place) inside the repo's own cache folder,
``<HF_HUB_CACHE>/datasets--<org>--<name>/lorun_peft/<hash>/``. Once cached a set is read without
any request. A damaged download is reported, not silently replaced: ``refresh=True`` (``lorun data
get NAME --refresh``) fetches it again. Set11, Set12 and BSD68 are on no Hub repo: they are read from
:func:`data_root` ``/<name>/`` (``$LORUN_DATA``, default ``~/.cache/lorun_peft/data``), where a copy
of any other set also takes precedence over the Hub (a machine without internet).

>>> sorted(TESTSETS)
['bsd100', 'bsd68', 'cbsd68', 'set11', 'set12', 'set14', 'set5', 'urban100']
>>> TESTSETS["set5"].repo, TESTSETS["set5"].filename
('eugenesiow/Set5', 'data/Set5_HR.tar.gz')
>>> resolve_data("set6")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
lorun_peft.errors.InvalidArgumentError: 'set6' is neither a folder nor a known test set (bsd100, bsd68, ..., urban100); ...
"""

from __future__ import annotations

import gzip
import json
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, NamedTuple, Sequence

from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

from ..errors import CorruptFileError, HubError, InvalidArgumentError, LorunError
from ..persistence import _hub as hub
from ..persistence.atomic import atomic_folder
from .images import IMAGE_SUFFIXES

__all__ = ["KnownSet", "SetStatus", "MissingDataError", "TESTSETS", "MARKER", "resolve_data", "get_testset",
           "list_testsets", "data_root", "is_testset"]

MARKER = "lorun_testset.json"  # written last into every extracted folder: what it holds and where from
EXTRACTED = "lorun_peft"  # the folder of extracted copies inside a dataset repo's cache folder
_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)  # a truncated or damaged archive


class MissingDataError(LorunError, FileNotFoundError):
    """A test set is not on this machine and cannot be downloaded (the message says where to get it)."""


@dataclass(frozen=True)
class KnownSet:
    """A test set: on the Hub (``repo`` a dataset repo, ``filename`` its archive of images), or
    only by hand from ``origin`` (``repo`` None) into :func:`data_root` ``/<name>/``."""

    name: str
    title: str
    repo: str | None = None
    filename: str | None = None
    origin: str | None = None
    revision: str = "main"

    @property
    def source(self) -> str:
        """Where the images come from, in words."""
        if self.repo is not None:
            return f"Hub dataset {self.repo} ({self.filename})"
        return f"by hand from {self.origin}"


class SetStatus(NamedTuple):
    """One row of :func:`list_testsets`: ``where`` is the folder (or cached archive) when ``cached``,
    else None for a Hub set, or the folder to put a by-hand set in."""

    name: str
    source: str
    cached: bool
    where: Path | None


_SETS = (
    KnownSet("set5", "Set5", "eugenesiow/Set5", "data/Set5_HR.tar.gz"),
    KnownSet("set14", "Set14", "eugenesiow/Set14", "data/Set14_HR.tar.gz"),
    KnownSet("bsd100", "BSD100", "eugenesiow/BSD100", "data/BSD100_HR.tar.gz"),
    KnownSet("urban100", "Urban100", "eugenesiow/Urban100", "data/Urban100_HR.tar.gz"),
    KnownSet("cbsd68", "CBSD68", "deepinv/CBSD68", "CBSD68.tar.gz"),
    KnownSet("set11", "Set11", origin="https://github.com/jianzhangcs/ISTA-Net-PyTorch (folder data/Set11)"),
    KnownSet("set12", "Set12", origin="https://github.com/cszn/DnCNN (folder testsets/Set12)"),
    KnownSet("bsd68", "BSD68", origin="https://github.com/cszn/DnCNN (folder testsets/BSD68)"),
)
TESTSETS: dict[str, KnownSet] = {s.name: s for s in _SETS}


# ---- where things are --------------------------------------------------------------------------
def data_root() -> Path:
    """The folder of test sets put there by hand: ``$LORUN_DATA``, else
    ``$XDG_CACHE_HOME/lorun_peft/data``, else ``~/.cache/lorun_peft/data`` (read at call time)."""
    if os.environ.get("LORUN_DATA"):
        return Path(os.environ["LORUN_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(cache).expanduser() / "lorun_peft" / "data"


def _hub_cache(cache_dir: str | os.PathLike | None) -> Path:
    """The Hub cache downloads go to (as :func:`lorun_peft.persistence._hub.download` picks it)."""
    return Path(cache_dir or os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE).expanduser()


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _local_folder(known: KnownSet) -> Path | None:
    """The set's folder under :func:`data_root` (``set12/`` or ``Set12/``, any case), if there is one."""
    root = data_root()
    if not root.is_dir():
        return None
    return next((p for p in sorted(root.iterdir()) if p.name.lower() == known.name and p.is_dir()), None)


def _cached_archive(known: KnownSet, cache: Path) -> Path | None:
    """The set's archive in the Hub cache, found without any request; None when not downloaded."""
    assert known.repo is not None and known.filename is not None
    found = try_to_load_from_cache(known.repo, known.filename, cache_dir=cache, revision=known.revision, repo_type="dataset")
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def _extracted_folder(known: KnownSet, archive: Path, cache: Path) -> Path:
    """Where ``archive``'s images go: named by its blob (the file's hash), or by the snapshot's
    commit where the cache holds copies instead of links."""
    blob = archive.resolve()
    if blob.parent.name == "blobs":
        key = blob.name
    else:
        key = archive.parents[len(PurePosixPath(known.filename or "").parts) - 1].name
    assert known.repo is not None
    return cache / f"datasets--{known.repo.replace('/', '--')}" / EXTRACTED / key[:16]


# ---- names -------------------------------------------------------------------------------------
def is_testset(name: object) -> bool:
    """Whether ``name`` is a known test set's name (any case).

    >>> is_testset("Set5"), is_testset("set6"), is_testset(3)
    (True, False, False)
    """
    return isinstance(name, (str, os.PathLike)) and os.fspath(name).lower() in TESTSETS


def _known(name: str | os.PathLike, folder_too: bool = False) -> KnownSet:
    text = os.fspath(name)
    if text.lower() not in TESTSETS:
        names = ", ".join(sorted(TESTSETS))
        if folder_too and ("/" in text or os.sep in text):  # meant as a folder
            raise InvalidArgumentError(f"data folder not found: {text} (a known test set's name also works: {names})")
        if folder_too:
            raise InvalidArgumentError(f"{text!r} is neither a folder nor a known test set ({names}); "
                                       "give a folder of images or one of these names (`lorun data list` shows them)")
        raise InvalidArgumentError(f"{text!r} is not a known test set; known: {names} (`lorun data list` shows them)")
    return TESTSETS[text.lower()]


def resolve_data(
    spec: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    refresh: bool = False,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
) -> Path | Sequence[str | os.PathLike]:
    """The folder of images ``spec`` names: an existing path as it is (a list of files unchanged),
    or a known test set's folder (:func:`get_testset`, downloading it once if needed).

    Anything else raises :class:`~lorun_peft.errors.InvalidArgumentError` listing the known names.
    """
    if not isinstance(spec, (str, os.PathLike)):
        return spec
    if not os.fspath(spec).strip():
        raise InvalidArgumentError("the data is empty: give a folder of images or a test set name (`lorun data list`)")
    path = Path(spec).expanduser()
    if path.exists():
        return path
    return get_testset(_known(spec, folder_too=True).name, refresh=refresh, endpoint=endpoint, cache_dir=cache_dir, token=token)


def get_testset(
    name: str,
    *,
    refresh: bool = False,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
) -> Path:
    """The folder of test set ``name``'s images (any case): the data folder's copy when there is
    one, else the Hub set extracted in the cache, downloaded first if it is not there.

    ``endpoint`` (default ``HF_ENDPOINT``), ``cache_dir`` (default ``HF_HUB_CACHE``) and ``token``
    go to ``hf_hub_download``. ``refresh``: download the archive again and extract it anew.
    Raises MissingDataError (a by-hand set not there), HubError (no network, offline, not cached;
    the message says what to do) or CorruptFileError (a damaged download: which file, what to do).
    """
    known = _known(name)
    local = _local_folder(known)
    if local is not None and _images_in(local):
        return local
    where = data_root() / known.name
    if known.repo is None:
        state = f"{local} holds no images ({', '.join(IMAGE_SUFFIXES)})" if local is not None else "it is not on this machine"
        raise MissingDataError(f"test set {known.title}: {state}; get it from {known.origin} and put its images in {where}{os.sep} "
                               f"(or set LORUN_DATA to a folder holding {known.name}{os.sep})")
    cache = _hub_cache(cache_dir)
    archive = None if refresh else _cached_archive(known, cache)
    if archive is None:
        archive = _download(known, cache, where, refresh=refresh, endpoint=endpoint, token=token)
    target = _extracted_folder(known, archive, cache)
    if not refresh and (target / MARKER).is_file():
        return target
    return atomic_folder(target, lambda tmp: _extract(known, archive, tmp), MARKER)


def _download(known: KnownSet, cache: Path, where: Path, *, refresh: bool, endpoint: str | None, token: str | bool | None) -> Path:
    """The set's archive, fetched with hf_hub_download; Hub failures as one-line HubErrors."""
    assert known.repo is not None and known.filename is not None
    by_hand = f"or put its images in {where}{os.sep} by hand"
    if hub.offline():
        what = "cannot download it again" if refresh else "is not in the Hub cache"
        raise HubError(f"test set {known.title} {what} and HF_HUB_OFFLINE is set: unset HF_HUB_OFFLINE and connect to the "
                       f"internet to download it from the Hub dataset {known.repo} ({known.filename}), {by_hand}")
    try:
        with hub.hub_errors(known.repo, known.revision, known.filename, token if isinstance(token, str) else None):
            path = hf_hub_download(known.repo, known.filename, repo_type="dataset", revision=known.revision,
                                   cache_dir=cache, endpoint=hub._endpoint(endpoint), token=token,
                                   force_download=refresh, library_name="lorun_peft")
    except HubError as err:
        raise HubError(f"test set {known.title} cannot be downloaded: {err}; check the network (and HF_ENDPOINT) and retry, "
                       f"{by_hand}") from err
    return Path(path)


# ---- extraction --------------------------------------------------------------------------------
def _extract(known: KnownSet, archive: Path, folder: Path) -> None:
    """Write the image files of ``archive`` into ``folder`` (flat, by base name), then MARKER.

    A damaged archive raises CorruptFileError naming the file to delete (the blob, not the link).
    """
    blob = archive.resolve()
    try:
        names = _extract_images(blob, folder)
    except _READ_ERRORS as err:
        raise CorruptFileError(
            f"the downloaded archive of test set {known.title} is damaged ({type(err).__name__}: {err}): {blob}; delete it, "
            f"or download it again with `lorun data get {known.name} --refresh` (resolve_data({known.name!r}, refresh=True))"
        ) from None
    if not names:
        raise CorruptFileError(f"{blob} ({known.repo}, {known.filename}) holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    record = {"name": known.name, "repo": known.repo, "filename": known.filename, "revision": known.revision,
              "archive": blob.name, "images": names}
    (folder / MARKER).write_text(json.dumps(record, indent=1))


def _extract_images(archive: Path, folder: Path) -> list[str]:
    """Stream ``archive`` (a tar, compressed or not) once, copying its regular image files;
    a gzip stream is read to its end, so its checksum and length are checked."""
    with open(archive, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream: IO[bytes] = gzip.GzipFile(fileobj=raw) if gzipped else raw
        names: list[str] = []
        with tarfile.open(fileobj=stream, mode="r|" if gzipped else "r|*") as tar:
            for member in tar:
                name = _image_name(member, folder)
                if name is None:
                    continue
                source = tar.extractfile(member)
                assert source is not None
                try:
                    with open(folder / name, "xb") as out:
                        while chunk := source.read(1 << 20):
                            out.write(chunk)
                except FileExistsError:
                    raise CorruptFileError(f"{archive} holds two images named {name}; cannot lay them out flat") from None
                names.append(name)
        while stream.read(1 << 20):  # the rest, so the gzip trailer (CRC, length) is read and checked
            pass
    return sorted(names)


def _image_name(member: tarfile.TarInfo, folder: Path) -> str | None:
    """The base name a member is written as, or None to skip it (not a regular image file, or a
    macOS resource fork). A member ``tarfile``'s ``data`` filter refuses (an absolute name, ``..``)
    makes the archive unusable, whatever its kind."""
    path = PurePosixPath(member.name)
    try:
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12+, 3.11.4+, 3.12
            tarfile.data_filter(member, str(folder))
        elif path.is_absolute() or ".." in path.parts:
            raise tarfile.TarError(f"{member.name!r} is absolute or climbs out of the folder")
    except tarfile.TarError as err:  # tarfile.FilterError and its kinds
        raise CorruptFileError(f"refusing an archive with an unsafe member: {err}") from None
    if not member.isreg() or path.suffix.lower() not in IMAGE_SUFFIXES:
        return None
    if path.name.startswith(".") or "__MACOSX" in path.parts:
        return None
    return path.name


# ---- the list ----------------------------------------------------------------------------------
def list_testsets(*, cache_dir: str | os.PathLike | None = None) -> list[SetStatus]:
    """Every known set: name, source, whether it can be read now without the network, and where
    (its folder, or the cached archive not yet extracted). Makes no request."""
    cache = _hub_cache(cache_dir)
    rows = []
    for known in _SETS:
        local = _local_folder(known)
        if local is not None and _images_in(local):
            rows.append(SetStatus(known.name, known.source, True, local))
            continue
        if known.repo is None:
            rows.append(SetStatus(known.name, known.source, False, data_root() / known.name))
            continue
        archive = _cached_archive(known, cache)
        if archive is None:
            rows.append(SetStatus(known.name, known.source, False, None))
            continue
        folder = _extracted_folder(known, archive, cache)
        rows.append(SetStatus(known.name, known.source, True, folder if (folder / MARKER).is_file() else archive))
    return rows
