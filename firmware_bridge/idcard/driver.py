"""The ID-card reader driver: one request, one validated :class:`contracts.IdentityRead`.

What the reader sends is personal data. Nothing here logs it or puts it in an exception:
messages name the fault ("bad checksum", "fields fail validation: id_number") and never
a name, number or issuing authority, whatever the reader sent.

Each read carries a sequence number the answer must echo, so a late or repeated answer
to an earlier read (another person's card, perhaps) is never taken for this one.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import NoReturn, Self

from contracts import IdentityRead, validate_id
from firmware_bridge.codec import Decoded, FrameStream
from firmware_bridge.errors import (
    BridgeError,
    DeviceProtocolError,
    DeviceTimeout,
    DeviceUnavailable,
)
from firmware_bridge.faultlog import FaultLog
from firmware_bridge.idcard.codec import (
    BAD_CHECKSUM,
    CardRecord,
    IdFrame,
    NoCard,
    ReaderFault,
    ReadRequest,
    decode,
    encode,
    identity_from,
)
from firmware_bridge.serial_link import SerialLink

log = logging.getLogger(__name__)


@dataclass
class IdCardStats:
    """What the driver saw, for health reports; counters only ever grow."""

    cards: int = 0
    no_card: int = 0
    skipped: int = 0
    """Bytes skipped, each run once: noise, failed frames, payloads that make no sense."""
    bad_checksum: int = 0
    """Of those, frames failing their length, CRC or ETX check."""
    invalid: int = 0
    """Card records whose fields fail validation."""
    reader_errors: int = 0
    stale: int = 0
    """Answers to an earlier read (late, or sent twice), ignored."""
    timeouts: int = 0
    garbled: int = 0
    """Reads that got bytes but no valid answer in time."""
    unavailable: int = 0


@dataclass(frozen=True)
class _Answer:
    """The reader's answer to the current read: a result or the error to raise."""

    identity: IdentityRead | None = None
    error: BridgeError | None = None


