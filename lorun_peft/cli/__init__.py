"""The ``lorun`` command line: :mod:`.parser` parses (no torch at import), :mod:`.commands` runs the
commands, :mod:`.inputs` turns options into operators and images, :mod:`.demo` is ``lorun demo``."""

from __future__ import annotations

from .parser import main

__all__ = ["main"]
