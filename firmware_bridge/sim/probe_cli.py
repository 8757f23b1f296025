"""``postedge sim probe``: simulated Modbus RTU temperature probes on a pty, for people and scripts.

The first stdout line is the path to connect to, so a script can start the simulator and
read one line to know where it is; the second line describes the register map.

A scenario file (:class:`ProbeBusScenario`, example in ``scenarios/probe.toml``) describes
the whole bus: probes, their scenarios and sensor faults, line faults on every answer,
and when the adapter is unplugged. Without one, the quick options build a bus of
identical probes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.configfile import load_toml_model
from firmware_bridge.probes.modbus import Table
from firmware_bridge.sim.faults import LineFaultsConfig
from firmware_bridge.sim.probe import SCENARIO_KINDS, ProbeSimulator, SimulatedProbe
from firmware_bridge.sim.runner import add_link_options, run_command, wait_until_stopped
from firmware_bridge.sim.sensor_faults import (
    Schedule,
    ScheduleConfig,
    SensorFaultConfig,
    TrendConfig,
)

_DESCRIPTION = """\
Simulate Modbus RTU temperature/humidity probes on one RS-485 bus, over a pseudo-terminal.

Prints the serial port to connect to as the first line (the --link path if given), then
the register map, and serves until interrupted (Ctrl-C, SIGTERM) or --duration ends.
Units not on the bus stay silent, as on a real bus.

With --scenario FILE (TOML; see firmware_bridge/sim/scenarios/probe.toml) the file sets
each probe's unit id, register map, temperature scenario (steady, drift or excursion),
sensor faults (stuck, spike, out_of_range, silent), the line faults on every answer
(drop, corrupt, garbage, duplicate, stall) and an unplug schedule for the adapter.

