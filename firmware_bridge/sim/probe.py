"""Simulated Modbus RTU temperature/humidity probes: a real pymodbus server on a pty.

Probes are data: a :class:`Scenario` says how the temperature moves, a
:class:`SimulatedProbe` where it sits in the register map. :class:`ProbeSimulator` serves
any number of them on one simulated RS-485 bus behind a :class:`PtyNullModem`, so the
driver under test opens a real tty, and a test can inject faults between the two.

Register values are computed from the scenario when a request reads them, so they move
with time; every temperature served is logged in :attr:`ProbeSimulator.served`, so a test
can check that exactly the simulated values arrived.

Faults come in two layers: sensor faults (:mod:`firmware_bridge.sim.sensor_faults`: stuck,
spike, out of range, silent) shape the values, and line faults
(:class:`~firmware_bridge.sim.faults.LineFaults`: drop, corrupt, garbage, duplicate, stall)
damage the answer frames on their way out. Every answer leaves through pymodbus' packet
trace hook, which hands it to the fault injector instead of the serial port.

This uses pymodbus 3.16's ``SimDevice``/``SimData`` datastore: its ``action`` hook is
called on each access and may fill the registers in place. The older
``ModbusDeviceContext``/``ModbusSequentialDataBlock`` are deprecated shims over it in
3.16 and no longer have a ``getValues`` to hook.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from firmware_bridge.nullmodem import PtyNullModem
from firmware_bridge.probes.modbus import (
    READ_FUNCTION_CODE,
    ModbusProbeSpec,
    RegisterSpec,
    Table,
    decode_register,
    encode_register,
)
from firmware_bridge.sim.faults import NO_FAULTS, FaultInjector, LineFaults
from firmware_bridge.sim.sensor_faults import (
    SCENARIO_KINDS,
    Scenario,
    ScenarioKind,
    SensorFault,
    sensor_reading,
)

log = logging.getLogger(__name__)

# Scenarios moved to sensor_faults (the DS18B20 simulator shares them); importable here still.
__all__ = [
    "SCENARIO_KINDS",
    "ProbeSimulator",
    "Scenario",
    "ScenarioKind",
    "SimulatedProbe",
]


def _default_humidity() -> Scenario:
    return Scenario.steady(55.0)


@dataclass(frozen=True)
class SimulatedProbe:
    """One simulated probe on the bus: its unit id, register map, scenarios and faults.

    Both registers live in ``table`` and share ``scale`` and ``signed``. Humidity is served
    only if ``humidity_register`` is set, clamped to 0..100 %RH as a real sensor reports it.
    ``faults`` act on the temperature (see :func:`sensor_reading`); a silent sensor makes
    the whole unit silent, as a probe whose sensor hangs stops answering.
    """

    unit: int
    temperature_register: int
    humidity_register: int | None
    scenario: Scenario
    humidity: Scenario = field(default_factory=_default_humidity)
    table: Table = "holding"
    scale: float = 0.1
    signed: bool = True
    faults: tuple[SensorFault, ...] = ()

    def __post_init__(self) -> None:
        # Building the driver's spec checks unit, registers, table and scale in one place.
        self.probe_spec("sim")
        if not isinstance(self.scenario, Scenario) or not isinstance(self.humidity, Scenario):
            raise TypeError("scenario and humidity must be Scenario objects")
        if not isinstance(self.faults, tuple) or not all(
            isinstance(fault, SensorFault) for fault in self.faults
        ):
            raise TypeError("faults must be a tuple of SensorFault objects")

    @property
    def temperature_spec(self) -> RegisterSpec:
        return RegisterSpec(self.temperature_register, self.table, self.scale, self.signed)

    @property
    def humidity_spec(self) -> RegisterSpec | None:
        if self.humidity_register is None:
            return None
        return RegisterSpec(self.humidity_register, self.table, self.scale, self.signed)

    def probe_spec(self, probe: str) -> ModbusProbeSpec:
        """The driver's view of this device, under the wire id ``probe``."""
        return ModbusProbeSpec(probe, self.unit, self.temperature_spec, self.humidity_spec)

    def register_map(self) -> str:
        """One line for people: ``temperature holding register 0, scale 0.1, signed; ...``."""
        sign = "signed" if self.signed else "unsigned"
        text = (
            f"temperature {self.table} register {self.temperature_register}, "
            f"scale {self.scale}, {sign}"
        )
        if self.humidity_register is not None:
            text += f"; humidity {self.table} register {self.humidity_register}"
        return text

    def temperature_at(self, elapsed_s: float) -> tuple[float | None, SensorFault | None]:
        """The temperature shown at ``elapsed_s`` (None: silent) and the fault behind it."""
        return sensor_reading(self.faults, elapsed_s, self.scenario.value_at)

    def readings(self, elapsed_s: float) -> list[tuple[RegisterSpec, float]]:
        """Each served register with its value at ``elapsed_s``, temperature first.

        Empty while the sensor is silent.
        """
        celsius, _ = self.temperature_at(elapsed_s)
        if celsius is None:
            return []
        values = [(self.temperature_spec, celsius)]
        if (spec := self.humidity_spec) is not None:
            values.append((spec, min(100.0, max(0.0, self.humidity.value_at(elapsed_s)))))
        return values


