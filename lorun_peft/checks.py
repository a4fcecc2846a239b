"""Argument checks shared by the operators and kernels.

>>> check_int(3, "block")
3
>>> check_int(0, "block")
Traceback (most recent call last):
...
lorun_peft.errors.InvalidArgumentError: block must be an int >= 1, got 0
"""

from __future__ import annotations

import numbers
from typing import Any

from .errors import InvalidArgumentError

__all__ = ["check_int"]


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer (Python or numpy, not bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidArgumentError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)