Without a file, the quick options below describe N identical probes: temperature in
holding register 0 and relative humidity in holding register 1, both int16 in tenths
(scale 0.1, signed); unit ids run 1..N.
"""

_QUICK_DEFAULTS: dict[str, Any] = {
    "trend": "steady",
    "base": 4.0,
    "peak": 12.0,
    "per_minute": 0.5,
    "start": 10.0,
    "ramp": 30.0,
    "hold": 60.0,
    "noise": 0.0,
    "humidity": 55.0,
    "units": 1,
}


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``probe`` subcommand to the ``postedge sim`` subparsers."""
    parser = subparsers.add_parser(
        "probe",
        help="simulate Modbus RTU temperature probes on a pty",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_link_options(
        parser,
        scenario_help="scenario file (TOML): probes, scenarios, sensor and line faults, unplugging",
    )
    _add_quick_options(parser.add_argument_group("quick options (without --scenario)"))
    parser.set_defaults(func=run)


def _add_quick_options(group: argparse._ArgumentGroup) -> None:
    def option(name: str, kind: Any, metavar: str | None, text: str) -> None:
        default = _QUICK_DEFAULTS[name.removeprefix("--").replace("-", "_")]
        group.add_argument(name, type=kind, metavar=metavar, help=f"{text} (default: {default})")

    group.add_argument(
        "--trend",
        choices=SCENARIO_KINDS,
        help="steady: stay at --base; drift: move --per-minute from --base; "
        "excursion: ramp from --base to --peak and back (default: steady)",
    )
    option("--base", _finite, "C", "base temperature in °C")
    option("--peak", _finite, "C", "excursion peak in °C")
    option("--per-minute", _finite, "C", "drift in °C per minute")
    option("--start", _non_negative, "S", "excursion starts after S seconds")
    option("--ramp", _non_negative, "S", "excursion ramp up and down takes S seconds each")
    option("--hold", _non_negative, "S", "excursion stays at the peak for S seconds")
    option("--noise", _non_negative, "C", "deterministic noise amplitude in °C")
    option("--humidity", _finite, "PCT", "relative humidity served, %%RH")
    option("--units", _unit_count, "N", "probes on the bus, unit ids 1..N")


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted or ``--duration`` ends; 0 on a clean stop, 2 on bad input."""
    given = [name for name in _QUICK_DEFAULTS if getattr(args, name, None) is not None]
    if args.scenario is not None and given:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        print(f"postedge sim probe: {options} cannot be combined with --scenario", file=sys.stderr)
        return 2
    return run_command(
        "probe",
        lambda: scenario_from_args(args) if args.scenario is None else load_scenario(args.scenario),
        lambda scenario, stop: _serve(scenario, args, stop),
    )


def probes_from_args(args: argparse.Namespace) -> list[SimulatedProbe]:
    """The simulated probes the quick options ask for; unit ``n`` gets noise seed ``n``."""
    return scenario_from_args(args).to_probes()


def scenario_from_args(args: argparse.Namespace) -> ProbeBusScenario:
    """The bus the quick options describe, as if it had been read from a file."""

    def quick(name: str) -> Any:
        value = getattr(args, name, None)
        return _QUICK_DEFAULTS[name] if value is None else value

    trend = {"kind": quick("trend"), "base": quick("base"), "noise": quick("noise")}
    if trend["kind"] == "drift":
        trend["per_minute"] = quick("per_minute")
    elif trend["kind"] == "excursion":
        trend |= {name: quick(key) for name, key in _EXCURSION_KEYS.items()}
    probes = [
        ProbeConfig(
            unit=unit,
            humidity_register=1,
            temperature=TrendConfig(**trend, seed=unit),
            humidity=TrendConfig(base=quick("humidity")),
        )
        for unit in range(1, quick("units") + 1)
    ]
    return ProbeBusScenario(probes=probes)


_EXCURSION_KEYS = {"peak": "peak", "start_s": "start", "ramp_s": "ramp", "hold_s": "hold"}


# --- scenario files -----------------------------------------------------------------------


class ProbeConfig(BaseModel):
    """One ``[[probes]]`` table: where the probe sits on the bus and what it shows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit: int = Field(ge=1, le=247)
    temperature_register: int = Field(default=0, ge=0, le=0xFFFF)
    humidity_register: int | None = Field(default=None, ge=0, le=0xFFFF)
    table: Table = "holding"
    scale: float = Field(default=0.1, allow_inf_nan=False)
    signed: bool = True
    temperature: TrendConfig
    humidity: TrendConfig = TrendConfig(base=55.0)
    faults: list[SensorFaultConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        self.to_probe()  # SimulatedProbe's own checks (shared registers, scale 0)
        return self

    def to_probe(self) -> SimulatedProbe:
        return SimulatedProbe(
            self.unit,
            self.temperature_register,
            self.humidity_register,
            self.temperature.to_scenario(),
            humidity=self.humidity.to_scenario(),
            table=self.table,
            scale=self.scale,
            signed=self.signed,
            faults=tuple(fault.to_fault() for fault in self.faults),
        )


class ProbeBusScenario(BaseModel):
    """A probe scenario file: the bus's line faults, unplug schedule and probes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    baudrate: int = Field(default=9600, ge=1)
    faults: LineFaultsConfig = LineFaultsConfig()
    unplug: ScheduleConfig | None = None
    """When the adapter is out: unplugged at each window's start, back at its end."""
    probes: list[ProbeConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_units(self) -> Self:
        units = [probe.unit for probe in self.probes]
        if len(set(units)) != len(units):
            raise ValueError(f"unit ids must be unique on a bus, got {units}")
        return self

    def to_probes(self) -> list[SimulatedProbe]:
        return [probe.to_probe() for probe in self.probes]

    def simulator(self, link: Path | None = None) -> ProbeSimulator:
        return ProbeSimulator(
            self.to_probes(), link=link, baudrate=self.baudrate, faults=self.faults.to_faults()
        )


def load_scenario(path: Path) -> ProbeBusScenario:
    """Read and validate a probe scenario file; ConfigFileError names the file and key."""
    return load_toml_model(path, ProbeBusScenario)


def describe(probes: list[SimulatedProbe]) -> str:
    """The register map line: ``units 1-2: temperature holding register 0, ...``."""
    maps = {probe.register_map() for probe in probes}
    units = [probe.unit for probe in probes]
    if len(maps) == 1 and units == list(range(units[0], units[0] + len(units))):
        which = f"unit {units[0]}" if len(units) == 1 else f"units {units[0]}-{units[-1]}"
        return f"{which}: {maps.pop()}"
    return "; ".join(f"unit {probe.unit}: {probe.register_map()}" for probe in probes)


async def _serve(scenario: ProbeBusScenario, args: argparse.Namespace, stop: asyncio.Event) -> None:
    link = args.link
    async with scenario.simulator(link) as simulator:
        print(link if link is not None else simulator.device_path)
        print(describe(list(simulator.probes)), flush=True)
        unplugging = None
        if scenario.unplug is not None:
            schedule = scenario.unplug.to_schedule()
            unplugging = asyncio.create_task(_follow_unplug_schedule(simulator, schedule, stop))
        await wait_until_stopped(stop, args.duration)
        if unplugging is not None:
            await unplugging


async def _follow_unplug_schedule(
    simulator: ProbeSimulator, schedule: Schedule, stop: asyncio.Event
) -> None:
    """Pull and replug the adapter as the schedule says, checking ten times a second."""
    while not stop.is_set():
        out = schedule.window_start(simulator.elapsed()) is not None
        if out and not simulator.unplugged:
            print("unplugged", flush=True)
            await simulator.unplug()
        elif not out and simulator.unplugged:
            await simulator.replug()
            print("plugged in again", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.1)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
    return value


def _non_negative(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _unit_count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 247:
        raise argparse.ArgumentTypeError(f"must be 1..247 (Modbus unit ids), not {text}")
    return value
