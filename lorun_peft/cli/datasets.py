"""``lorun data``: the standard test sets by name (:mod:`lorun_peft.data.testsets`): ``lorun data
list`` shows each known set and where it is, ``lorun data get NAME`` fetches one; ``named_data``
turns a name given to ``--data`` (eval, plot) or ``--val`` (train) into the folder of its images.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data import testsets
from ..data.images import IMAGE_SUFFIXES

__all__ = ["cmd_data", "named_data", "NAMED_DATA"]


NAMED_DATA = {"eval": ("data",), "plot": ("data",), "train": ("val",)}  # the options that take a test set's name


def named_data(args: argparse.Namespace) -> None:
    """Turn a test set's name in ``--data`` (eval, plot) or ``--val`` (train) into the folder of its
    images (:func:`lorun_peft.data.testsets.resolve_data`: an existing path stays as it is)."""
    for option in NAMED_DATA.get(args.command, ()):
        value = getattr(args, option, None)
        if value is not None and not Path(value).expanduser().exists():
            setattr(args, option, testsets.resolve_data(value))
            if testsets.is_testset(value):
                print(f"--{option} {value}: {getattr(args, option)}", file=sys.stderr)


def cmd_data(args: argparse.Namespace) -> None:
    """``lorun data list`` (each known test set, where it is) and ``lorun data get NAME...``."""
    if args.action == "get":
        for name in args.names:
            folder = testsets.get_testset(name, refresh=args.refresh, endpoint=args.endpoint)
            count = sum(1 for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            print(f"{name.lower()}: {count} images in {folder}")
        return
    rows = [(row.name, "yes" if row.cached else "no", row.source,
             str(row.where) if row.cached else f"lorun data get {row.name}" if row.where is None else f"put its images in {row.where}")
            for row in testsets.list_testsets()]
    header = ("name", "cached", "source", "where")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        print("  ".join(text.ljust(width) for text, width in zip(row, widths)) + "  " + row[3])
    print(f"\nHub sets are downloaded into the Hugging Face cache on first use; a folder {testsets.data_root() / 'NAME'} "
          "(LORUN_DATA) holding images is used first, for any set")
