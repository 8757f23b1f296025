"""Simulated DS18B20 sensors: ``w1_slave`` files under a directory laid out like sysfs.

The driver reads ``{base}/28-xxxxxxxxxxxx/w1_slave``, so the simulator writes exactly that,
in the kernel's format, from a :class:`~firmware_bridge.sim.sensor_faults.Scenario` per
sensor. A real file is produced at read time by the kernel; here :meth:`update` rewrites
every file for the current simulated time (tests call it after setting their clock; run
standalone, a task calls it every ``refresh_s``). Writes are atomic (write, then rename),
so a reader never sees half a file, and a sensor that vanishes or returns does so as a
whole directory, as the kernel's does.

Two layers of faults: sensor faults (stuck, spike, out of range, silent = the directory
vanishes) shape the value; wire faults (:class:`W1Fault`) shape the file: a CRC the
kernel rejects (``crc_no``), a CRC that does not match though the file says ``YES``
(``bad_crc``), the 85 °C power-on scratchpad, and the all-ones scratchpad of a
disconnected sensor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.configfile import load_toml_model
from firmware_bridge.probes.ds18b20 import (
    SENSOR_ID,
    W1Slave,
    dallas_crc8,
    encode_w1_slave,
    kernel_millidegrees,
)
from firmware_bridge.sim.sensor_faults import (
    Scenario,
    Schedule,
    ScheduleConfig,
    SensorFault,
    SensorFaultConfig,
    TrendConfig,
    sensor_reading,
)

W1FaultKind = Literal["crc_no", "bad_crc", "power_on", "disconnected"]
W1_FAULT_KINDS: tuple[W1FaultKind, ...] = get_args(W1FaultKind)

_USER_BYTES = b"\x4b\x46"  # TH and TL as they leave the factory
_CONFIG_12_BIT = 0x7F
POWER_ON_SCRATCHPAD = bytes.fromhex("50054b467fff0c101c")
DISCONNECTED_SCRATCHPAD = b"\xff" * 9


def scratchpad_for(celsius: float) -> bytes:
    """The 12-bit scratchpad a DS18B20 shows for ``celsius`` (saturated to 16 bits)."""
    raw = max(-0x8000, min(0x7FFF, round(celsius * 16)))
    # Byte 6 is "reserved"; real parts show 0x10 minus the fraction nibble, so we do too.
    reserved = 0x10 - (raw & 0x0F)
    head = raw.to_bytes(2, "little", signed=True) + _USER_BYTES
    head += bytes([_CONFIG_12_BIT, 0xFF, reserved, 0x10])
    return head + bytes([dallas_crc8(head)])


def reading_file(celsius: float) -> W1Slave:
    """A good ``w1_slave`` for ``celsius``: what a healthy sensor and kernel produce."""
    pad = scratchpad_for(celsius)
    return W1Slave(pad, True, kernel_millidegrees(pad))


@dataclass(frozen=True)
class W1Fault:
    """A fault of the 1-wire read itself, and when it happens."""

    kind: W1FaultKind
    when: Schedule = field(default_factory=Schedule)

    def __post_init__(self) -> None:
        if self.kind not in W1_FAULT_KINDS:
            raise ValueError(f"kind must be one of {W1_FAULT_KINDS}, not {self.kind!r}")
        if not isinstance(self.when, Schedule):
            raise TypeError("when must be a Schedule")

    def damage(self, slave: W1Slave) -> W1Slave:
        """The file the kernel shows under this fault, instead of ``slave``."""
        if self.kind == "crc_no":
            # One bit flipped on the wire: the kernel sees the mismatch and says NO.
            pad = bytes([slave.scratchpad[0] ^ 0x04]) + slave.scratchpad[1:]
            return W1Slave(pad, False, kernel_millidegrees(pad))
        if self.kind == "bad_crc":
            # A verdict of YES over a CRC that does not match: only our own check catches it.
            pad = slave.scratchpad[:8] + bytes([slave.scratchpad[8] ^ 0x01])
            return W1Slave(pad, True, slave.millidegrees)
        if self.kind == "power_on":
            return W1Slave(POWER_ON_SCRATCHPAD, True, 85_000)
        return W1Slave(DISCONNECTED_SCRATCHPAD, False, kernel_millidegrees(b"\xff\xff"))


@dataclass(frozen=True)
class SimulatedDs18b20:
    """One sensor: its id, how its temperature moves, and its faults (first active wins)."""

    sensor_id: str
    scenario: Scenario
    faults: tuple[SensorFault, ...] = ()
    w1_faults: tuple[W1Fault, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.sensor_id, str) or not SENSOR_ID.fullmatch(self.sensor_id):
            raise ValueError(f"sensor_id must look like 28-0123456789ab, not {self.sensor_id!r}")
        if not isinstance(self.scenario, Scenario):
            raise TypeError("scenario must be a Scenario")
        for name, kind in (("faults", SensorFault), ("w1_faults", W1Fault)):
            items = getattr(self, name)
            if not isinstance(items, tuple) or not all(isinstance(i, kind) for i in items):
                raise TypeError(f"{name} must be a tuple of {kind.__name__} objects")

    def file_at(self, elapsed_s: float) -> tuple[W1Slave | None, str | None]:
        """The ``w1_slave`` at ``elapsed_s`` (None: the sensor is gone) and the fault kind."""
        celsius, fault = sensor_reading(self.faults, elapsed_s, self.scenario.value_at)
        if celsius is None:
            return None, "silent"
        slave = reading_file(celsius)
        for w1 in self.w1_faults:
            if w1.when.window_start(elapsed_s) is not None:
                return w1.damage(slave), w1.kind
        return slave, None if fault is None else fault.kind


class Ds18b20Simulator:
    """Writes the sensors' files under ``base``; use with ``async with``.

    ``base`` defaults to a fresh temporary directory, removed on stop; ``link`` names a
    symlink to it. With ``refresh_s`` a task rewrites the files that often; with None only
    :meth:`update` does (tests, with their own ``clock``).
    """

    def __init__(
        self,
        sensors: Sequence[SimulatedDs18b20],
        *,
        base: Path | None = None,
        link: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        refresh_s: float | None = 1.0,
    ) -> None:
        self.sensors = tuple(sensors)
        if not self.sensors or not all(isinstance(s, SimulatedDs18b20) for s in self.sensors):
            raise ValueError("a simulator needs one or more SimulatedDs18b20 sensors")
        ids = [sensor.sensor_id for sensor in self.sensors]
        if len(set(ids)) != len(ids):
            raise ValueError(f"sensor ids must be unique, got {ids}")
        if refresh_s is not None and not refresh_s > 0:
            raise ValueError("refresh_s must be positive or None")
        self.link = link
        self.faults: Counter[str] = Counter()
        """Updates that wrote a fault, by kind (sensor and wire faults alike)."""
        self._given_base = base
        self._base: Path | None = None
        self._clock = clock
        self._started_at = 0.0
        self._refresh = refresh_s
        self._task: asyncio.Task[None] | None = None

    @property
    def base(self) -> Path:
        """The directory to give the driver as its sysfs base."""
        if self._base is None:
            raise RuntimeError("simulator not started")
        return self._base

    def elapsed(self) -> float:
        return self._clock() - self._started_at

    async def start(self) -> None:
        base = self._given_base or Path(tempfile.mkdtemp(prefix="postedge-w1-"))
        (base / "w1_bus_master1").mkdir(parents=True, exist_ok=True)  # as in real sysfs
        self._base = base
        self._started_at = self._clock()
        self.update()
        if self.link is not None:
            _replace_symlink(self.link, base)
        if self._refresh is not None:
            self._task = asyncio.get_running_loop().create_task(self._refresher(self._refresh))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()
        if self._base is not None:
            for sensor in self.sensors:
                self._remove(sensor.sensor_id)
            if self._given_base is None:
                shutil.rmtree(self._base, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    (self._base / "w1_bus_master1").rmdir()
            self._base = None

    def update(self) -> None:
        """Write every sensor's file as it is now in simulated time."""
        elapsed = self.elapsed()
        for sensor in self.sensors:
            slave, fault = sensor.file_at(elapsed)
            if fault is not None:
                self.faults[fault] += 1
            if slave is None:
                self._remove(sensor.sensor_id)
            else:
                self._write(sensor.sensor_id, encode_w1_slave(slave))

    async def _refresher(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)  # the refresh rate itself, not synchronisation
            self.update()

    def _write(self, sensor_id: str, text: str) -> None:
        directory = self.base / sensor_id
        if directory.is_dir():
            temporary = directory / ".w1_slave.tmp"
            temporary.write_text(text)
            temporary.replace(directory / "w1_slave")
            return
        # A sensor (re)appears whole, as the kernel adds a slave: build aside, then rename.
        fresh = self.base / f".{sensor_id}.new"
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir()
        (fresh / "w1_slave").write_text(text)
        fresh.rename(directory)

    def _remove(self, sensor_id: str) -> None:
        directory = self.base / sensor_id
        if not directory.is_dir():
            return
        gone = self.base / f".{sensor_id}.gone"
        shutil.rmtree(gone, ignore_errors=True)
        directory.rename(gone)  # one step for readers: the sensor is there or not
        shutil.rmtree(gone, ignore_errors=True)

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


