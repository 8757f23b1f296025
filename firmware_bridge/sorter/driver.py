"""The belt sorter PLC over Modbus TCP: inductions in, divert commands out, confirmations in.

:class:`SorterPlc` polls the PLC's mailboxes (``registers.py``) and yields
:class:`contracts.InductionBody` and :class:`contracts.DivertBody` from :meth:`SorterPlc.events`;
:meth:`SorterPlc.divert` writes a divert command and waits for the PLC to take it.

PLCs repeat themselves: one that got no acknowledgement in time posts the same transaction
again, and a parcel may be scanned twice. Handling is idempotent: an induction is yielded
once per transaction, a confirmation once per (transaction, chute, outcome), and a divert
the PLC has already accepted for the same transaction and chute is not sent again; each
within a bounded window of recent transactions. Everything pymodbus raises becomes a
:mod:`firmware_bridge.errors` error; a stream that went wrong (a timeout, a garbled answer)
is dropped and reconnected, because Modbus TCP cannot resynchronise a byte stream otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from types import TracebackType
from typing import Self, TypeVar

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from contracts import DivertBody, InductionBody
from firmware_bridge.errors import (
    BridgeError,
    DeviceProtocolError,
    DeviceTimeout,
    DeviceUnavailable,
    map_exceptions,
)
from firmware_bridge.faultlog import COUNTED_IN_STATS, FaultLog, RecentKeys
from firmware_bridge.sorter import registers as reg

log = logging.getLogger(__name__)

SorterEvent = InductionBody | DivertBody
Trace = Callable[[bool, bytes], None]
"""Called as ``trace(sending, data)`` with every Modbus TCP frame sent and the bytes received."""
_T = TypeVar("_T")


class DivertRejected(DeviceProtocolError):
    """The PLC refused a divert command (unknown transaction, too late, invalid chute)."""

    def __init__(self, message: str, result: reg.CommandResult) -> None:
        super().__init__(message)
        self.result = result


class SorterPlc:
    """One sorter PLC over Modbus TCP; use with ``async with``. The constructor does no I/O.

    ``stats`` counts: ``inductions``, ``confirmations``, ``duplicates`` (repeated
    transactions not yielded again), ``repeated_commands`` (diverts not re-sent),
    ``bad_checksum`` and ``invalid`` (mailboxes not used), ``timeouts``,
    ``protocol_errors``, ``unexpected_bytes`` (a repeated or late answer, noise: ignored),
    ``disconnects``, ``connect_failures`` and ``reconnects``. Each
    fault kind is logged once when it starts, and again only after the PLC answered well.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        unit: int = 1,
        base_address: int = 0,
        poll_interval_s: float = 0.05,
        timeout_s: float = 1.0,
        command_timeout_s: float = 2.0,
        command_attempts: int = 3,
        reconnect_initial_s: float = 0.1,
        reconnect_max_s: float = 5.0,
        window: int = 1024,
        trace: Trace | None = None,
    ) -> None:
        if not 1 <= unit <= 247:
            raise ValueError(f"unit must be in 1..247, not {unit}")
        if not 0 <= base_address <= 0xFFFF - reg.MAP_SIZE:
            raise ValueError(f"base_address must leave room for {reg.MAP_SIZE} registers")
        if min(poll_interval_s, timeout_s, command_timeout_s, reconnect_initial_s) <= 0:
            raise ValueError("intervals and timeouts must be positive")
        if reconnect_max_s < reconnect_initial_s or command_attempts < 1 or window < 1:
            raise ValueError("need reconnect_max_s >= reconnect_initial_s; attempts, window >= 1")
        self.host, self.port, self.unit = host, port, unit
        self._base = base_address
        self._poll = poll_interval_s
        self._timeout = timeout_s
        self._command_timeout = command_timeout_s
        self._attempts = command_attempts
        self._backoff = (reconnect_initial_s, reconnect_max_s)
        # refresh: a transaction the PLC keeps re-posting stays remembered however long.
        self._seen = {box.kind: RecentKeys[Hashable](window, refresh=True) for box in reg.MAILBOXES}
        self._accepted: OrderedDict[int, int] = OrderedDict()
        self._window = window
        self._client: AsyncModbusTcpClient | None = None
        self._io = asyncio.Lock()
        self._command = asyncio.Lock()
        self._faults = FaultLog(log, self.where, note=COUNTED_IN_STATS)
        self._down = False
        self._connected_once = False
        self.stats: Counter[str] = self._faults.counts
        self.trace = trace
        self._sent_tid = b""
        self._answered = True

    @property
    def where(self) -> str:
        return f"sorter PLC {self.host}:{self.port} unit {self.unit}"

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
        async with self._io:
            self._drop_connection()

    async def events(self) -> AsyncIterator[SorterEvent]:
        """Inductions and confirmations as the PLC posts them, each once; runs until cancelled.

        A mailbox is acknowledged after its event was taken (when the caller asks for the
        next one), so a consumer that stores events before asking loses none.
        """
        delay = self._backoff[0]
        while True:
            try:
                values = await self._read(reg.INDUCTION, reg.EVENTS_SIZE)
            except DeviceUnavailable:
                await asyncio.sleep(delay)
                delay = min(2 * delay, self._backoff[1])
                continue
            except BridgeError:
                await asyncio.sleep(self._poll)
                continue
            delay = self._backoff[0]
            acks: list[tuple[int, int]] = []
            for event, ack in self._take_events(values):
                if event is not None:
                    yield event
                acks.append(ack)
            for address, seq in acks:
                try:
                    await self._write(address, [seq])
                except BridgeError:
                    break  # unacknowledged: seen again on the next poll, and deduplicated
            await asyncio.sleep(self._poll)

    async def divert(self, transaction: int, chute: int) -> None:
        """Tell the PLC where parcel ``transaction`` goes; returns once the PLC accepted it.

        Repeating an accepted divert is a no-op. Transient faults are retried
        (``command_attempts`` in all), which is safe because the PLC treats a repeated
        command for the same transaction and chute as the same command. Raises
        :class:`DivertRejected` if the PLC refuses it, else a :class:`BridgeError`.
        """
        command = reg.DivertCommand(1, transaction, chute)  # validates the arguments
        async with self._command:
            if self._accepted.get(transaction) == chute:
                self.stats["repeated_commands"] += 1
                return
            error: BridgeError | None = None
            for _ in range(self._attempts):
                try:
                    await self._send_command(command.transaction, command.chute)
                except DivertRejected:
                    raise
                except BridgeError as exc:
                    error = exc
                    continue
                self._remember_accepted(transaction, chute)
                return
            assert error is not None
            raise error

    async def _send_command(self, transaction: int, chute: int) -> None:
        block = await self._read(reg.COMMAND, reg.COMMAND_SIZE + reg.COMMAND_STATUS_SIZE)
        last = self._decode(reg.decode_command, block[: reg.COMMAND_SIZE])
        seq = reg.next_seq(last.seq if last is not None else 0)
        command = reg.DivertCommand(seq, transaction, chute)
        await self._write(reg.COMMAND, reg.encode_command(command))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._command_timeout
        while True:
            raw = await self._read(reg.COMMAND_STATUS, reg.COMMAND_STATUS_SIZE)
            status = self._decode(reg.decode_status, raw)
            if status.ack == seq:
                break
            if loop.time() > deadline:
                self._faults.fault(
                    "timeouts", f"took no divert command in {self._command_timeout} s"
                )
                raise DeviceTimeout(f"{self.where}: divert command {seq} not taken in time")
            await asyncio.sleep(self._poll)
        if status.result is reg.CommandResult.BAD_CHECKSUM:
            self._faults.fault("protocol_errors", "received a divert command with a bad CRC")
            raise DeviceProtocolError(f"{self.where}: the PLC saw a bad CRC in command {seq}")
        if status.result is not reg.CommandResult.ACCEPTED:
            raise DivertRejected(
                f"{self.where}: divert of transaction {transaction} to chute {chute} "
                f"rejected: {status.result.name.lower().replace('_', ' ')}",
                status.result,
            )

    def _remember_accepted(self, transaction: int, chute: int) -> None:
        self._accepted[transaction] = chute
        self._accepted.move_to_end(transaction)
        if len(self._accepted) > self._window:
            self._accepted.popitem(last=False)

    def _take_events(self, values: Sequence[int]) -> list[tuple[SorterEvent | None, _Ack]]:
        """New postings in one poll: each with its event (None: a repeat or unusable) and ack."""
        found: list[tuple[SorterEvent | None, _Ack]] = []
        faults = sum(self.stats[kind] for kind in _MAILBOX_FAULTS)
        for box in reg.MAILBOXES:
            body, ack = self._posting(box, values)
            if ack is None:
                continue
            event = None
            if body is not None:
                self.stats[f"{box.kind}s"] += 1
                event = self._once(self._seen[box.kind], _key(body), body)
            found.append((event, ack))
        if faults == sum(self.stats[kind] for kind in _MAILBOX_FAULTS):
            self._faults.good(*_MAILBOX_FAULTS)
        return found

    def _posting(
        self, box: reg.MailboxLayout, values: Sequence[int]
    ) -> tuple[SorterEvent | None, _Ack | None]:
        """A mailbox's new posting and the ack that takes it; (None, None) if nothing new."""
        block = values[box.start : box.start + box.size]
        seq = block[0]
        if seq in (0, values[box.ack_at]):
            return None, None  # empty, or taken already
        try:
            mailbox = box.decode(block)
        except reg.MailboxError as exc:
            self._faults.fault(exc.kind, f"mailbox not used: {exc}")
            if exc.kind == "bad_checksum":
                return None, None  # most likely read while the PLC was writing it: read again
            return None, (box.ack_at, seq)  # never usable: take it, or the PLC would stall
        return (mailbox.body if mailbox is not None else None), (box.ack_at, seq)

    def _once(
        self, window: RecentKeys[Hashable], key: Hashable, body: SorterEvent
    ) -> SorterEvent | None:
        if window.add(key):
            self._faults.good("duplicates")
            return body
        # PLCs repeat transactions by design (a late ack, a second scan): not a warning.
        message = f"repeated transaction {body.transaction} not yielded again"
        self._faults.fault("duplicates", message, level=logging.INFO)
        return None

    def _decode(self, decode: Callable[[Sequence[int]], _T], values: Sequence[int]) -> _T:
        try:
            return decode(values)
        except reg.MailboxError as exc:
            self._faults.fault(exc.kind, f"block not used: {exc}")
            raise DeviceProtocolError(f"{self.where}: {exc}") from None

    # --- Modbus I/O: every request goes through _request ---------------------------------

    async def _read(self, offset: int, count: int) -> list[int]:
        address = self._base + offset
        response = await self._request(
            lambda client: client.read_holding_registers(address, count=count, device_id=self.unit),
            f"reading {count} registers at {address}",
        )
        registers = list(response.registers)
        if len(registers) != count:
            self._faults.fault(
                "protocol_errors", f"asked for {count} registers, got {len(registers)}"
            )
            raise DeviceProtocolError(f"{self.where}: asked for {count} registers")
        return registers

    async def _write(self, offset: int, values: list[int]) -> None:
        # Always function 16, even for one register: the block arrives in one piece.
        address = self._base + offset
        response = await self._request(
            lambda client: client.write_registers(address, values, device_id=self.unit),
            f"writing {len(values)} registers at {address}",
        )
        if (response.address, response.count) != (address, len(values)):
            self._faults.fault("protocol_errors", "write answer does not echo the request")
            raise DeviceProtocolError(f"{self.where}: write answer does not echo the request")

    async def _request(
        self, call: Callable[[AsyncModbusTcpClient], Awaitable[ModbusPDU]], what: str
    ) -> ModbusPDU:
        async with self._io:
            client = await self._connected()
            try:
                response = await self._execute(client, call, what)
            except DeviceUnavailable as exc:
                self._drop_connection()
                self._lost(str(exc))
                raise
            except BridgeError:
                self._drop_connection()  # a stream out of step is resynchronised by reconnecting
                raise
        self._faults.good(*_LINK_FAULTS)
        return response

    async def _execute(
        self,
        client: AsyncModbusTcpClient,
        call: Callable[[AsyncModbusTcpClient], Awaitable[ModbusPDU]],
        what: str,
    ) -> ModbusPDU:
        with map_exceptions(
            {ConnectionException: DeviceUnavailable, ModbusException: DeviceProtocolError}
        ):
            try:
                response = await call(client)
            except ModbusIOException:
                if not client.connected:
                    raise DeviceUnavailable(f"{self.where}: connection lost {what}") from None
                self._faults.fault("timeouts", f"no valid answer within {self._timeout} s")
                raise DeviceTimeout(f"{self.where}: no valid answer {what}") from None
        if response.isError():
            self._faults.fault("protocol_errors", f"exception response {response.exception_code}")
            raise DeviceProtocolError(
                f"{self.where}: exception response {response.exception_code} {what}"
            )
        return response

    async def _connected(self) -> AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        self._drop_connection()
        client = AsyncModbusTcpClient(
            self.host,
            port=self.port,
            timeout=self._timeout,
            retries=0,  # a retry on a stream out of step only reads the stale answer
            reconnect_delay=0,  # reconnecting is ours, with our backoff and logging
            name=self.where,
            trace_packet=self._on_packet,
        )
        if not await client.connect():
            client.close()
            self.stats["connect_failures"] += 1
            self._lost("cannot connect")
            raise DeviceUnavailable(f"{self.where}: cannot connect")
        self._client = client
        if self._down:
            self._down = False
            if self._connected_once:
                self.stats["reconnects"] += 1
            log.info("%s: connected", self.where)
        self._connected_once = True
        return client

    def _on_packet(self, sending: bool, data: bytes) -> bytes:
        """Watch the MBAP transaction ids: pymodbus drops a stale answer without a word."""
        if self.trace is not None:
            self.trace(sending, data)
        if sending:
            self._sent_tid, self._answered = data[:2], False
            return data
        # ``data`` is all that is buffered, so a repeat sent with the answer is seen here too.
        size = 6 + int.from_bytes(data[4:6], "big") if len(data) >= 6 else len(data) + 1
        if data[:2] != self._sent_tid[: len(data)] or self._answered or len(data) > size:
            self._faults.fault("unexpected_bytes", "ignored bytes that answer no request in flight")
        self._answered = self._answered or len(data) >= size
        return data

    def _drop_connection(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _lost(self, reason: str) -> None:
        if self._down:
            return
        self._down = True
        self.stats["disconnects"] += 1
        log.warning("%s unavailable (%s); reconnecting with backoff", self.where, reason)


_Ack = tuple[int, int]
"""(register offset, seq): the write that takes a mailbox's posting."""


def _key(body: SorterEvent) -> Hashable:
    """What makes a posting a repeat: the transaction, and for a confirmation its result too."""
    if isinstance(body, InductionBody):
        return body.transaction
    return body.transaction, body.chute, body.outcome


_MAILBOX_FAULTS = ("bad_checksum", "invalid")
_LINK_FAULTS = ("timeouts", "protocol_errors", "unexpected_bytes")
