"""A simulated belt sorter PLC: a real pymodbus Modbus TCP server behind a fault proxy.

The PLC program is data plus a small state machine (:class:`SimulatedPlc`): parcels arrive
at the induction point at scenario times and are posted in the induction mailbox one at a
time; a divert command sends a parcel to a chute, where it arrives ``travel_s`` later and
is confirmed as diverted, missed (a jammed chute, or the scenario says so) or recirculated
(no command within ``decision_timeout_s``, or the scenario says so). A posting the host
does not acknowledge within ``ack_timeout_s`` is posted again with the same transaction,
as real PLCs do, and a parcel may be set to be inducted or confirmed twice.

The state is computed when the host reads or writes registers (the pymodbus ``SimDevice``
``action`` hook), so it is a function of the scenario, the time and what the host wrote.
The driver connects to :attr:`SorterSimulator.address`, a :class:`TcpFaultProxy` in front
of the server that injects the scenario's faults and can pull the cable.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Generic, Self, TypeVar

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from contracts import DivertBody, InductionBody
from firmware_bridge.checks import check_seconds
from firmware_bridge.sim.faults import NO_FAULTS, LineFaults
from firmware_bridge.sim.tcp_faults import TcpFaultProxy, modbus_tcp_corruptor
from firmware_bridge.sorter import registers as reg

T = TypeVar("T")


@dataclass(frozen=True)
class SimParcel:
    """One parcel of the scenario: when it reaches the induction point, and what happens."""

    at_s: float
    transaction: int
    barcode: str | None = None
    scan_slot: int | None = None
    outcome: reg.Outcome | None = None
    """What happens once commanded; None: diverted, or missed at a jammed chute."""
    repeat_induction: bool = False
    """The PLC posts this induction a second time after the host took it."""
    repeat_confirmation: bool = False

    def __post_init__(self) -> None:
        check_seconds("at_s", self.at_s)
        # The mailbox checks what the register map can carry (a barcode of 40 at most).
        reg.InductionMailbox(1, self.body)
        if self.outcome is not None and self.outcome not in reg.OUTCOME_CODES:
            raise ValueError(f"outcome must be one of {tuple(reg.OUTCOME_CODES)}")

    @property
    def body(self) -> InductionBody:
        return InductionBody(
            transaction=self.transaction, barcode=self.barcode, scan_slot=self.scan_slot
        )


@dataclass(frozen=True)
class SorterScenario:
    """The PLC's settings and the parcels it sees."""

    parcels: tuple[SimParcel, ...]
    unit: int = 1
    base_address: int = 0
    chutes: int = 24
    jammed_chutes: frozenset[int] = frozenset()
    travel_s: float = 0.5
    decision_timeout_s: float = 5.0
    ack_timeout_s: float = 2.0
    faults: LineFaults = field(default=NO_FAULTS)

    def __post_init__(self) -> None:
        if not all(isinstance(parcel, SimParcel) for parcel in self.parcels):
            raise TypeError("parcels must be SimParcel objects")
        transactions = [parcel.transaction for parcel in self.parcels]
        if len(set(transactions)) != len(transactions):
            raise ValueError("transactions must be unique in a scenario")
        if not 1 <= self.unit <= 247:
            raise ValueError(f"unit must be in 1..247, not {self.unit}")
        if not 0 <= self.base_address <= 0xFFFF - reg.MAP_SIZE:
            raise ValueError(f"base_address must leave room for {reg.MAP_SIZE} registers")
        if not 1 <= self.chutes <= 0xFFFF:
            raise ValueError("chutes must be in 1..65535")
        if not all(1 <= chute <= self.chutes for chute in self.jammed_chutes):
            raise ValueError(f"jammed chutes must be in 1..{self.chutes}")
        for name in ("travel_s", "decision_timeout_s", "ack_timeout_s"):
            check_seconds(name, getattr(self, name), positive=name == "ack_timeout_s")
        if not isinstance(self.faults, LineFaults):
            raise TypeError("faults must be LineFaults")


DEFAULT_SCENARIO = SorterScenario(
    parcels=(
        SimParcel(1.0, 100001, barcode="SF1000000001"),
        SimParcel(2.0, 100002, scan_slot=4),
        SimParcel(3.0, 100003, barcode="YT2000000003", repeat_induction=True),
        SimParcel(4.0, 100004, barcode="ZT3000000004", outcome="recirculated"),
        SimParcel(5.0, 100005, barcode="JD4000000005", repeat_confirmation=True),
    ),
    jammed_chutes=frozenset({13}),
)
"""Five parcels over five seconds: a scan slot, a repeat, a recirculation, chute 13 jammed."""


