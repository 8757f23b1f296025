"""A simulated X-ray security machine: a TCP server streaming ``XR1`` records, with faults.

Records are data (:class:`SimRecord`: when the parcel is screened and what the operator
decided); the machine stamps each with its wall clock and the next sequence number of its
boot, keeps it until the host acknowledges it, and sends it again after ``ack_timeout_s``
or on the next connection: at-least-once delivery, as the real machines do. It sends a
heartbeat on connect and whenever it has been quiet for ``heartbeat_s``.

Line faults (:class:`LineFaults`) apply to every frame the machine sends; a corrupted
frame fails its CRC. The driver connects to :attr:`XraySimulator.address`, a
:class:`TcpFaultProxy` in front of the machine, so :meth:`XraySimulator.unplug` pulls the
network cable; :meth:`XraySimulator.reboot` restarts the machine (a new boot number).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Literal, Self

from contracts import XrayBody, utc_now
from firmware_bridge.checks import check_seconds
from firmware_bridge.codec import FrameStream
from firmware_bridge.sim.faults import NO_FAULTS, FaultInjector, LineFaults
from firmware_bridge.sim.tcp_faults import TcpFaultProxy
from firmware_bridge.xray.codec import Ack, Heartbeat, XrayFrame, XrayRecord, decode, encode

Verdict = Literal["PASS", "SUSPECT", "FAIL"]
_EXAMPLE_TIME = datetime(2026, 11, 25, tzinfo=UTC)


@dataclass(frozen=True)
class SimRecord:
    """One parcel through the machine, ``at_s`` seconds after start."""

    at_s: float
    waybill: str
    verdict: Verdict
    operator: str
    image: str

    def __post_init__(self) -> None:
        check_seconds("at_s", self.at_s)
        XrayRecord(1, 1, self.body(_EXAMPLE_TIME))  # checks every field, and no '|' in image

    def body(self, scanned_at: datetime) -> XrayBody:
        return XrayBody(
            waybill=self.waybill,
            verdict=self.verdict,
            operator=self.operator,
            image=self.image,
            scanned_at=scanned_at,
        )


@dataclass(frozen=True)
class XrayScenario:
    """The machine's settings and the parcels it screens."""

    records: tuple[SimRecord, ...]
    boot: int | None = None
    """The first boot number; None: taken from the wall clock at start, as firmware often does."""
    heartbeat_s: float = 5.0
    ack_timeout_s: float = 2.0
    faults: LineFaults = field(default=NO_FAULTS)

    def __post_init__(self) -> None:
        if not all(isinstance(record, SimRecord) for record in self.records):
            raise TypeError("records must be SimRecord objects")
        if self.boot is not None:
            Heartbeat(self.boot)  # checks the range
        for name in ("heartbeat_s", "ack_timeout_s"):
            check_seconds(name, getattr(self, name), positive=True)
        if not isinstance(self.faults, LineFaults):
            raise TypeError("faults must be LineFaults")


DEFAULT_SCENARIO = XrayScenario(
    records=(
        SimRecord(1.0, "SF1000000001", "PASS", "op-01", "xray/SF1000000001.png"),
        SimRecord(2.5, "YT2000000002", "PASS", "op-01", "xray/YT2000000002.png"),
        SimRecord(4.0, "ZT3000000003", "SUSPECT", "op-01", "xray/ZT3000000003.png"),
        SimRecord(5.5, "JD4000000004", "PASS", "op-02", "xray/JD4000000004.png"),
        SimRecord(7.0, "EMS500000005", "FAIL", "op-02", "xray/EMS500000005.png"),
    )
)
"""Five parcels over seven seconds: three passes, one suspect, one fail."""


def corrupt_line(frame: bytes) -> bytes:
    """Damage a frame so its CRC fails: one bit of the boot number's first digit (stays a digit)."""
    return frame[:4] + bytes([frame[4] ^ 0x01]) + frame[5:] if len(frame) > 4 else frame