def _replace_symlink(link: Path, target: Path) -> None:
    if os.path.lexists(link) and not link.is_symlink():
        raise FileExistsError(f"{link} exists and is not a symlink")
    temporary = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    temporary.symlink_to(target)
    temporary.replace(link)


# --- scenario files -----------------------------------------------------------------------


class W1FaultConfig(ScheduleConfig):
    """One ``[[sensors.w1_faults]]`` table: ``kind`` and the schedule keys."""

    kind: W1FaultKind

    def to_fault(self) -> W1Fault:
        return W1Fault(self.kind, self.to_schedule())


class SensorConfig(BaseModel):
    """One ``[[sensors]]`` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=SENSOR_ID.pattern)
    temperature: TrendConfig
    faults: list[SensorFaultConfig] = Field(default_factory=list)
    w1_faults: list[W1FaultConfig] = Field(default_factory=list)

    def to_sensor(self) -> SimulatedDs18b20:
        return SimulatedDs18b20(
            self.id,
            self.temperature.to_scenario(),
            tuple(fault.to_fault() for fault in self.faults),
            tuple(fault.to_fault() for fault in self.w1_faults),
        )


class Ds18b20Scenario(BaseModel):
    """A DS18B20 scenario file: how often files are rewritten, and the sensors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    refresh_s: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    sensors: list[SensorConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        ids = [sensor.id for sensor in self.sensors]
        if len(set(ids)) != len(ids):
            raise ValueError("sensor ids must be unique")
        return self

    def to_sensors(self) -> list[SimulatedDs18b20]:
        return [sensor.to_sensor() for sensor in self.sensors]


def load_scenario(path: Path) -> Ds18b20Scenario:
    """Read and validate a DS18B20 scenario file; ConfigFileError names the file and key."""
    return load_toml_model(path, Ds18b20Scenario)
