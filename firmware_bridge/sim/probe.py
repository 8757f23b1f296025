"""Simulated Modbus RTU temperature/humidity probes: a real pymodbus server on a pty.

Probes are data: a :class:`Scenario` says how the temperature moves, a
:class:`SimulatedProbe` where it sits in the register map. :class:`ProbeSimulator` serves
any number of them on one simulated RS-485 bus behind a :class:`PtyNullModem`, so the
driver under test opens a real tty, and a test can inject faults between the two.

Register values are computed from the scenario when a request reads them, so they move
with time; every temperature served is logged in :attr:`ProbeSimulator.served`, so a test
can check that exactly the simulated values arrived.

This uses pymodbus 3.16's ``SimDevice``/``SimData`` datastore: its ``action`` hook is
called on each access and may fill the registers in place. The older
``ModbusDeviceContext``/``ModbusSequentialDataBlock`` are deprecated shims over it in
3.16 and no longer have a ``getValues`` to hook.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, Self, get_args

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

log = logging.getLogger(__name__)

ScenarioKind = Literal["steady", "drift", "excursion"]
SCENARIO_KINDS: tuple[ScenarioKind, ...] = get_args(ScenarioKind)


@dataclass(frozen=True)
class Scenario:
    """How a simulated quantity moves with time; build one with the class methods.

    ``noise`` adds a deterministic wobble of at most that amplitude, new every second and
    the same for the same ``seed``, so a scenario stays a pure function of time.
    """

    kind: ScenarioKind
    base: float
    per_minute: float = 0.0
    peak: float | None = None
    start_s: float = 0.0
    ramp_s: float = 0.0
    hold_s: float = 0.0
    noise: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in SCENARIO_KINDS:
            raise ValueError(f"kind must be one of {SCENARIO_KINDS}, not {self.kind!r}")
        for name in ("base", "per_minute", "start_s", "ramp_s", "hold_s", "noise"):
            _check_finite(name, getattr(self, name))
        for name in ("start_s", "ramp_s", "hold_s", "noise"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if (self.kind == "excursion") != (self.peak is not None):
            raise ValueError("peak is required for an excursion, and only there")
        if self.peak is not None:
            _check_finite("peak", self.peak)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, not {self.seed!r}")

    @classmethod
    def steady(cls, base: float, *, noise: float = 0.0, seed: int = 0) -> Scenario:
        """Stays at ``base``."""
        return cls("steady", base, noise=noise, seed=seed)

    @classmethod
    def drift(
        cls, base: float, per_minute: float, *, noise: float = 0.0, seed: int = 0
    ) -> Scenario:
        """Starts at ``base`` and moves ``per_minute`` every minute, for ever (a failing cooler)."""
        return cls("drift", base, per_minute=per_minute, noise=noise, seed=seed)

    @classmethod
    def excursion(
        cls,
        base: float,
        peak: float,
        start_s: float,
        ramp_s: float,
        hold_s: float,
        *,
        noise: float = 0.0,
        seed: int = 0,
    ) -> Scenario:
        """Sits at ``base``, ramps to ``peak`` from ``start_s`` over ``ramp_s``, holds it
        for ``hold_s``, and ramps back to ``base`` over ``ramp_s`` (a door left open)."""
        return cls(
            "excursion",
            base,
            peak=peak,
            start_s=start_s,
            ramp_s=ramp_s,
            hold_s=hold_s,
            noise=noise,
            seed=seed,
        )

    def value_at(self, elapsed_s: float) -> float:
        """The value ``elapsed_s`` seconds after the simulation started."""
        _check_finite("elapsed_s", elapsed_s)
        if elapsed_s < 0:
            raise ValueError("elapsed_s must not be negative")
        return self._trend(elapsed_s) + self._wobble(elapsed_s)

    def _trend(self, t: float) -> float:
        if self.kind == "steady":
            return self.base
        if self.kind == "drift":
            return self.base + self.per_minute * t / 60.0
        assert self.peak is not None
        rise = self.peak - self.base
        into = t - self.start_s
        hold_end = self.ramp_s + self.hold_s
        if into < 0 or into >= hold_end + self.ramp_s:
            return self.base
        if into < self.ramp_s:
            return self.base + rise * into / self.ramp_s
        if into < hold_end:
            return self.peak
        return self.peak - rise * (into - hold_end) / self.ramp_s

    def _wobble(self, t: float) -> float:
        if not self.noise:
            return 0.0
        # A string seed is hashed with SHA-512, so the sequence is the same in every process.
        return random.Random(f"{self.seed}:{math.floor(t)}").uniform(-self.noise, self.noise)


def _check_finite(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, not {value!r}")


def _default_humidity() -> Scenario:
    return Scenario.steady(55.0)


@dataclass(frozen=True)
class SimulatedProbe:
    """One simulated probe on the bus: its unit id, register map and scenarios.

    Both registers live in ``table`` and share ``scale`` and ``signed``. Humidity is served
    only if ``humidity_register`` is set, clamped to 0..100 %RH as a real sensor reports it.
    """

    unit: int
    temperature_register: int
    humidity_register: int | None
    scenario: Scenario
    humidity: Scenario = field(default_factory=_default_humidity)
    table: Table = "holding"
    scale: float = 0.1
    signed: bool = True

    def __post_init__(self) -> None:
        # Building the driver's spec checks unit, registers, table and scale in one place.
        self.probe_spec("sim")
        if not isinstance(self.scenario, Scenario) or not isinstance(self.humidity, Scenario):
            raise TypeError("scenario and humidity must be Scenario objects")

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

    def readings(self, elapsed_s: float) -> list[tuple[RegisterSpec, float]]:
        """Each served register with its value at ``elapsed_s``, temperature first."""
        values = [(self.temperature_spec, self.scenario.value_at(elapsed_s))]
        if (spec := self.humidity_spec) is not None:
            values.append((spec, min(100.0, max(0.0, self.humidity.value_at(elapsed_s)))))
        return values


class _LiveRegisters:
    """pymodbus ``SimDevice.action`` for one probe: fills its registers at read time."""

    def __init__(self, probe: SimulatedProbe, elapsed: Callable[[], float], served: list[float]):
        self._probe = probe
        self._elapsed = elapsed
        self._served = served

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
        for index, (spec, value) in enumerate(self._probe.readings(self._elapsed())):
            if address <= spec.register < address + count:
                raw = encode_register(value, spec)
                registers[spec.register - start_address] = raw
                if index == 0:
                    self._served.append(decode_register(raw, spec))
        return None


def _device(probe: SimulatedProbe, action: _LiveRegisters) -> SimDevice:
    """A device with separate tables, so reading the wrong table fails as on real hardware."""
    registers = [
        SimData(spec.register, values=0, datatype=DataType.REGISTERS, readonly=True)
        for spec, _ in probe.readings(0.0)
    ]
    nothing = [SimData(0, datatype=DataType.INVALID)]
    no_bits = [SimData(0, values=False, datatype=DataType.BITS, readonly=True)]
    holding, inputs = (registers, nothing) if probe.table == "holding" else (nothing, registers)
    return SimDevice(probe.unit, simdata=(no_bits, no_bits, holding, inputs), action=action.action)


class ProbeSimulator:
    """Serves simulated probes on one pty bus; use with ``async with``.

    A driver opens :attr:`device_path`; :attr:`modem` gives access to fault injection.
    ``clock`` (seconds, monotonic) drives the scenarios, so tests can set the time.
    Units not on the bus stay silent, as on a real RS-485 line.
    """

    def __init__(
        self,
        probes: Sequence[SimulatedProbe],
        *,
        link: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        baudrate: int = 9600,
    ) -> None:
        self.probes = tuple(probes)
        if not self.probes:
            raise ValueError("a simulator needs at least one probe")
        if not all(isinstance(probe, SimulatedProbe) for probe in self.probes):
            raise TypeError("probes must be SimulatedProbe objects")
        units = [probe.unit for probe in self.probes]
        if len(set(units)) != len(units):
            raise ValueError(f"unit ids must be unique on a bus, got {units}")
        self.modem = PtyNullModem(link=link)
        self.served: dict[int, list[float]] = {unit: [] for unit in units}
        """Per unit, each temperature the simulator answered, in order (lost on the line or not)."""
        self._clock = clock
        self._baudrate = baudrate
        self._started_at = 0.0
        self._server: ModbusSerialServer | None = None

    @property
    def device_path(self) -> str:
        """The tty a driver opens (the ``link`` points here too)."""
        return self.modem.device_path

    def elapsed(self) -> float:
        """Seconds of simulated time since start, as the scenarios see it."""
        return self._clock() - self._started_at

    async def start(self) -> None:
        """Open the ptys and serve; the scenarios' time starts now."""
        await self.modem.start()
        self._started_at = self._clock()
        try:
            server = self._build_server()
            await server.serve_forever(background=True)
        except BaseException:
            await self.modem.stop()
            raise
        self._server = server

    def _build_server(self) -> ModbusSerialServer:
        devices = [
            _device(probe, _LiveRegisters(probe, self.elapsed, self.served[probe.unit]))
            for probe in self.probes
        ]
        # Catch-all for absent units: answered with an error that _mute_absent drops, so
        # pymodbus does not log a traceback for every request to a unit that is not here.
        devices.append(SimDevice(0, simdata=[SimData(0, datatype=DataType.INVALID)]))
        return ModbusSerialServer(
            devices,
            framer=FramerType.RTU,
            port=self.modem.sim_path,
            baudrate=self._baudrate,
            trace_packet=self._mute_absent,
        )

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]  # untyped in 3.16
            self._server = None
        await self.modem.stop()

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

    def _mute_absent(self, sending: bool, frame: bytes) -> bytes:
        if sending and frame and frame[0] not in self.served:
            log.debug("unit %d is not on this bus: no answer", frame[0])
            return b""
        return frame
