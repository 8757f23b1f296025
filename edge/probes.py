"""Polling the Modbus probes of one device at a fixed rate."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from contracts import TemperatureBody
from edge.config import Ds18b20Config, ModbusBusConfig, ProbeConfig, RegisterConfig
from firmware_bridge.errors import BridgeError
from firmware_bridge.probes.ds18b20 import Ds18b20
from firmware_bridge.probes.modbus import ModbusProbeSpec, ModbusRtuBus, RegisterSpec


def probe_spec(probe: ProbeConfig) -> ModbusProbeSpec:
    """The driver's view of a configured probe."""

    def register(config: RegisterConfig) -> RegisterSpec:
        return RegisterSpec(
            register=config.address, table=config.table, scale=config.scale, signed=config.signed
        )

    return ModbusProbeSpec(
        probe=probe.id,
        unit=probe.unit,
        temperature=register(probe.temperature),
        humidity=register(probe.humidity) if probe.humidity else None,
    )


class ProbePoller:
    """Reads every probe of a device (Modbus buses, 1-wire sensors) once per ``interval_s``
    and hands on the readings.

    A probe that fails is counted and skipped; the other probes carry on. The driver
    logs the fault (once per kind, until the probe works again), so this does not.
    """

    def __init__(
        self,
        buses: list[ModbusBusConfig],
        interval_s: float,
        on_reading: Callable[[TemperatureBody], object],
        ds18b20: list[Ds18b20Config] | None = None,
    ) -> None:
        self._bus_configs = buses
        self._w1_configs = ds18b20 or []
        self._interval = interval_s
        self._on_reading = on_reading
        self.read_errors = 0

    async def run(self, stop: asyncio.Event) -> None:
        async with contextlib.AsyncExitStack() as stack:
            buses = []
            for config in self._bus_configs:
                bus = ModbusRtuBus(config.port, baudrate=config.baudrate, timeout=config.timeout_s)
                await stack.enter_async_context(bus)
                buses.append((bus, [probe_spec(probe) for probe in config.probes]))
            sensors = [
                Ds18b20(c.sensor, probe=c.probe, base=c.base, timeout=c.timeout_s)
                for c in self._w1_configs
            ]
            loop = asyncio.get_running_loop()
            due = loop.time()
            while not stop.is_set():
                await asyncio.gather(
                    *(self._read_bus(bus, specs) for bus, specs in buses),
                    *(self._read_sensor(sensor) for sensor in sensors),
                )
                due += self._interval
                now = loop.time()
                if due < now:  # fell behind (slow bus): skip the missed slots, keep the rate
                    due = now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=due - now)

    async def _read_sensor(self, sensor: Ds18b20) -> None:
        try:
            reading = await sensor.read()
        except BridgeError:
            self.read_errors += 1
            return
        self._on_reading(reading)

    async def _read_bus(self, bus: ModbusRtuBus, specs: list[ModbusProbeSpec]) -> None:
        for spec in specs:
            try:
                reading = await bus.read(spec)
            except BridgeError:
                self.read_errors += 1
                continue
            self._on_reading(reading)
