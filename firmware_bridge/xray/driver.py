"""The X-ray security machine over TCP: one :class:`contracts.XrayBody` per screened parcel.

The machine is the TCP server and streams ``XR1`` records (``codec.py``); the host
acknowledges each one, and the machine sends again whatever was not acknowledged, after
a timeout or a reconnection. Delivery is therefore at least once, and :class:`XrayMachine`
makes it exactly once for its caller by remembering the recent records it has yielded. A
record is acknowledged only when the caller asks for the next one, so a caller that
stores each record before asking for more loses none.

Lines that are garbage, cut short, fail their CRC or hold an invalid field are skipped,
counted and logged (once per kind until a good frame arrives), never yielded. A machine
that sends nothing, not even its heartbeat, for ``silence_timeout_s`` is taken for a
half-open connection (a cable pulled at the far end) and reconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from types import TracebackType
from typing import Self

from contracts import XrayBody
from firmware_bridge.codec import FrameStream
from firmware_bridge.errors import BridgeError, DeviceTimeout, DeviceUnavailable
from firmware_bridge.faultlog import COUNTED_IN_STATS, FaultLog, RecentKeys
from firmware_bridge.xray.codec import FAULT_KINDS, Ack, Heartbeat, XrayRecord, decode, encode

log = logging.getLogger(__name__)

Trace = Callable[[bool, bytes], None]
"""Called as ``trace(sending, data)`` for every chunk written (True) or read (False)."""

_CHUNK = 4096


class XrayMachine:
    """One X-ray machine; use with ``async with``. The constructor does no I/O.

    ``stats`` counts ``records`` (yielded), ``duplicates`` (re-sends not yielded again),
    ``heartbeats``, the skip kinds of :data:`~firmware_bridge.xray.codec.FAULT_KINDS`,
    ``timeouts`` (silences), ``disconnects``, ``connect_failures``, ``reconnects`` and
    ``reboots`` (a new boot number).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout_s: float = 3.0,
        silence_timeout_s: float = 15.0,
        reconnect_initial_s: float = 0.1,
        reconnect_max_s: float = 5.0,
        window: int = 1024,
        trace: Trace | None = None,
    ) -> None:
        if min(connect_timeout_s, silence_timeout_s, reconnect_initial_s) <= 0:
            raise ValueError("timeouts and reconnect_initial_s must be positive")
        if reconnect_max_s < reconnect_initial_s or window < 1:
            raise ValueError("need reconnect_max_s >= reconnect_initial_s and window >= 1")
        self.host, self.port = host, port
        self.trace = trace
        self._connect_timeout = connect_timeout_s
        self._silence = silence_timeout_s
        self._backoff = (reconnect_initial_s, reconnect_max_s)
        # The recent records yielded, by content, not ``(boot, seq)``: a machine that
        # restarts keeps its unacknowledged records and numbers them afresh, and a re-send
        # is otherwise byte for byte the same record. Two different parcels never share a
        # waybill and a millisecond.
        self._seen: RecentKeys[XrayBody] = RecentKeys(window)
        self.boot: int | None = None
        """The machine's boot number, once a frame has told it."""
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._down = False
        self._connected_once = False
        self._faults = FaultLog(log, self.where, note=COUNTED_IN_STATS)
        self.stats: Counter[str] = self._faults.counts

    @property
    def where(self) -> str:
        return f"X-ray machine {self.host}:{self.port}"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def records(self) -> AsyncIterator[XrayBody]:
        """Each screened parcel once, as the machine sends it; runs until cancelled."""
        delay = self._backoff[0]
        while True:
            try:
                await self._connect()
            except DeviceUnavailable:
                await asyncio.sleep(delay)
                delay = min(2 * delay, self._backoff[1])
                continue
            delay = self._backoff[0]
            try:
                async with contextlib.aclosing(self._session()) as session:
                    async for body in session:
                        yield body
            except BridgeError:
                pass  # counted and logged where it happened; reconnect
            await self.close()

    async def _session(self) -> AsyncGenerator[XrayBody, None]:
        stream = FrameStream(decode, max_buffer=16 * 1024)
        while True:
            data = await self._read()
            for result in stream.feed(data):
                frame = result.frame
                if frame is None:
                    self._skipped(result.error or "malformed: no reason given")
                    continue
                self._faults.good(*FAULT_KINDS)
                if isinstance(frame, Ack):
                    continue  # our own kind of frame echoed back: harmless, nothing to do
                self._boot_is(frame.boot)
                if isinstance(frame, Heartbeat):
                    self.stats["heartbeats"] += 1
                    continue
                if self._seen.add(frame.body):
                    self.stats["records"] += 1
                    self._faults.good("duplicates")
                    yield frame.body
                else:
                    # Expected with at-least-once delivery, so not a warning.
                    self._faults.fault(
                        "duplicates", "re-sent record not yielded again", level=logging.INFO
                    )
                await self._acknowledge(frame)

    async def _acknowledge(self, record: XrayRecord) -> None:
        await self._send(encode(Ack(record.boot, record.seq)))

    def _boot_is(self, boot: int) -> None:
        if boot == self.boot:
            return
        if self.boot is not None:
            self.stats["reboots"] += 1
            log.info("%s restarted (boot %d, was %d)", self.where, boot, self.boot)
        self.boot = boot

    async def _connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self._connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
            self.stats["connect_failures"] += 1
            self._lost(f"cannot connect: {reason}")
            raise DeviceUnavailable(f"{self.where}: cannot connect: {reason}") from None
        if self._down:
            self._down = False
            if self._connected_once:
                self.stats["reconnects"] += 1
            log.info("%s: connected", self.where)
        self._connected_once = True

    async def _read(self) -> bytes:
        assert self._reader is not None
        try:
            data = await asyncio.wait_for(self._reader.read(_CHUNK), self._silence)
        except TimeoutError:
            self._faults.fault(
                "timeouts", f"silent for {self._silence} s, not even a heartbeat: reconnecting"
            )
            raise DeviceTimeout(f"{self.where}: silent for {self._silence} s") from None
        except (ConnectionError, OSError) as exc:
            self._lost(f"connection lost: {exc}")
            raise DeviceUnavailable(f"{self.where}: connection lost") from None
        if not data:
            self._lost("the machine closed the connection")
            raise DeviceUnavailable(f"{self.where}: connection closed")
        self._faults.good("timeouts")
        if self.trace is not None:
            self.trace(False, data)
        return data

    async def _send(self, data: bytes) -> None:
        assert self._writer is not None
        if self.trace is not None:
            self.trace(True, data)
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            self._lost(f"connection lost: {exc}")
            raise DeviceUnavailable(f"{self.where}: connection lost") from None

    def _skipped(self, error: str) -> None:
        kind = error.split(":", 1)[0]
        self._faults.fault(kind if kind in FAULT_KINDS else "malformed", f"skipped {error}")

    def _lost(self, reason: str) -> None:
        if self._down:
            return
        self._down = True
        self.stats["disconnects"] += 1
        log.warning("%s unavailable (%s); reconnecting with backoff", self.where, reason)
