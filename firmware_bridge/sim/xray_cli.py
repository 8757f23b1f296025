"""``postedge sim xray``: a simulated X-ray security machine over TCP, and its scenario files.

The first stdout line is ``host:port`` to connect to, so a script can start the simulator
and read one line to know where it is; the second line describes the machine.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from contracts.configfile import ConfigFileError, load_toml_model
from firmware_bridge.sim.faults import LineFaultsConfig
from firmware_bridge.sim.runner import add_listen_options, run_command, wait_until_stopped
from firmware_bridge.sim.xray import (
    DEFAULT_SCENARIO,
    SimRecord,
    Verdict,
    XrayScenario,
    XraySimulator,
)

_DESCRIPTION = """\
Simulate an X-ray security machine that streams one XR1 record per screened parcel over TCP.

Prints host:port to connect to as the first line, then the machine's boot number, and
serves until interrupted (Ctrl-C, SIGTERM) or --duration ends. The machine is the TCP
server; the host acknowledges each record by its sequence number, and the machine sends
unacknowledged records again after a timeout or a reconnection. The line protocol is in
docs/devices/xray.md. Without --scenario, five parcels are screened over seven seconds
(three PASS, one SUSPECT, one FAIL).
"""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MachineConfig(_Model):
    """The ``[machine]`` table."""

    boot: int | None = Field(default=None, ge=0, le=0xFFFFFFFF)
    heartbeat_s: float = Field(default=5.0, gt=0)
    ack_timeout_s: float = Field(default=2.0, gt=0)


class RecordConfig(_Model):
    """One ``[[records]]`` table."""

    at_s: float = Field(ge=0)
    waybill: str
    verdict: Verdict
    operator: str
    image: str


class ScenarioConfig(_Model):
    """An X-ray scenario file (TOML): ``[machine]``, ``[[records]]`` and ``[faults]``."""

    machine: MachineConfig = MachineConfig()
    records: list[RecordConfig] = Field(min_length=1)
    faults: LineFaultsConfig = LineFaultsConfig()

    def to_scenario(self) -> XrayScenario:
        return XrayScenario(
            records=tuple(SimRecord(**record.model_dump()) for record in self.records),
            boot=self.machine.boot,
            heartbeat_s=self.machine.heartbeat_s,
            ack_timeout_s=self.machine.ack_timeout_s,
            faults=self.faults.to_faults(),
        )


def load_scenario(path: Path) -> XrayScenario:
    """Read a scenario file; raise :class:`ConfigFileError` naming the file."""
    config = load_toml_model(path, ScenarioConfig)
    try:
        return config.to_scenario()
    except (ValueError, TypeError) as exc:  # what only the record checks (a waybill, '|')
        raise ConfigFileError(f"{path}: {exc}") from None


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``xray`` subcommand to the ``postedge sim`` subparsers."""
    parser = subparsers.add_parser(
        "xray",
        help="simulate an X-ray security machine over TCP",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_listen_options(
        parser,
        scenario_help="scenario file (TOML: [machine], [[records]], [faults]); "
        "example: firmware_bridge/sim/scenarios/xray.toml",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted or ``--duration`` ends; 0 on a clean stop."""
    return run_command(
        "xray",
        lambda: DEFAULT_SCENARIO if args.scenario is None else load_scenario(args.scenario),
        lambda scenario, stop: _serve(scenario, args, stop),
    )


async def _serve(scenario: XrayScenario, args: argparse.Namespace, stop: asyncio.Event) -> None:
    async with XraySimulator(scenario, host=args.host, port=args.port) as simulator:
        host, port = simulator.address
        last = max(record.at_s for record in scenario.records)
        print(f"{host}:{port}")
        print(
            f"boot {simulator.boot}: {_count(len(scenario.records), 'record')} over {last:g} s, "
            f"heartbeat every {scenario.heartbeat_s:g} s",
            flush=True,
        )
        await wait_until_stopped(stop, args.duration)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
