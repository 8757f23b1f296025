"""An in-process TCP proxy between a driver and a simulator, with line faults and a cable to pull.

What a :class:`~firmware_bridge.nullmodem.PtyNullModem` is for serial devices, this is for
networked ones::

    driver ── proxy.address ══ relay (faults) ══ target ── simulator

Each chunk read from one side is a "frame" for :class:`~firmware_bridge.sim.faults.LineFaults`
(a Modbus TCP answer or a text line usually arrives as one chunk): it may be dropped,
corrupted, preceded by garbage, sent twice or sent late. :meth:`TcpFaultProxy.unplug` is a
pulled network cable: open connections are reset and new ones refused until
:meth:`TcpFaultProxy.replug`, which listens again on the same port. What "corrupt" means
depends on the protocol: :func:`modbus_tcp_corruptor` damages Modbus TCP answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import Self

from firmware_bridge.sim.faults import NO_FAULTS, FaultInjector, LineFaults, flip_last_bit

log = logging.getLogger(__name__)

_CHUNK = 4096


class Flow(enum.Enum):
    """Which way bytes travel through the proxy."""

    TO_CLIENT = "to_client"
    """From the simulator (server) towards the driver: answers, records."""
    TO_SERVER = "to_server"
    """From the driver towards the simulator: requests, acknowledgements."""


Trace = Callable[[Flow, bytes], None]


class TcpFaultProxy:
    """Relays TCP connections to ``target`` with faults; use with ``async with``.

    Faults are drawn from one seeded generator per direction that lives as long as the
    proxy, so a run is repeatable across reconnections. ``corrupt`` says what damage means
    for the protocol (default: flip a bit of the last byte).
    """

    def __init__(
        self,
        target: tuple[str, int],
        *,
        to_client: LineFaults = NO_FAULTS,
        to_server: LineFaults = NO_FAULTS,
        corrupt: Callable[[bytes], bytes] = flip_last_bit,
        host: str = "127.0.0.1",
        port: int = 0,
        trace: Trace | None = None,
    ) -> None:
        self.target = target
        self.trace = trace
        self._injectors = {
            Flow.TO_CLIENT: FaultInjector(to_client, corrupt=corrupt),
            Flow.TO_SERVER: FaultInjector(to_server, corrupt=corrupt),
        }
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0
        """Connections accepted and relayed since start."""
        self.unplugged = False

    @property
    def address(self) -> tuple[str, int]:
        """Where drivers connect: the port stays the same across unplug and replug."""
        if self._port == 0:
            raise RuntimeError("proxy not started")
        return self._host, self._port

    @property
    def injected(self) -> Counter[str]:
        """Faults injected so far, both directions together."""
        total: Counter[str] = Counter()
        for injector in self._injectors.values():
            total.update(injector.injected)
        return total

    def injected_towards(self, flow: Flow) -> Counter[str]:
        return self._injectors[flow].injected

    async def start(self) -> None:
        await self._listen()

    async def stop(self) -> None:
        await self._close_all()

    async def unplug(self) -> None:
        """Pull the cable: reset every connection and refuse new ones."""
        await self._close_all()
        self.unplugged = True
        log.info("proxy %s:%d unplugged", *self.address)

    async def replug(self) -> None:
        """Plug the cable back in: listen again on the same port."""
        await self._listen()
        self.unplugged = False
        log.info("proxy %s:%d replugged", *self.address)

    async def _listen(self) -> None:
        server = await asyncio.start_server(self._relay, self._host, self._port, reuse_address=True)
        self._port = server.sockets[0].getsockname()[1]
        self._server = server

    async def _close_all(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, as a peer sees a vanished host
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            await self._relay_to_target(reader, writer)
        finally:
            self._writers.discard(writer)
            await _close(writer)
            self._handlers.discard(task)

    async def _relay_to_target(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection(*self.target)
        except OSError as exc:
            log.info("proxy: target %s:%d refused: %s", *self.target, exc)
            return
        self._writers.add(target_writer)
        self.connections += 1
        pumps = [
            asyncio.create_task(self._pump(reader, target_writer, Flow.TO_SERVER)),
            asyncio.create_task(self._pump(target_reader, writer, Flow.TO_CLIENT)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._writers.discard(target_writer)
            await _close(target_writer)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flow: Flow
    ) -> None:
        async def write(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        injector = self._injectors[flow]
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(_CHUNK):
                if self.trace is not None:
                    self.trace(flow, chunk)
                await injector.send(chunk, write)

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


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


def modbus_tcp_corruptor(seed: int) -> Callable[[bytes], bytes]:
    """Damage as a line fault would: one bit of register data in a read answer.

    The MBAP header is left alone (Modbus TCP has no checksum; TCP guards it), so the
    damage lands where the map's CRCs must catch it. Other answers get their last bit
    flipped.
    """
    rng = random.Random(seed)
    data_start = 9  # MBAP header (7), function code, byte count

    def corrupt(frame: bytes) -> bytes:
        if len(frame) <= data_start or frame[7] != 3:
            return frame[:-1] + bytes([frame[-1] ^ 0x01]) if frame else frame
        index = rng.randrange(data_start, len(frame))
        damaged = bytearray(frame)
        damaged[index] ^= 1 << rng.randrange(8)
        return bytes(damaged)

    return corrupt