class _LiveRegisters:
    """pymodbus ``SimDevice.action`` for one probe: fills its registers at read time."""

    def __init__(self, probe: SimulatedProbe, simulator: ProbeSimulator) -> None:
        self._probe = probe
        self._sim = simulator

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        # pymodbus has already answered invalid addresses and writes to read-only registers.
        if set_values is not None or function_code != READ_FUNCTION_CODE[self._probe.table]:
            return None
        elapsed = self._sim.elapsed()
        _, fault = self._probe.temperature_at(elapsed)
        if fault is not None:
            self._sim.sensor_faults[fault.kind] += 1
        values = self._probe.readings(elapsed)
        if not values:
            self._sim.mute_next_answer(self._probe.unit)
        for index, (spec, value) in enumerate(values):
            if address <= spec.register < address + count:
                raw = encode_register(value, spec)
                registers[spec.register - start_address] = raw
                if index == 0:
                    self._sim.served[self._probe.unit].append(decode_register(raw, spec))
        return None


def _device(probe: SimulatedProbe, action: _LiveRegisters) -> SimDevice:
    """A device with separate tables, so reading the wrong table fails as on real hardware."""
    specs = [probe.temperature_spec] + (
        [] if probe.humidity_spec is None else [probe.humidity_spec]
    )
    registers = [
        SimData(spec.register, values=0, datatype=DataType.REGISTERS, readonly=True)
        for spec in specs
    ]
    nothing = [SimData(0, datatype=DataType.INVALID)]
    no_bits = [SimData(0, values=False, datatype=DataType.BITS, readonly=True)]
    holding, inputs = (registers, nothing) if probe.table == "holding" else (nothing, registers)
    return SimDevice(probe.unit, simdata=(no_bits, no_bits, holding, inputs), action=action.action)


