"""The library's own exceptions: one hierarchy, each message names the argument or file at fault.

>>> from lorun_peft.errors import InvalidArgumentError, LorunError
>>> issubclass(InvalidArgumentError, (LorunError, ValueError))
True

The argument checks live here too, with one signature, ``check_x(value, name, ...)``, each
returning the checked value (they raise these errors):

>>> check_int(3, "block")
3
>>> check_int(0, "block")
Traceback (most recent call last):
...
lorun_peft.errors.InvalidArgumentError: block must be an int >= 1, got 0
>>> check_number(0.5, "sigma"), check_number(0, "length", positive=False)
(0.5, 0.0)
>>> check_number(float("nan"), "sigma")
Traceback (most recent call last):
...
lorun_peft.errors.InvalidArgumentError: sigma must be a positive number, got nan
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = [
    "LorunError",
    "InvalidArgumentError",
    "IncompatibleBundleError",
    "CorruptFileError",
    "HubError",
    "HubFolderNotFoundError",
    "TrainingError",
    "ExportError",
    "check_int",
    "check_number",
]


class LorunError(Exception):
    """Base class of every error raised on purpose by lorun_peft."""


class InvalidArgumentError(LorunError, ValueError):
    """An argument (or tensor) has a value, type or shape the library cannot use."""


class IncompatibleBundleError(LorunError):
    """A saved adapter bundle or checkpoint does not fit the network it is loaded into."""


class CorruptFileError(LorunError):
    """A file is truncated, unreadable or not what its name says."""


class HubError(LorunError):
    """A Hugging Face Hub request failed (repo, revision or file not found, offline, no permission)."""


class HubFolderNotFoundError(HubError):
    """A Hub repo was reached but holds no lorun_peft folder at ``subfolder`` (its marker file is missing)."""

    def __init__(self, message: str, subfolder: str | None = None) -> None:
        super().__init__(message)
        self.subfolder = subfolder


class TrainingError(LorunError):
    """Training cannot go on (for example the loss became NaN)."""


class ExportError(LorunError):
    """An exported file does not reproduce the network (onnxruntime differs from PyTorch past the tolerance)."""


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer (Python or numpy, not bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidArgumentError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_number(value: Any, name: str, *, positive: bool = True) -> float:
    """``value`` as a float if it is a finite real number (not bool) that is > 0 (``positive``) or >= 0."""
    number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else float("nan")
    if not (math.isfinite(number) and (number > 0 if positive else number >= 0)):
        raise InvalidArgumentError(f"{name} must be a {'positive' if positive else 'non-negative'} number, got {value!r}")
    return number
