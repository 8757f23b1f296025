"""``postedge sim sorter``: a simulated belt sorter PLC over Modbus TCP, and its scenario files.

The first stdout line is ``host:port`` to connect to, so a script can start the simulator
and read one line to know where it is; the second line describes the PLC.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from contracts.configfile import ConfigFileError, load_toml_model
from firmware_bridge.sim.faults import LineFaultsConfig
from firmware_bridge.sim.runner import add_listen_options, run_command, wait_until_stopped
from firmware_bridge.sim.sorter import (
    DEFAULT_SCENARIO,
    SimParcel,
    SorterScenario,
    SorterSimulator,
)
from firmware_bridge.sorter import registers as reg

_DESCRIPTION = """\
Simulate a belt sorter PLC over Modbus TCP on this machine.

Prints host:port to connect to as the first line, then the PLC's unit id and register
map, and serves until interrupted (Ctrl-C, SIGTERM) or --duration ends. Parcels arrive at
the induction point as the scenario says; the PLC posts each in its induction mailbox,
takes divert commands, and confirms each parcel as diverted, missed or recirculated. The
register map is in docs/devices/sorter.md. Without --scenario, five parcels arrive over
five seconds (a scan slot, a repeated transaction, a recirculation; chute 13 jammed).
"""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlcConfig(_Model):
    """The ``[plc]`` table."""

    unit: int = Field(default=1, ge=1, le=247)
    base_address: int = Field(default=0, ge=0, le=0xFFFF - reg.MAP_SIZE)
    chutes: int = Field(default=24, ge=1, le=0xFFFF)
    jammed_chutes: list[int] = []
    travel_s: float = Field(default=0.5, ge=0)
    decision_timeout_s: float = Field(default=5.0, ge=0)
    ack_timeout_s: float = Field(default=2.0, gt=0)


class ParcelConfig(_Model):
    """One ``[[parcels]]`` table."""

    at_s: float = Field(ge=0)
    transaction: int = Field(ge=0, le=0xFFFFFFFF)
    barcode: str | None = None
    scan_slot: int | None = Field(default=None, ge=0, le=0xFFFF)
    outcome: reg.Outcome | None = None
    repeat_induction: bool = False
    repeat_confirmation: bool = False


class ScenarioConfig(_Model):
    """A sorter scenario file (TOML): ``[plc]``, ``[[parcels]]`` and ``[faults]``."""

    plc: PlcConfig = PlcConfig()
    parcels: list[ParcelConfig] = Field(min_length=1)
    faults: LineFaultsConfig = LineFaultsConfig()

    def to_scenario(self) -> SorterScenario:
        plc = self.plc
        return SorterScenario(
            parcels=tuple(SimParcel(**parcel.model_dump()) for parcel in self.parcels),
            unit=plc.unit,
            base_address=plc.base_address,
            chutes=plc.chutes,
            jammed_chutes=frozenset(plc.jammed_chutes),
            travel_s=plc.travel_s,
            decision_timeout_s=plc.decision_timeout_s,
            ack_timeout_s=plc.ack_timeout_s,
            faults=self.faults.to_faults(),
        )


def load_scenario(path: Path) -> SorterScenario:
    """Read a scenario file; raise :class:`ConfigFileError` naming the file."""
    config = load_toml_model(path, ScenarioConfig)
    try:
        return config.to_scenario()
    except (ValueError, TypeError) as exc:  # what only the dataclasses check (e.g. a barcode)
        raise ConfigFileError(f"{path}: {exc}") from None


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``sorter`` subcommand to the ``postedge sim`` subparsers."""
    parser = subparsers.add_parser(
        "sorter",
        help="simulate a belt sorter PLC over Modbus TCP",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_listen_options(
        parser,
        scenario_help="scenario file (TOML: [plc], [[parcels]], [faults]); "
        "example: firmware_bridge/sim/scenarios/sorter.toml",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted or ``--duration`` ends; 0 on a clean stop."""
    return run_command(
        "sorter",
        lambda: DEFAULT_SCENARIO if args.scenario is None else load_scenario(args.scenario),
        lambda scenario, stop: _serve(scenario, args, stop),
    )


def describe(scenario: SorterScenario) -> str:
    """One line for people: unit, register range and what the scenario holds."""
    last = max((parcel.at_s for parcel in scenario.parcels), default=0.0)
    first, end = scenario.base_address, scenario.base_address + reg.MAP_SIZE - 1
    return (
        f"unit {scenario.unit}, holding registers {first}-{end}, chutes 1-{scenario.chutes}: "
        f"{_count(len(scenario.parcels), 'parcel')} over {last:g} s"
    )


async def _serve(scenario: SorterScenario, args: argparse.Namespace, stop: asyncio.Event) -> None:
    async with SorterSimulator(scenario, host=args.host, port=args.port) as simulator:
        host, port = simulator.address
        print(f"{host}:{port}")
        print(describe(scenario), flush=True)
        await wait_until_stopped(stop, args.duration)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
