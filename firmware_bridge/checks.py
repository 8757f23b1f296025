"""Argument checks shared by the declarative device and simulator dataclasses.

Messages name the argument and the allowed range; a wrong type is named by its type,
not quoted, since a value may be anything a caller passed.
"""

from __future__ import annotations

import math


def check_int(name: str, value: object, low: int, high: int) -> None:
    """Reject non-ints (bools too) and ints outside ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, not {value}")


def check_seconds(name: str, value: object, *, positive: bool = False) -> None:
    """Reject non-numbers, infinities, negatives (and zero, if ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be finite and {'more than' if positive else 'at least'} 0")