class ProbeSimulator:
    """Serves simulated probes on one pty bus; use with ``async with``.

    A driver opens :attr:`device_path`; :attr:`modem` gives access to byte-level fault
    injection, ``faults`` adds line faults to every answer (counted in :attr:`injected`),
    and :meth:`unplug`/:meth:`replug` pull the adapter and put it back (same ``link``,
    new tty). ``clock`` (seconds, monotonic) drives the scenarios, so tests can set the
    time. Units not on the bus stay silent, as on a real RS-485 line.
    """

    def __init__(
        self,
        probes: Sequence[SimulatedProbe],
        *,
        link: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        baudrate: int = 9600,
        faults: LineFaults = NO_FAULTS,
    ) -> None:
        self.probes = tuple(probes)
        if not self.probes:
            raise ValueError("a simulator needs at least one probe")
        if not all(isinstance(probe, SimulatedProbe) for probe in self.probes):
            raise TypeError("probes must be SimulatedProbe objects")
        units = [probe.unit for probe in self.probes]
        if len(set(units)) != len(units):
            raise ValueError(f"unit ids must be unique on a bus, got {units}")
        if not isinstance(faults, LineFaults):
            raise TypeError("faults must be LineFaults")
        self.link = link
        self.modem = PtyNullModem(link=link)
        self.served: dict[int, list[float]] = {unit: [] for unit in units}
        """Per unit, each temperature the simulator answered, in order (lost on the line or not)."""
        self.sensor_faults: Counter[str] = Counter()
        """Answers shaped by a sensor fault, by fault kind (silent ones included)."""
        self.unplugged = False
        self._line = FaultInjector(faults)
        self._clock = clock
        self._baudrate = baudrate
        self._started_at = 0.0
        self._server: ModbusSerialServer | None = None
        self._fd: int | None = None
        self._muted: set[int] = set()
        self._sending: set[asyncio.Task[None]] = set()

    @property
    def device_path(self) -> str:
        """The tty a driver opens: the ``link`` if there is one (it survives a replug)."""
        return str(self.link) if self.link is not None else self.modem.device_path

    @property
    def injected(self) -> Counter[str]:
        """Line faults injected so far, by kind (``drop``, ``corrupt``, ...)."""
        return self._line.injected

    def set_line_faults(self, faults: LineFaults) -> None:
        """Change the line faults from the next answer on; :attr:`injected` counts on."""
        injected = self._line.injected
        self._line = FaultInjector(faults)
        self._line.injected = injected

    def elapsed(self) -> float:
        """Seconds of simulated time since start, as the scenarios see it."""
        return self._clock() - self._started_at

    async def start(self) -> None:
        """Open the ptys and serve; the scenarios' time starts now."""
        self._started_at = self._clock()
        await self._plug()

    async def stop(self) -> None:
        await self._unplug()

    async def unplug(self) -> None:
        """Pull the adapter: the driver's port vanishes, and the link with it."""
        await self._unplug()
        self.unplugged = True

    async def replug(self) -> None:
        """Plug it in again: a new tty behind the same link; scenario time runs on."""
        self.modem = PtyNullModem(link=self.link)
        await self._plug()
        self.unplugged = False

    async def wait_sent(self) -> None:
        """Wait until every answer held back by a line fault (a stall) has gone out."""
        while self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)

    def mute_next_answer(self, unit: int) -> None:
        """Swallow the answer being built for ``unit`` (its sensor is silent)."""
        self._muted.add(unit)

    async def _plug(self) -> None:
        await self.modem.start()
        try:
            # Our own handle on the simulator's tty: answers go out through the line faults.
            self._fd = os.open(self.modem.sim_path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
            server = self._build_server()
            await server.serve_forever(background=True)
        except BaseException:
            await self._unplug()
            raise
        self._server = server

    async def _unplug(self) -> None:
        for task in self._sending:
            task.cancel()
        await self.wait_sent()
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]  # untyped in 3.16
            self._server = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        await self.modem.stop()

    def _build_server(self) -> ModbusSerialServer:
        devices = [_device(probe, _LiveRegisters(probe, self)) for probe in self.probes]
        # Catch-all for absent units: answered with an error that _outgoing drops, so
        # pymodbus does not log a traceback for every request to a unit that is not here.
        devices.append(SimDevice(0, simdata=[SimData(0, datatype=DataType.INVALID)]))
        return ModbusSerialServer(
            devices,
            framer=FramerType.RTU,
            port=self.modem.sim_path,
            baudrate=self._baudrate,
            trace_packet=self._outgoing,
        )

    def _outgoing(self, sending: bool, frame: bytes) -> bytes:
        """pymodbus' packet trace: every answer leaves through the line faults instead."""
        if not sending or not frame:
            return frame
        unit = frame[0]
        if unit not in self.served:
            log.debug("unit %d is not on this bus: no answer", unit)
        elif unit in self._muted:
            self._muted.discard(unit)
        else:
            task = asyncio.get_running_loop().create_task(self._line.send(frame, self._write))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return b""

    async def _write(self, data: bytes) -> None:
        if self._fd is None:
            return  # unplugged meanwhile: the answer goes nowhere
        try:
            os.write(self._fd, data)
        except OSError as exc:  # a full or vanished tty loses the answer, as a real line does
            log.debug("answer lost: %s", exc)

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