class _Outbox(Generic[T]):
    """A mailbox the PLC writes: items posted one at a time, each until the host takes it.

    An item not acknowledged within ``ack_timeout_s`` is posted again (a new seq, the same
    content), as PLCs do; one for which ``twice`` is true is posted again once after it
    was taken.
    """

    def __init__(
        self,
        offset: int,
        ack_offset: int,
        seal: Callable[[int, T], list[int]],
        ack_timeout_s: float,
        twice: Callable[[T], bool],
    ) -> None:
        self._offset, self._ack_offset, self._seal = offset, ack_offset, seal
        self._ack_timeout, self._twice = ack_timeout_s, twice
        self.queue: deque[tuple[T, bool]] = deque()
        self._showing: tuple[T, int, float, bool] | None = None  # item, seq, since, a repeat

    def step(self, image: list[int], now: float) -> T | None:
        """Advance to ``now``; the item posted just now, if any."""
        if self._showing is not None:
            item, seq, since, repeat = self._showing
            if image[self._ack_offset] == seq:
                self._showing = None
                if self._twice(item) and not repeat:
                    self.queue.appendleft((item, True))
            elif now - since >= self._ack_timeout:
                self._showing = None
                self.queue.appendleft((item, repeat))
        if self._showing is not None or not self.queue:
            return None
        item, repeat = self.queue.popleft()
        seq = reg.next_seq(image[self._offset])
        block = self._seal(seq, item)
        image[self._offset : self._offset + len(block)] = block
        self._showing = item, seq, now, repeat
        return item


class SimulatedPlc:
    """The PLC program: the register image (offsets from the base) and its state machine.

    Logs for tests: :attr:`inductions` and :attr:`confirmations` (every posting, repeats
    included), :attr:`commands` (every command the host wrote, with the result).
    """

    def __init__(self, scenario: SorterScenario) -> None:
        self.scenario = scenario
        self.image = [0] * reg.MAP_SIZE
        self._arrivals = deque(sorted(scenario.parcels, key=lambda parcel: parcel.at_s))
        twice = {p.transaction for p in scenario.parcels if p.repeat_confirmation}
        self._induction_box = _Outbox[SimParcel](
            reg.INDUCTION,
            reg.INDUCTION_ACK,
            lambda seq, parcel: reg.encode_induction(reg.InductionMailbox(seq, parcel.body)),
            scenario.ack_timeout_s,
            lambda parcel: parcel.repeat_induction,
        )
        self._confirmation_box = _Outbox[DivertBody](
            reg.CONFIRMATION,
            reg.CONFIRMATION_ACK,
            lambda seq, body: reg.encode_confirmation(reg.ConfirmationMailbox(seq, body)),
            scenario.ack_timeout_s,
            lambda body: body.transaction in twice,
        )
        self._awaiting: dict[int, tuple[SimParcel, float]] = {}
        self._travelling: dict[int, tuple[SimParcel, int, float]] = {}
        self._done: dict[int, int] = {}
        """Parcels past their chute, with the chute they were commanded to (0: none)."""
        self.inductions: list[InductionBody] = []
        self.confirmations: list[DivertBody] = []
        self.commands: list[tuple[reg.DivertCommand | None, reg.CommandResult]] = []

    def advance(self, now: float) -> None:
        """Run the program up to ``now`` (seconds since start)."""
        while self._arrivals and self._arrivals[0].at_s <= now:
            self._induction_box.queue.append((self._arrivals.popleft(), False))
        if (parcel := self._induction_box.step(self.image, now)) is not None:
            self.inductions.append(parcel.body)
            if parcel.transaction not in self._done | self._travelling.keys():
                self._awaiting.setdefault(parcel.transaction, (parcel, now))
        for transaction, (parcel, since) in list(self._awaiting.items()):
            if now - since >= self.scenario.decision_timeout_s:
                del self._awaiting[transaction]
                self._finish(parcel, 0, "recirculated")
        for transaction, (parcel, chute, due) in list(self._travelling.items()):
            if due <= now:
                del self._travelling[transaction]
                self._finish(parcel, chute, self._outcome(parcel, chute))
        if (body := self._confirmation_box.step(self.image, now)) is not None:
            self.confirmations.append(body)

    def host_wrote(self, offset: int, values: list[int], now: float) -> None:
        """The host wrote ``values`` at ``offset`` (pymodbus refused writes to PLC registers)."""
        self.image[offset : offset + len(values)] = values
        if offset < reg.COMMAND + reg.COMMAND_SIZE and offset + len(values) > reg.COMMAND:
            self._take_command(now)

    def _take_command(self, now: float) -> None:
        block = self.image[reg.COMMAND : reg.COMMAND + reg.COMMAND_SIZE]
        seq = block[0]
        if seq in (0, self.image[reg.COMMAND_STATUS]):
            return  # nothing written yet, or this command was processed already
        try:
            command = reg.decode_command(block)
        except reg.MailboxError:
            command, result = None, reg.CommandResult.BAD_CHECKSUM
        else:
            assert command is not None
            result = self._divert(command, now)
        self.commands.append((command, result))
        self._write(reg.COMMAND_STATUS, reg.encode_status(reg.CommandStatus(seq, result)))

    def _divert(self, command: reg.DivertCommand, now: float) -> reg.CommandResult:
        transaction, chute = command.transaction, command.chute
        if not 1 <= chute <= self.scenario.chutes:
            return reg.CommandResult.INVALID_CHUTE
        if transaction in self._awaiting:
            parcel, _ = self._awaiting.pop(transaction)
            self._travelling[transaction] = (parcel, chute, now + self.scenario.travel_s)
        elif transaction in self._travelling:
            parcel, _, due = self._travelling[transaction]
            self._travelling[transaction] = (parcel, chute, due)  # re-routed, or a repeat
        elif transaction in self._done:
            # The same command again (the host retrying after a lost answer) gets the same
            # answer; anything else comes too late.
            if self._done[transaction] != chute:
                return reg.CommandResult.TOO_LATE
        else:
            return reg.CommandResult.UNKNOWN_TRANSACTION
        return reg.CommandResult.ACCEPTED

    def _outcome(self, parcel: SimParcel, chute: int) -> reg.Outcome:
        if parcel.outcome is not None:
            return parcel.outcome
        return "missed" if chute in self.scenario.jammed_chutes else "diverted"

    def _finish(self, parcel: SimParcel, chute: int, outcome: reg.Outcome) -> None:
        self._done[parcel.transaction] = chute
        body = DivertBody(transaction=parcel.transaction, chute=chute, outcome=outcome)
        self._confirmation_box.queue.append((body, False))

    def _write(self, offset: int, values: list[int]) -> None:
        self.image[offset : offset + len(values)] = values


