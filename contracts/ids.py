"""Identifiers on the wire: stations, devices and probes share one rule."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import StringConstraints

from contracts.errors import InvalidId

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ID_RE = re.compile(ID_PATTERN)

Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
"""A station, device or probe id: 1 to 64 of ``A-Z a-z 0-9 _ -``."""


def validate_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a valid id, else raise :class:`InvalidId` naming ``what``."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise InvalidId(f"{what} {value!r} must match {ID_PATTERN}")
    return value