class IdCardReader:
    """An ID-card reader (or vendor-SDK adapter) on a serial line; use with ``async with``.

    The caller owns ``link``. A read is tried ``1 + retries`` times when the answer is
    lost or garbled; an error the reader reports, or a record that fails validation, is
    raised at once. The constructor does no I/O.
    """

    def __init__(self, link: SerialLink, *, reader: str = "idcard", retries: int = 1) -> None:
        self.reader = validate_id(reader, "reader")
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
            raise ValueError("retries must be an int in 0..10")
        self.stats = IdCardStats()
        self._link = link
        self._retries = retries
        self._faults = FaultLog(log, f"ID-card reader {reader} on {link.path}")
        self._stream: FrameStream[IdFrame] = FrameStream(decode)
        self._lock = asyncio.Lock()
        self._seq = 0
        self._open = False

    async def __aenter__(self) -> Self:
        self._open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._open = False

    async def read_card(self, timeout: float = 1.0) -> IdentityRead | None:
        """The card on the reader, or None if there is none; ``timeout`` is per try.

        Raises :class:`DeviceTimeout` (no answer), :class:`DeviceProtocolError` (garbled
        answers, a reader error, an invalid record) or :class:`DeviceUnavailable`.
        """
        if not self._open:
            raise RuntimeError("ID-card reader not started: use 'async with'")
        async with self._lock:
            for attempt in range(self._retries + 1):
                try:
                    return await self._read_once(timeout)
                except (DeviceTimeout, _Garbled):
                    if attempt == self._retries:
                        raise
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _read_once(self, timeout: float) -> IdentityRead | None:
        if not self._link.is_open and not await self._link.wait_open(timeout):
            self._unavailable()
        await self._drain_leftovers()
        self._seq = (self._seq + 1) & 0xFF
        try:
            await self._link.write(encode(ReadRequest(self._seq)))
            answer = await self._await_answer(self._seq, timeout)
        except DeviceUnavailable:
            self._unavailable()
        if answer.error is not None:
            raise answer.error
        if self._faults.good():
            log.debug("%s: good frames again", self._faults.where)
        return answer.identity

    def _unavailable(self) -> NoReturn:
        self._stream.clear()
        self.stats.unavailable += 1
        self._faults.fault("unavailable", "port not connected")
        raise DeviceUnavailable(f"ID-card reader {self.reader}: {self._link.path} not connected")

    async def _drain_leftovers(self) -> None:
        """Count what arrived after the last answer (a repeat, a late one), then start clean."""
        try:
            data = await self._link.read(0)
        except (DeviceTimeout, DeviceUnavailable):
            data = b""
        for result in self._stream.feed(data):
            self._classify(result, None)
        self._stream.clear()

    async def _await_answer(self, seq: int, timeout: float) -> _Answer:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        skipped = self.stats.skipped
        while True:
            try:
                data = await self._link.read(max(0.0, deadline - loop.time()))
            except DeviceTimeout:
                # Garbled if bytes came that were no frame; a stale answer alone is silence.
                garbled = self.stats.skipped > skipped or self._stream.pending > 0
                raise self._no_answer(timeout, garbled) from None
            answer: _Answer | None = None
            for result in self._stream.feed(data):
                # Frames after the answer in the same chunk are counted too (a repeat).
                if answer is None:
                    answer = self._classify(result, seq)
                else:
                    self._classify(result, None)
            if answer is not None:
                return answer

    def _classify(self, result: Decoded[IdFrame], seq: int | None) -> _Answer | None:
        """Count one decoded result; the answer if it answers read ``seq``."""
        frame = result.frame
        if frame is None:
            self._skip(result.error or "bytes skipped")
            return None
        if isinstance(frame, ReadRequest) or frame.seq != seq:
            self.stats.stale += 1
            self._faults.fault("stale", "answer to an earlier read ignored")
            return None
        if isinstance(frame, NoCard):
            self.stats.no_card += 1
            return _Answer()
        if isinstance(frame, ReaderFault):
            return self._reader_fault(frame)
        return self._card(frame)

    def _skip(self, error: str) -> None:
        # One log line per burst, with its first reason: a damaged frame is skipped as
        # a bad STX and then as noise, which is one fault, not two. The codec's reasons
        # never quote payload bytes, so they are safe to log.
        self.stats.skipped += 1
        if error.startswith(BAD_CHECKSUM):
            self.stats.bad_checksum += 1
        self._faults.fault("garbled", f"ID-card answer garbled: {error}")

    def _reader_fault(self, frame: ReaderFault) -> _Answer:
        self.stats.reader_errors += 1
        message = f"reader reports error {frame.code} ({frame.meaning})"
        self._faults.fault("reader_error", message)
        return _Answer(error=DeviceProtocolError(f"ID-card reader {self.reader}: {message}"))

    def _card(self, frame: CardRecord) -> _Answer:
        try:
            identity = identity_from(frame)
        except ValueError as exc:
            self.stats.invalid += 1
            self._faults.fault("invalid", str(exc))
            return _Answer(error=DeviceProtocolError(f"ID-card reader {self.reader}: {exc}"))
        self.stats.cards += 1
        return _Answer(identity=identity)

    def _no_answer(self, timeout: float, garbled: bool) -> BridgeError:
        self._stream.clear()  # a partial answer's rest would come after the next request
        if garbled:
            self.stats.garbled += 1
            self._faults.fault("garbled", "ID-card answer garbled: incomplete frame")
            return _Garbled(
                f"ID-card reader {self.reader}: no valid answer in {timeout:g} s "
                "(bad checksum or garbled frame)"
            )
        self.stats.timeouts += 1
        self._faults.fault("timeout", f"no answer within {timeout:g} s")
        return DeviceTimeout(f"ID-card reader {self.reader}: no answer within {timeout:g} s")


class _Garbled(DeviceProtocolError):
    """Bytes came but no valid answer: worth a retry, unlike an error the reader reports."""