_BLOCKS = (
    (reg.INDUCTION, reg.INDUCTION_SIZE, True),
    (reg.INDUCTION_ACK, 1, False),
    (reg.CONFIRMATION, reg.CONFIRMATION_SIZE, True),
    (reg.CONFIRMATION_ACK, 1, False),
    (reg.COMMAND, reg.COMMAND_SIZE, False),
    (reg.COMMAND_STATUS, reg.COMMAND_STATUS_SIZE, True),
)
"""(offset, size, read-only): the host may write only its own registers, as a PLC map allows."""


class _Program:
    """pymodbus ``SimDevice.action``: runs the PLC on every access and serves its image."""

    def __init__(self, plc: SimulatedPlc, base: int, elapsed: Callable[[], float]) -> None:
        self._plc, self._base, self._elapsed = plc, base, elapsed

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        now = self._elapsed()
        if set_values is not None:
            self._plc.host_wrote(address - self._base, [int(v) for v in set_values], now)
        self._plc.advance(now)
        offset = self._base - start_address
        registers[offset : offset + reg.MAP_SIZE] = self._plc.image
        return None


def _device(scenario: SorterScenario, program: _Program) -> SimDevice:
    holding = [
        SimData(
            scenario.base_address + offset,
            count=size,
            values=0,
            datatype=DataType.REGISTERS,
            readonly=readonly,
        )
        for offset, size, readonly in _BLOCKS
    ]
    nothing = [SimData(0, datatype=DataType.INVALID)]
    no_bits = [SimData(0, values=False, datatype=DataType.BITS, readonly=True)]
    return SimDevice(
        scenario.unit, simdata=(no_bits, no_bits, holding, nothing), action=program.action
    )


class SorterSimulator:
    """Serves a :class:`SimulatedPlc` over Modbus TCP on 127.0.0.1; use with ``async with``.

    Drivers connect to :attr:`address` (the fault proxy); :meth:`unplug` and
    :meth:`replug` pull and restore the network cable. ``clock`` drives the scenario.
    """

    def __init__(
        self,
        scenario: SorterScenario = DEFAULT_SCENARIO,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scenario = scenario
        self.plc = SimulatedPlc(scenario)
        self._host, self._port = host, port
        self._clock = clock
        self._started_at = 0.0
        self._server: ModbusTcpServer | None = None
        self.proxy: TcpFaultProxy | None = None

    @property
    def address(self) -> tuple[str, int]:
        if self.proxy is None:
            raise RuntimeError("simulator not started")
        return self.proxy.address

    def elapsed(self) -> float:
        return self._clock() - self._started_at

    async def start(self) -> None:
        self._started_at = self._clock()
        program = _Program(self.plc, self.scenario.base_address, self.elapsed)
        server = ModbusTcpServer(_device(self.scenario, program), address=("127.0.0.1", 0))
        await server.serve_forever(background=True)
        self._server = server
        port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        faults = self.scenario.faults
        proxy = TcpFaultProxy(
            ("127.0.0.1", port),
            to_client=faults,
            corrupt=modbus_tcp_corruptor(faults.seed),
            host=self._host,
            port=self._port,
        )
        try:
            await proxy.start()
        except BaseException:
            await self._stop_server()
            raise
        self.proxy = proxy

    async def stop(self) -> None:
        proxy, self.proxy = self.proxy, None
        if proxy is not None:
            await proxy.stop()
        await self._stop_server()

    async def unplug(self) -> None:
        """Pull the network cable: connections reset, new ones refused."""
        if self.proxy is not None:
            await self.proxy.unplug()

    async def replug(self) -> None:
        if self.proxy is not None:
            await self.proxy.replug()

    async def _stop_server(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]  # untyped in 3.16
            await asyncio.sleep(0)  # let the closed connections' transports finish closing

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
