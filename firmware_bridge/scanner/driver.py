"""A serial barcode scanner: lines in, :class:`contracts.ScanBody` out.

:class:`SerialScanner` reads its :class:`~firmware_bridge.serial_link.SerialLink` in a
background task from ``async with`` on, so a line is taken off the wire as it arrives
(and its timing is known), whether or not anyone is waiting for a scan yet. Scans queue
until :meth:`SerialScanner.next_scan` or :meth:`SerialScanner.scans` takes them.

Scanner lines carry no checksum, so the driver adds the checks a line protocol allows:
the codec's (printable ASCII, length, AIM identifier), a gap rule (a partial line that
sat idle longer than ``line_gap_s`` is dropped rather than glued to the next one), and
the scanners' own "same code delay" against a line sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from contracts import ScanBody, validate_id
from firmware_bridge.codec import Decoded, FrameStream
from firmware_bridge.errors import (
    BridgeError,
    DeviceTimeout,
    DeviceUnavailable,
)
from firmware_bridge.faultlog import FaultLog
from firmware_bridge.scanner.codec import MAX_CODE_LENGTH, ScanLine, ScannerCodec, SuffixName
from firmware_bridge.serial_link import SerialLink

log = logging.getLogger(__name__)

HONEYWELL_TRIGGER = b"\x16T\r"
"""SYN T CR: Honeywell's serial trigger command; ``SYN U CR`` stops the scan."""
HONEYWELL_STOP = b"\x16U\r"


@dataclass
class ScannerStats:
    """What the driver saw, for health reports; every fault counter only ever grows."""

    scans: int = 0
    """Good lines turned into scans."""
    skipped: int = 0
    """Lines dropped by the codec: noise, a damaged byte, too long, no AIM identifier."""
    incomplete: int = 0
    """Partial lines dropped: idle past ``line_gap_s``, or cut by an unplug."""
    duplicates: int = 0
    """The same code again within ``same_code_s``."""
    stale: int = 0
    """Scans waiting when :meth:`SerialScanner.trigger` was called, dropped."""
    timeouts: int = 0
    """Triggers the scanner did not answer in time."""
    overflow: int = 0
    """Scans dropped because nobody took them and ``max_pending`` were waiting."""
    reconnects: int = 0
    """Times the port came back after it was gone."""


