"""Crash-safe writing of a file or a whole folder: write beside the target, flush to disk, then
rename over it.

A process killed at any moment leaves either the old file (folder) or the new one under the
target name, never a partial one. Written files are 0644 and folders 0755 under umask 022.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
>>> with atomic_write(p) as f:
...     _ = f.write(b"hello")
>>> p.read_bytes()
b'hello'
>>> folder = atomic_folder(p.parent / "saved", lambda tmp: (tmp / "MARK").write_text("1"), "MARK")
>>> sorted(q.name for q in folder.iterdir()), oct(folder.stat().st_mode & 0o777) == oct(0o777 & ~umask())
(['MARK'], True)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Callable, Iterator

from ..errors import InvalidArgumentError

__all__ = ["atomic_write", "atomic_folder", "settled_folder", "fsync_dir", "umask", "permit", "permit_tree"]


def umask() -> int:
    """The process's umask (read from /proc where it can be, which leaves it untouched)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore it
    os.umask(mask)
    return mask


def permit(path: str | os.PathLike, folder: bool = False, mask: int | None = None) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would (0666/0777 less the umask, ``mask``
    if given): temporary files and folders are created 0600/0700, which would make a saved file
    unreadable to others."""
    os.chmod(path, (0o777 if folder else 0o666) & ~(umask() if mask is None else mask))


def permit_tree(folder: str | os.PathLike) -> None:
    """:func:`permit` ``folder`` and everything under it (some writers, safetensors among them,
    create files 0600 whatever the umask), reading the umask once."""
    mask = umask()
    permit(folder, folder=True, mask=mask)
    for path in Path(folder).rglob("*"):
        permit(path, folder=path.is_dir(), mask=mask)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open a temporary file beside ``path`` for binary writing; rename it to ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        permit(tmp)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (renames into it) to disk; a no-op where the OS refuses."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_folder(target: str | os.PathLike, fill: Callable[[Path], None], marker: str) -> Path:
    """Write a folder beside ``target`` with ``fill(tmp)``, then rename it to ``target``.

    ``marker`` names the file every folder of this kind holds: an existing non-empty folder
    without it is never replaced. Replacing takes two renames (old aside to ``.NAME.old-*``, new
    in), then the old one is deleted. A process killed between the two renames leaves no
    ``target`` but a complete ``.NAME.old-*``: readers fall back to it (:func:`settled_folder`) and
    the next save cleans it up. At every moment a complete old or complete new folder exists.
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
        permit_tree(tmp)  # files 0644 and folders 0755 under umask 022, whoever wrote them
        _fsync_tree(tmp)
        if target.exists():
            old = parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
            os.rename(target, old)
        os.rename(tmp, target)
        fsync_dir(parent)
    except BaseException:
        if old is not None and old.exists() and not target.exists():
            os.rename(old, target)  # put the old folder back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _sweep(parent, target.name)
    return target


def settled_folder(folder: Path, marker: str) -> Path:
    """``folder``, or the complete old copy an :func:`atomic_folder` killed between its two renames
    left beside it (the newest holding ``marker``)."""
    if folder.exists():
        return folder
    olds = [p for p in folder.parent.glob(f".{folder.name}.old-*") if (p / marker).is_file()]
    return max(olds, key=lambda p: p.stat().st_mtime) if olds else folder


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
        fsync_dir(Path(root))
