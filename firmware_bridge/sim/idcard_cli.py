"""``postedge sim idcard``: a simulated ID-card reader on a pty, standalone.

The first stdout line is the port to connect to, so a script can start the simulator and
read one line to know where it is; the second line says what the reader will answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from contracts.configfile import ConfigFileError
from firmware_bridge.sim.idcard import (
    DEFAULT_SCENARIO,
    IdCardScenario,
    IdCardSimulator,
    load_scenario,
)

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
    parser.add_argument(
        "--scenario",
        type=Path,
        metavar="FILE",
        help="scenario file (TOML) with the answers and faults (default: built in)",
    )
    parser.add_argument(
        "--link",
        type=Path,
        metavar="PATH",
        help="also make PATH a symlink to the port, a stable name to configure",
    )
    parser.add_argument(
        "--duration",
        type=_positive,
        metavar="S",
        help="stop after S seconds (default: run until interrupted)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run until interrupted or ``--duration`` ends; 0 on a clean stop, 2 on a bad scenario."""
    try:
        scenario = DEFAULT_SCENARIO if args.scenario is None else load_scenario(args.scenario)
    except ConfigFileError as exc:
        print(f"postedge sim idcard: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(scenario, args.link, args.duration))
    except OSError as exc:
        print(f"postedge sim idcard: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(scenario: IdCardScenario, link: Path | None, duration: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with IdCardSimulator(scenario, link=link) as simulator:
        print(simulator.device_path)
        print(f"idcard: {scenario.describe()}", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=duration)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value
