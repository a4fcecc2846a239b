"""The library's own exceptions: one hierarchy, each message names the argument or file at fault.

>>> from lorun_peft.errors import InvalidArgumentError, LorunError
>>> issubclass(InvalidArgumentError, (LorunError, ValueError))
True
"""

from __future__ import annotations

__all__ = [
    "LorunError",
    "InvalidArgumentError",
    "IncompatibleBundleError",
    "CorruptFileError",
    "HubError",
    "TrainingError",
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


class TrainingError(LorunError):
    """Training cannot go on (for example the loss became NaN)."""