class SerialScanner:
    """One scanner on a serial line; use with ``async with``. The constructor does no I/O.

    The caller owns ``link`` (opens and closes it); the scanner only reads and writes it.
    ``trigger``/``stop`` are the host commands of a triggered scanner (see
    :data:`HONEYWELL_TRIGGER`); without ``trigger``, :meth:`trigger` is not available.
    ``clock`` (monotonic seconds) times the gap and same-code rules, so tests can set it.
    ``decode`` is a vendor variant's codec (see ``docs/devices/scanner.md``); without it,
    ``suffix``, ``aim`` and ``max_length`` describe the standard line format.
    """

    def __init__(
        self,
        link: SerialLink,
        *,
        reader: str,
        suffix: SuffixName = "CR",
        aim: bool = True,
        max_length: int = MAX_CODE_LENGTH,
        trigger: bytes | None = None,
        stop: bytes | None = None,
        same_code_s: float = 0.2,
        line_gap_s: float = 0.5,
        max_pending: int = 100,
        clock: Callable[[], float] = time.monotonic,
        decode: Callable[[bytes], Decoded[ScanLine]] | None = None,
    ) -> None:
        self.reader = validate_id(reader, "reader")
        codec = ScannerCodec(suffix, aim, max_length)
        for name, command in (("trigger", trigger), ("stop", stop)):
            if command is not None and (not isinstance(command, bytes) or not command):
                raise ValueError(f"{name} must be non-empty bytes or None")
        if stop is not None and trigger is None:
            raise ValueError("a stop command needs a trigger command")
        if not same_code_s >= 0 or not line_gap_s > 0:
            raise ValueError("need same_code_s >= 0 and line_gap_s > 0")
        if not 1 <= max_pending <= 100_000:
            raise ValueError("max_pending must be in 1..100000")
        self.stats = ScannerStats()
        self._link = link
        self._trigger = trigger
        self._stop = stop
        self._same_code_s = same_code_s
        self._line_gap_s = line_gap_s
        self._max_pending = max_pending
        self._clock = clock
        self._faults = FaultLog(log, f"scanner {reader} on {link.path}")
        self._stream = FrameStream(decode or codec.decode)
        self._queue: deque[ScanBody] = deque()
        self._ready = asyncio.Event()
        self._trigger_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._last_data = 0.0
        self._last_scan: tuple[ScanBody, float] | None = None
        self._overflowing = False

    async def __aenter__(self) -> Self:
        self._task = asyncio.get_running_loop().create_task(self._read_forever())
        self._task.add_done_callback(lambda _: self._ready.set())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def next_scan(self, timeout: float | None = None) -> ScanBody:
        """The oldest waiting scan, waiting up to ``timeout`` seconds (None: forever).

        Raises :class:`DeviceTimeout` when none came, or :class:`DeviceUnavailable` if
        the port was gone when the wait ended. An idle scanner is not a fault: nothing is
        counted or logged here.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._queue:
            self._check_running()
            self._ready.clear()
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                await asyncio.wait_for(self._ready.wait(), remaining)
            except TimeoutError:
                if not self._link.is_open:
                    raise DeviceUnavailable(f"{self._link.path} is not connected") from None
                raise DeviceTimeout(f"scanner {self.reader}: no scan in {timeout:g} s") from None
        scan = self._queue.popleft()
        if not self._queue:
            self._overflowing = False
        return scan

    async def scans(self) -> AsyncIterator[ScanBody]:
        """Every scan, as it comes, for as long as the scanner is open."""
        while True:
            yield await self.next_scan()

    async def trigger(self, timeout: float = 3.0) -> ScanBody:
        """Ask a triggered scanner to read now; the first scan after the command.

        Scans already waiting belong to an earlier parcel (or are a late answer to an
        earlier trigger), so they are dropped and counted as ``stale`` rather than
        returned for this one. On :class:`DeviceTimeout` the stop command is sent, so the
        scanner does not read the next parcel's label for this request.
        """
        if self._trigger is None:
            raise ValueError(f"scanner {self.reader} has no trigger command configured")
        async with self._trigger_lock:
            self._drop_stale()
            await self._link.write(self._trigger)
            try:
                return await self.next_scan(timeout)
            except DeviceTimeout:
                self.stats.timeouts += 1
                self._faults.fault("timeout", f"no scan within {timeout:g} s of the trigger")
                await self._send_stop()
                raise

    def _drop_stale(self) -> None:
        if self._queue:
            self.stats.stale += len(self._queue)
            self._faults.fault("stale", "scans waiting before a trigger dropped as stale")
            self._queue.clear()

    async def _send_stop(self) -> None:
        if self._stop is not None:
            with contextlib.suppress(BridgeError):  # best effort: the timeout is what matters
                await self._link.write(self._stop)

    def _check_running(self) -> None:
        task = self._task
        if task is None:
            raise RuntimeError("scanner not started: use 'async with'")
        if task.done() and not task.cancelled() and (error := task.exception()) is not None:
            raise BridgeError(f"scanner {self.reader}: reader stopped: {error!r}") from error

    async def _read_forever(self) -> None:
        while True:
            try:
                data = await self._link.read(1.0)
            except DeviceTimeout:
                continue
            except DeviceUnavailable:
                await self._wait_for_port()
                continue
            self._feed(data, self._clock())

    async def _wait_for_port(self) -> None:
        # SerialLink logs the loss and the return; here, only the partial line matters.
        self._drop_partial("partial line dropped: the port went away")
        while not await self._link.wait_open(1.0):
            pass
        self.stats.reconnects += 1

    def _drop_partial(self, message: str) -> None:
        if self._stream.pending:
            self._stream.clear()
            self.stats.incomplete += 1
            self._faults.fault("incomplete", message)

    def _feed(self, data: bytes, now: float) -> None:
        if now - self._last_data > self._line_gap_s:
            self._drop_partial(f"partial line idle over {self._line_gap_s:g} s dropped")
        self._last_data = now
        for result in self._stream.feed(data):
            if result.frame is None:
                self.stats.skipped += 1
                self._faults.fault("skipped", f"line skipped: {result.error}")
            else:
                self._accept(result.frame, now)

    def _accept(self, line: ScanLine, now: float) -> None:
        scan = ScanBody(reader=self.reader, code=line.code, symbology=line.symbology)
        previous, self._last_scan = self._last_scan, (scan, now)
        if previous is not None and previous[0] == scan and now - previous[1] < self._same_code_s:
            self.stats.duplicates += 1
            self._faults.fault("duplicate", f"same code again within {self._same_code_s:g} s")
            return
        self.stats.scans += 1
        if self._faults.good():
            log.debug("%s: good frames again", self._faults.where)
        if len(self._queue) >= self._max_pending:
            self._queue.popleft()
            self.stats.overflow += 1
            if not self._overflowing:  # until the queue drains: a good scan does not end this
                self._overflowing = True
                log.warning(
                    "scanner %s: over %d scans waiting, oldest lost", self.reader, self._max_pending
                )
        self._queue.append(scan)
        self._ready.set()
