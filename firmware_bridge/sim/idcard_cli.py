"""``postedge sim idcard``: a simulated ID-card reader on a pty, standalone.

The first stdout line is the port to connect to, so a script can start the simulator and
read one line to know where it is; the second line says what the reader will answer.
"""

from __future__ import annotations

import argparse
import asyncio

from firmware_bridge.sim.idcard import (
    DEFAULT_SCENARIO,
    IdCardScenario,
    IdCardSimulator,
    load_scenario,
)
from firmware_bridge.sim.runner import add_link_options, run_command, wait_until_stopped

_DESCRIPTION = """\
Simulate an ID-card reader over a pseudo-terminal, speaking postedge's ID-card adapter
protocol (STX, length, payload, CRC-16/CCITT-FALSE, ETX; see docs/devices/idcard.md).
Real readers are driven through their vendors' SDKs; an adapter turns one into this.

Prints the serial port to connect to as the first line (the --link path if given), then
what the reader will answer, and runs until interrupted (Ctrl-C, SIGTERM) or --duration
ends.

The scenario file (TOML) lists steps: a card, no card, or a reader error, each for a
number of reads (mode per_read) or seconds (mode timeline), and line faults; see
firmware_bridge/sim/scenarios/idcard.toml. Without one, the reader shows the GB 11643
sample card for two reads, then no card, over and over.
"""


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``idcard`` subcommand to the ``postedge sim`` subparsers."""
    parser = subparsers.add_parser(
        "idcard",
        help="simulate an ID-card reader (adapter protocol) on a pty",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_link_options(
        parser, scenario_help="scenario file (TOML) with the answers and faults (default: built in)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run until interrupted or ``--duration`` ends; 0 on a clean stop, 2 on a bad scenario."""
    return run_command(
        "idcard",
        lambda: DEFAULT_SCENARIO if args.scenario is None else load_scenario(args.scenario),
        lambda scenario, stop: _serve(scenario, args, stop),
    )


async def _serve(scenario: IdCardScenario, args: argparse.Namespace, stop: asyncio.Event) -> None:
    async with IdCardSimulator(scenario, link=args.link) as simulator:
        print(simulator.device_path)
        print(f"idcard: {scenario.describe()}", flush=True)
        await wait_until_stopped(stop, args.duration)
