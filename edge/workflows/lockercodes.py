"""A locker's pickup codes, kept on the edge box so that pickups work offline, and the
keypad that checks typed codes against them.

The gateway sends the locker the full list of its open codes (:class:`PickupCodes`), each
as a salted PBKDF2 hash; the locker never sees a code in clear until a recipient types
it. :class:`CodeCache` holds the newest list and writes it to one file (atomically,
mode 0600, hashes only), so a locker restarted with the link down still has it.

A code used here is dropped at once and remembered as *used* until a list from the
gateway no longer holds it: a list made before the gateway heard of the pickup (the
pickup was published later, from the outbox) must not bring the code back.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts import PickupCode, PickupCodes
from contracts.events import Waybill
from contracts.station import pickup_code_hash

log = logging.getLogger(__name__)

Slot = tuple[int, int]
"""(board, lock)."""

_Used = tuple[Waybill, str]
"""(waybill, code_hash) of a code used here."""


class _CodeFile(BaseModel):
    """The cache file: hashes and slots only, never a code in clear."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    version: int = Field(default=0, ge=0)
    codes: list[PickupCode] = Field(default_factory=list)
    used: list[_Used] = Field(default_factory=list)


def _key(entry: PickupCode) -> _Used:
    return entry.waybill, entry.code_hash


class CodeCache:
    """The newest code list the gateway sent, persisted at ``path``.

    Nothing is read until :meth:`load` (or the first use); every change is written
    before the method returns, on the calling thread: lists arrive once per deposit or
    pickup, and the outbox commits each event the same way.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.version = 0
        self.write_failures = 0
        self._codes: tuple[PickupCode, ...] = ()
        self._used: set[_Used] = set()
        self._loaded = False

    def load(self) -> None:
        """Read the file once; a missing file is an empty list, a damaged one too (logged)."""
        if self._loaded:
            return
        self._loaded = True
        try:
            saved = _CodeFile.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValidationError) as exc:
            # Not fatal: the gateway sends the list again with the next deposit or pickup.
            log.error(
                "pickup codes %s unreadable (%s); starting empty", self.path, type(exc).__name__
            )
            return
        self.version = saved.version
        self._codes = tuple(saved.codes)
        self._used = set(saved.used)

    def entries(self) -> tuple[PickupCode, ...]:
        self.load()
        return self._codes

    def slots(self) -> set[Slot]:
        """Slots holding a parcel that waits for its code: never free for a deposit."""
        return {(entry.board, entry.lock) for entry in self.entries()}

    def holds(self, entry: PickupCode) -> bool:
        return entry in self.entries()

    def replace(self, codes: PickupCodes) -> bool:
        """Take ``codes`` if newer than the list held; False if it was not (a resend or late)."""
        self.load()
        if codes.version <= self.version:
            return False
        offered = {_key(entry) for entry in codes.codes}
        self._used &= offered  # a code the gateway dropped needs no remembering
        self.version = codes.version
        self._codes = tuple(entry for entry in codes.codes if _key(entry) not in self._used)
        self._save()
        return True

    def consume(self, entry: PickupCode) -> None:
        """The parcel behind ``entry`` was taken: the code is spent."""
        self.load()
        self._codes = tuple(held for held in self._codes if held != entry)
        self._used.add(_key(entry))
        self._save()

    def _save(self) -> None:
        content = _CodeFile(version=self.version, codes=list(self._codes), used=sorted(self._used))
        try:
            write_private(self.path, content.model_dump_json().encode())
        except OSError as exc:
            # The list in memory still serves; a restart offline would lack it.
            self.write_failures += 1
            log.error("pickup codes %s not saved: %s", self.path, exc)


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a leftover temporary file may have had other bits
        with os.fdopen(fd, "wb", closefd=False) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@dataclass(frozen=True)
class CodeMatch:
    """What a typed code matched: an entry, and whether that entry has expired."""

    entry: PickupCode | None
    expired: bool = False


def match_code(code: str, entries: Sequence[PickupCode], now: datetime) -> CodeMatch:
    """Check ``code`` against every entry (one PBKDF2 each: run it off the event loop).

    Every entry is hashed and compared in constant time, so how long a check takes says
    nothing about which entry, if any, matched.
    """
    if not (code.isascii() and code.isdigit()):
        return CodeMatch(None)
    found: PickupCode | None = None
    for entry in entries:
        if hmac.compare_digest(pickup_code_hash(code, entry.salt), entry.code_hash):
            found = found or entry
    if found is None:
        return CodeMatch(None)
    return CodeMatch(found, expired=found.expires is not None and found.expires <= now)


KeypadRefusal = Literal["invalid_code", "expired", "locked_out"]

_MAX_CODE_LENGTH = 16


class Keypad:
    """Checks typed codes against ``cache`` (off the event loop: PBKDF2 per entry), and
    locks itself for ``lockout_s`` after ``max_wrong`` wrong codes in ``window_s``.

    Six digits are a million codes: the lockout turns guessing from minutes into years.
    A right code clears the count (a spent code cannot be used again to reset it).
    ``clock`` is monotonic seconds; ``wall_clock`` the UTC time expiry is checked against.
    """

    def __init__(
        self,
        cache: CodeCache,
        *,
        max_wrong: int,
        window_s: float,
        lockout_s: float,
        clock: Callable[[], float],
        wall_clock: Callable[[], datetime],
    ) -> None:
        self._cache = cache
        self._max = max_wrong
        self._window = window_s
        self._lockout = lockout_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._wrong: deque[float] = deque()
        self._until: float | None = None
        self.wrong_codes = 0
        self.expired_codes = 0
        self.locked_out = 0
        """Codes refused unchecked while locked."""
        self.lockouts = 0

    async def check(self, code: str) -> PickupCode | KeypadRefusal:
        """The held entry ``code`` opens, or why it opens nothing."""
        if self._locked():
            self.locked_out += 1
            return "locked_out"
        typed = code if len(code) <= _MAX_CODE_LENGTH else ""  # bounds the hashing
        entries = self._cache.entries()
        match = await asyncio.to_thread(match_code, typed, entries, self._wall_clock())
        if match.entry is None or not self._cache.holds(match.entry):  # the list changed?
            self.wrong_codes += 1
            self._count_wrong()
            return "invalid_code"
        if match.expired:
            self.expired_codes += 1
            return "expired"
        self._wrong.clear()
        return match.entry

    def _locked(self) -> bool:
        if self._until is None:
            return False
        if self._clock() < self._until:
            return True
        self._until = None
        return False

    def _count_wrong(self) -> None:
        now = self._clock()
        self._wrong.append(now)
        while self._wrong and self._wrong[0] <= now - self._window:
            self._wrong.popleft()
        if len(self._wrong) >= self._max:
            self._wrong.clear()
            self._until = now + self._lockout
            self.lockouts += 1
            log.warning(
                "pickup keypad locked for %g s after %d wrong codes", self._lockout, self._max
            )
