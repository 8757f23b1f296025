"""The pydantic settings every wire model shares.

Wire models are strict (no coercion: ``"5"`` is not ``5``), refuse unknown fields and
are frozen values. Top-level messages also carry ``schema`` under its wire name.
Models holding personal data keep input out of their validation errors.
"""

from __future__ import annotations

from pydantic import ConfigDict

BODY = ConfigDict(strict=True, extra="forbid", frozen=True)
"""A message body or a part of one."""

PERSONAL = ConfigDict(strict=True, extra="forbid", frozen=True, hide_input_in_errors=True)
"""A body holding personal data: validation errors never show the input."""

MESSAGE = ConfigDict(
    strict=True,
    extra="forbid",
    frozen=True,
    validate_by_alias=True,
    validate_by_name=True,
    serialize_by_alias=True,
)
"""A top-level message with a ``schema`` field (aliased ``schema_version`` in Python)."""
