"""Real-name records at rest: validated, encrypted, found by keyed hash, shown masked.

A sender's identity is personal data. :meth:`Keyring.protect` validates the document
number (:mod:`contracts.identity`), encrypts number and name with AES-256-GCM under the
current key, and computes a lookup hash, so the ledger stores a
:class:`ProtectedIdentity` and never the clear values. Only the audited reveal (issue 8)
calls :meth:`Keyring.reveal`.

Key file (mode 0600; also the value of ``POSTEDGE_PERSONAL_KEYS``, entries separated by
``;``)::

    # comments and blank lines are ignored
    k2:<base64 of 32 random bytes>      the first key line is the current encryption key
    k1:<base64 of 32 random bytes>      older keys stay, to decrypt older records
    lookup:<base64 of 32 random bytes>  the HMAC-SHA256 key of the lookup hashes

Rotation: put a new key line first and keep the old ones; new records name the new key
id, old records still decrypt. The lookup key is a line of its own, not derived from any
encryption key, so lookups stay equal across rotations; changing it would need every
stored lookup recomputed, which nothing here does.

The ciphertext's associated data binds it to its id type and key id: a record moved to
another type or relabelled with another key id fails to decrypt. Nothing here logs, and
no repr or error message shows a number, a name or key material.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, cast, get_args

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from contracts.events import IdentityRead, IdType
from contracts.identity import masked_resident_id, parse_document, parse_mobile
from gateway.errors import GatewayError

__all__ = [
    "ENV_VAR",
    "Keyring",
    "PersonalDataError",
    "ProtectedIdentity",
    "mask_name",
    "mask_number",
    "mask_phone",
]

log = logging.getLogger(__name__)

ENV_VAR: Final = "POSTEDGE_PERSONAL_KEYS"
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
LOOKUP_KEY_ID: Final = "lookup"
_KEY_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")
_AAD_PREFIX: Final = b"postedge/personal/v1"


class PersonalDataError(GatewayError):
    """Keys that cannot be loaded or a record that cannot be decrypted.

    Messages name files, lines and key ids, never key material or personal data.
    """


@dataclass(frozen=True)
class ProtectedIdentity:
    """A real-name record as stored: encrypted, with its lookup hash and masked forms."""

    id_type: str
    key_id: str
    nonce: bytes = field(repr=False)
    ciphertext: bytes = field(repr=False)
    lookup: str = field(repr=False)
    masked_number: str
    masked_name: str


class Keyring:
    """The encryption keys (the first is current) and the lookup key.

    Build it with :meth:`from_file`, :meth:`from_env` or :meth:`generate`; the
    constructor checks the keys and does no I/O. Thread-safe: it holds no mutable state.
    """

    __slots__ = ("_aead", "_current", "_keys", "_lookup_key")

    def __init__(self, keys: Sequence[tuple[str, bytes]], *, lookup_key: bytes) -> None:
        if not keys:
            raise PersonalDataError("no personal data encryption key")
        self._keys: dict[str, bytes] = {}
        for key_id, key in keys:
            _check_key(key_id, key, "encryption key")
            if key_id in self._keys:
                raise PersonalDataError(f"personal data key id {key_id!r} appears twice")
            self._keys[key_id] = key
        _check_key(LOOKUP_KEY_ID, lookup_key, "lookup key")
        self._current = keys[0][0]
        self._lookup_key = lookup_key
        self._aead = {key_id: AESGCM(key) for key_id, key in self._keys.items()}

    # --- construction -----------------------------------------------------------------

    @classmethod
    def from_file(cls, path: Path) -> Keyring:
        """Read a key file (format in the module docstring)."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PersonalDataError(f"personal data key file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PersonalDataError(
                f"cannot read personal data key file {path}: {type(exc).__name__}"
            ) from None
        if path.stat().st_mode & 0o077:
            log.warning("personal data key file %s is readable by others: chmod 600 it", path)
        return cls._parse(text.splitlines(), f"key file {path}", "line")

    @classmethod
    def from_env(cls, name: str = ENV_VAR) -> Keyring:
        """Read the keys from environment variable ``name`` (key file lines, ';'-separated)."""
        value = os.environ.get(name)
        if not value or not value.strip():
            raise PersonalDataError(f"environment variable {name} is not set")
        return cls._parse(value.split(";"), name, "entry")

    @classmethod
    def generate(cls, key_id: str = "k1") -> Keyring:
        """A keyring of fresh random keys, for tests and a first set-up (see :meth:`dump`)."""
        return cls([(key_id, AESGCM.generate_key(bit_length=256))], lookup_key=os.urandom(32))

    def rotated(self, key_id: str) -> Keyring:
        """This keyring with a fresh random key ``key_id`` in front as the current key."""
        fresh = (key_id, AESGCM.generate_key(bit_length=256))
        return Keyring([fresh, *self._keys.items()], lookup_key=self._lookup_key)

    def dump(self) -> str:
        """The key file text of this keyring: key material, for a 0600 file, never a log."""
        lines = [f"{key_id}:{base64.b64encode(key).decode()}" for key_id, key in self._keys.items()]
        lines.append(f"{LOOKUP_KEY_ID}:{base64.b64encode(self._lookup_key).decode()}")
        return "\n".join(lines) + "\n"

    @classmethod
    def _parse(cls, lines: Sequence[str], source: str, unit: str) -> Keyring:
        """Key lines from ``source``; errors name the source and the ``unit`` (line) number."""
        keys: list[tuple[str, bytes]] = []
        lookup_key: bytes | None = None
        for number, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{source}, {unit} {number}"
            key_id, key = _parse_key_line(line, where)
            if any(key_id == seen for seen, _ in keys):
                raise PersonalDataError(f"{where}: key id {key_id!r} appears twice")
            if key_id != LOOKUP_KEY_ID:
                keys.append((key_id, key))
            elif lookup_key is None:
                lookup_key = key
            else:
                raise PersonalDataError(f"{where}: a second lookup key")
        if not keys:
            raise PersonalDataError(f"{source}: no encryption key")
        if lookup_key is None:
            raise PersonalDataError(f"{source}: no {LOOKUP_KEY_ID}: line")
        keyring = cls(keys, lookup_key=lookup_key)
        log.info("personal data keys loaded: %d, current %s", len(keys), keyring.current_key_id)
        return keyring

    # --- use --------------------------------------------------------------------------

    @property
    def current_key_id(self) -> str:
        """The id of the key that encrypts new records."""
        return self._current

    @property
    def key_ids(self) -> tuple[str, ...]:
        """All encryption key ids, current first."""
        return tuple(self._keys)

    def protect(self, identity: IdentityRead) -> ProtectedIdentity:
        """Validate, encrypt and mask ``identity``; raises ``InvalidIdentity`` for a bad number."""
        number = parse_document(identity.id_type, identity.id_number)
        plaintext = json.dumps(
            {"m": identity.name, "n": number}, ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")
        nonce = os.urandom(NONCE_BYTES)
        aad = _aad(identity.id_type, self._current)
        ciphertext = self._aead[self._current].encrypt(nonce, plaintext, aad)
        return ProtectedIdentity(
            id_type=identity.id_type,
            key_id=self._current,
            nonce=nonce,
            ciphertext=ciphertext,
            lookup=self._lookup(identity.id_type, number),
            masked_number=mask_number(identity.id_type, number),
            masked_name=mask_name(identity.name),
        )

    def lookup(self, id_type: str, number: str) -> str:
        """The lookup hash :meth:`protect` stores for this document (number canonicalised)."""
        return self._lookup(id_type, parse_document(_id_type(id_type), number))

    def reveal(self, protected: ProtectedIdentity) -> tuple[str, str]:
        """Decrypt a record: ``(name, number)``. For the audited reveal only."""
        aead = self._aead.get(protected.key_id)
        if aead is None:
            raise PersonalDataError(f"no personal data key with id {protected.key_id!r}")
        if len(protected.nonce) != NONCE_BYTES:
            raise PersonalDataError("personal data record has a malformed nonce")
        try:
            plaintext = aead.decrypt(
                protected.nonce, protected.ciphertext, _aad(protected.id_type, protected.key_id)
            )
        except InvalidTag:
            raise PersonalDataError(
                "personal data record does not authenticate (tampered, or another type or key)"
            ) from None
        return _unpack(plaintext)

    def _lookup(self, id_type: str, number: str) -> str:
        message = f"{id_type}:{number}".encode()
        return hmac.new(self._lookup_key, message, hashlib.sha256).hexdigest()

    def __repr__(self) -> str:
        return f"Keyring(current={self._current!r}, keys={list(self._keys)!r})"


def _parse_key_line(line: str, where: str) -> tuple[str, bytes]:
    """One ``key_id:base64`` line; the error names ``where``, never the line's content."""
    key_id, sep, encoded = line.partition(":")
    key_id = key_id.strip()
    if not sep or not _KEY_ID_RE.fullmatch(key_id):
        raise PersonalDataError(f"{where}: expected key_id:base64-key")
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise PersonalDataError(f"{where}: key is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise PersonalDataError(f"{where}: key {key_id!r} has {len(key)} bytes, needs {KEY_BYTES}")
    return key_id, key


def _check_key(key_id: str, key: bytes, what: str) -> None:
    if not _KEY_ID_RE.fullmatch(key_id):
        raise PersonalDataError(f"personal data {what} id is not 1-32 of A-Z a-z 0-9 _ -")
    if what == "encryption key" and key_id == LOOKUP_KEY_ID:
        raise PersonalDataError(f"{LOOKUP_KEY_ID!r} names the lookup key, not an encryption key")
    if len(key) != KEY_BYTES:
        raise PersonalDataError(
            f"personal data {what} {key_id!r} has {len(key)} bytes, needs {KEY_BYTES}"
        )


def _aad(id_type: str, key_id: str) -> bytes:
    return b"\x00".join((_AAD_PREFIX, id_type.encode(), key_id.encode()))


def _unpack(plaintext: bytes) -> tuple[str, str]:
    try:
        record = json.loads(plaintext.decode("utf-8"))
        name, number = record["m"], record["n"]
    except (UnicodeDecodeError, ValueError, TypeError, KeyError):
        raise PersonalDataError("personal data record has a malformed plaintext") from None
    if not isinstance(name, str) or not isinstance(number, str):
        raise PersonalDataError("personal data record has a malformed plaintext")
    return name, number


_ID_TYPES: Final = frozenset(get_args(IdType))


def _id_type(id_type: str) -> IdType:
    if id_type not in _ID_TYPES:
        raise PersonalDataError(f"unknown id type {id_type!r}")
    return cast(IdType, id_type)


# --- masking ----------------------------------------------------------------------------


def mask_number(id_type: str, number: str) -> str:
    """A document number for display.

    Resident IDs keep their first 4 and last 4 characters (1101**********002X); other
    documents their first 2 and last 2 (E1*****78), or only the first and last one when
    shorter than 8, so at least half of a number is always hidden.
    """
    if id_type == "resident":
        return masked_resident_id(number)
    keep = 2 if len(number) >= 8 else 1
    if len(number) <= 2 * keep:
        return "*" * len(number)
    return f"{number[:keep]}{'*' * (len(number) - 2 * keep)}{number[-keep:]}"


def mask_name(name: str) -> str:
    """A name for display: its first character, then a star per remaining one (张*).

    A one-character name shows only a star: its first character would be all of it.
    """
    if len(name) <= 1:
        return "*" * len(name)
    return name[0] + "*" * (len(name) - 1)


def mask_phone(phone: str) -> str:
    """A mainland mobile number for display (138****8000); raises ``InvalidIdentity``."""
    digits = parse_mobile(phone)
    return f"{digits[:3]}****{digits[-4:]}"
