"""Crash-safe file writing: write beside the target, flush to disk, then rename over it.

A process killed at any moment leaves either the old file or the new one under the target
name, never a partial file.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
>>> with atomic_write(p) as f:
...     _ = f.write(b"hello")
>>> p.read_bytes()
b'hello'
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_write", "fsync_dir", "umask", "permit", "permit_tree"]


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
