"""Mosquitto's password and ACL file formats, written from Python.

The password hash is Mosquitto 2's ``$7$`` format: PBKDF2-HMAC-SHA512, 101 iterations,
a 12-byte salt and a 64-byte key, both base64. Writing it here spares the gateway host
a dependency on ``mosquitto_passwd``.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from contracts import validate_id

_ITERATIONS = 101


def password_line(username: str, password: str, *, salt: bytes | None = None) -> str:
    """One line of a Mosquitto password file for ``username``."""
    if ":" in username or "\n" in username or not username:
        raise ValueError("a Mosquitto username may not be empty or contain ':' or a newline")
    salt = os.urandom(12) if salt is None else salt
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ITERATIONS, dklen=64)
    encoded_salt = base64.b64encode(salt).decode()
    encoded_key = base64.b64encode(key).decode()
    return f"{username}:$7${_ITERATIONS}${encoded_salt}${encoded_key}"


@dataclass(frozen=True)
class AclRule:
    """``topic read|write|readwrite FILTER`` for one user, or for every user as a pattern."""

    access: str
    topic: str

    def __post_init__(self) -> None:
        if self.access not in ("read", "write", "readwrite", "deny"):
            raise ValueError(f"unknown ACL access {self.access!r}")


def device_acl() -> list[str]:
    """Pattern lines that confine every device (username = device id) to its own topics.

    A device may publish only under ``postedge/v1/+/{device}/...`` and read only its own
    ``cmd``, ``decision`` and ``receipt`` topics.
    """
    return [
        "pattern write postedge/v1/+/%u/telemetry",
        "pattern write postedge/v1/+/%u/event",
        "pattern write postedge/v1/+/%u/status",
        "pattern write postedge/v1/+/%u/cmd/result",
        "pattern read postedge/v1/+/%u/cmd",
        "pattern read postedge/v1/+/%u/decision",
        "pattern read postedge/v1/+/%u/receipt",
    ]


def acl_text(users: Mapping[str, Iterable[AclRule]], *, patterns: Iterable[str] = ()) -> str:
    """The text of a Mosquitto ACL file: per-user rules, then patterns for everyone."""
    lines: list[str] = []
    for username, rules in users.items():
        validate_id(username, "MQTT username")
        lines.append(f"user {username}")
        lines.extend(f"topic {rule.access} {rule.topic}" for rule in rules)
        lines.append("")
    lines.extend(patterns)
    return "\n".join(lines) + "\n"