class XraySimulator:
    """One simulated machine on 127.0.0.1; use with ``async with``.

    :attr:`produced` lists every record the machine made, in order; :attr:`acked` the
    ``(boot, seq)`` the host acknowledged. One host at a time: a new connection replaces
    the old one, as on the real machines.
    """

    def __init__(
        self,
        scenario: XrayScenario = DEFAULT_SCENARIO,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.scenario = scenario
        self._host, self._port = host, port
        self._clock, self._wall_clock = clock, wall_clock
        self._injector = FaultInjector(scenario.faults, corrupt=corrupt_line)
        self.boot = 0
        self._next_seq = 1
        self._outbox: OrderedDict[int, tuple[XrayBody, float | None]] = OrderedDict()
        self._wake = asyncio.Event()
        self._started_at = 0.0
        self._server: asyncio.Server | None = None
        self._producer: asyncio.Task[None] | None = None
        self._session: tuple[asyncio.Task[None], asyncio.StreamWriter] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.proxy: TcpFaultProxy | None = None
        self.produced: list[XrayBody] = []
        self.acked: set[tuple[int, int]] = set()
        self.connections = 0

    @property
    def address(self) -> tuple[str, int]:
        if self.proxy is None:
            raise RuntimeError("simulator not started")
        return self.proxy.address

    @property
    def injected(self) -> dict[str, int]:
        """Line faults injected so far, by kind."""
        return dict(self._injector.injected)

    @property
    def unacknowledged(self) -> int:
        return len(self._outbox)

    def elapsed(self) -> float:
        return self._clock() - self._started_at

    async def start(self) -> None:
        boot = self.scenario.boot
        self.boot = int(self._wall_clock().timestamp()) & 0xFFFFFFFF if boot is None else boot
        self._started_at = self._clock()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        target = self._server.sockets[0].getsockname()[:2]
        self.proxy = TcpFaultProxy(target, host=self._host, port=self._port)
        await self.proxy.start()
        self._producer = asyncio.create_task(self._produce())

    async def stop(self) -> None:
        if self._producer is not None:
            self._producer.cancel()
            await asyncio.gather(self._producer, return_exceptions=True)
            self._producer = None
        if self.proxy is not None:
            await self.proxy.stop()
            self.proxy = None
        await self._end_session()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def unplug(self) -> None:
        """Pull the network cable: the host's connection resets, new ones are refused."""
        if self.proxy is not None:
            await self.proxy.unplug()

    async def replug(self) -> None:
        if self.proxy is not None:
            await self.proxy.replug()

    async def reboot(self) -> None:
        """Restart the machine: a new boot, sequence numbers from 1, unsent records kept."""
        await self._end_session()
        self.boot = (self.boot + 1) & 0xFFFFFFFF
        bodies = [body for body, _ in self._outbox.values()]
        self._outbox = OrderedDict((seq, (body, None)) for seq, body in enumerate(bodies, 1))
        self._next_seq = len(bodies) + 1

    async def write_raw(self, data: bytes) -> None:
        """Send bytes as they are to the connected host (for tests of odd lines)."""
        if self._session is not None:
            writer = self._session[1]
            writer.write(data)
            await writer.drain()

    def post(self, record: SimRecord) -> int:
        """Screen a parcel now (the scenario does this at ``at_s``); its seq."""
        body = record.body(self._wall_clock())
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        self.produced.append(body)
        self._outbox[seq] = (body, None)
        self._wake.set()
        return seq

    async def _produce(self) -> None:
        for record in sorted(self.scenario.records, key=lambda record: record.at_s):
            delay = record.at_s - self.elapsed()
            if delay > 0:
                await asyncio.sleep(delay)  # the scenario's timing, not synchronisation
            self.post(record)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            await self._serve_host(reader, writer)
        finally:
            self._handlers.discard(handler)

    async def _serve_host(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._end_session()  # one host at a time: the newest wins
        self.connections += 1
        for seq, (body, _) in self._outbox.items():
            self._outbox[seq] = (body, None)  # a new connection gets every unacknowledged record
        sender = asyncio.create_task(self._send_loop(writer))
        self._session = (sender, writer)
        try:
            await self._read_acks(reader)
        except (ConnectionError, OSError):
            pass
        finally:
            if self._session is not None and self._session[0] is sender:
                await self._end_session()

    async def _end_session(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        sender, writer = session
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()

    async def _read_acks(self, reader: asyncio.StreamReader) -> None:
        stream = FrameStream(decode)
        while data := await reader.read(4096):
            for result in stream.feed(data):
                frame = result.frame
                if not isinstance(frame, Ack) or frame.boot != self.boot:
                    continue  # an ack from before a reboot names another record
                if self._outbox.pop(frame.seq, None) is not None:
                    self.acked.add((frame.boot, frame.seq))

    async def _send_loop(self, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        await self._send(writer, Heartbeat(self.boot))
        last_sent = loop.time()
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                self._wake.clear()
                for seq in self._due(loop.time()):
                    if (entry := self._outbox.get(seq)) is not None:
                        await self._send(writer, XrayRecord(self.boot, seq, entry[0]))
                        self._outbox[seq] = (entry[0], loop.time())
                        last_sent = loop.time()
                if loop.time() - last_sent >= self.scenario.heartbeat_s:
                    await self._send(writer, Heartbeat(self.boot))
                    last_sent = loop.time()
                wait = self._next_wake(loop.time(), last_sent)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)

    def _due(self, now: float) -> list[int]:
        timeout = self.scenario.ack_timeout_s
        return [
            seq
            for seq, (_, sent_at) in self._outbox.items()
            if sent_at is None or now - sent_at >= timeout
        ]

    def _next_wake(self, now: float, last_sent: float) -> float:
        times = [last_sent + self.scenario.heartbeat_s]
        times += [sent + self.scenario.ack_timeout_s for _, sent in self._outbox.values() if sent]
        return max(0.0, min(times) - now)

    async def _send(self, writer: asyncio.StreamWriter, frame: XrayFrame) -> None:
        async def write(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        await self._injector.send(encode(frame), write)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
