"""Mosquitto's password and ACL file formats, written from Python.

The password hash is Mosquitto 2's ``$7$`` format: PBKDF2-HMAC-SHA512, 101 iterations,
a 12-byte salt and a 64-byte key, both base64. Writing it here spares the gateway host
a dependency on ``mosquitto_passwd``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
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


def password_matches(line: str, password: str) -> bool:
    """Whether a ``$7$`` password-file line (as :func:`password_line` writes) holds
    ``password``; lets a re-run keep the line, salt and all, instead of rewriting it."""
    _, _, hashed = line.strip().partition(":")
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except binascii.Error:
        return False
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]), dklen=64)
    return hmac.compare_digest(key, expected)


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


_DEVICE_WRITES = ("telemetry", "event", "status", "cmd/result")
_DEVICE_READS = ("cmd", "decision", "receipt")


GATEWAY_RULES = (AclRule("readwrite", "#"), AclRule("readwrite", "$share/#"))
"""The gateway user reads and writes everything, shared subscriptions included."""


def device_rules(station: str, device: str) -> list[AclRule]:
    """One device's rules with its registered station spelt out.

    Stricter than :func:`device_acl`'s patterns, which let a device publish as itself
    under any station: a ``user`` block from the registry pins the station too.
    """
    validate_id(station, "station id")
    validate_id(device, "device id")
    base = f"postedge/v1/{station}/{device}"
    return [
        *(AclRule("write", f"{base}/{channel}") for channel in _DEVICE_WRITES),
        *(AclRule("read", f"{base}/{channel}") for channel in _DEVICE_READS),
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
