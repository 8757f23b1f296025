"""``postedge sim lockboard``: simulated parcel-locker lock boards on a pty.

The first stdout line is the serial port to connect to, so a script can start the
simulator and read one line to know where it is; one line per board follows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import sys
from pathlib import Path

from contracts.configfile import ConfigFileError
from firmware_bridge.sim.lockboard import DEFAULT_SCENARIO, LockboardSim, load_scenario

_DESCRIPTION = """\
Simulate parcel-locker lock boards on one RS-485 bus, over a pseudo-terminal.

Boards speak the common 5-byte XOR frame family (open 8A board lock 11 XOR, status
80 board lock 33 XOR, all doors 80 board 00 33 XOR, all items 90 board 00 33 XOR,
door reports 81 board lock state XOR); see docs/devices/lockboard.md. Each board
answers only its own address.

Prints the serial port to connect to as the first line (the --link path if given),
then one line per board, and serves until interrupted (Ctrl-C, SIGTERM) or
--duration ends.

Without --scenario: board 1 (24 locks, parcels in 1-3, lock 24 jammed, reports door
changes) and board 2 (24 locks, a parcel in 5, no reports); a person closes each door
10 s after it opened and takes the parcel. A scenario file (TOML) declares boards,
people, timed actions (close, force_open, remove_item, insert_item, unplug, replug)
and line faults (drop, corrupt, garbage, duplicate, stall); see
firmware_bridge/sim/scenarios/lockboard.toml.
"""


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``lockboard`` subcommand to the ``postedge sim`` subparsers."""
    parser = subparsers.add_parser(
        "lockboard",
        help="simulate parcel-locker lock boards (RS-485) on a pty",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--scenario",
        type=Path,
        metavar="FILE",
        help="scenario file (TOML): boards, actions over time, faults "
        "(default: the built-in two-board scenario)",
    )
    parser.add_argument(
        "--link",
        type=Path,
        metavar="PATH",
        help="also make PATH a symlink to the port, a stable name that survives unplug/replug",
    )
    parser.add_argument(
        "--duration",
        type=_positive,
        metavar="S",
        help="stop after S seconds (default: run until interrupted)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted or ``--duration`` ends; 0 on a clean stop."""
    try:
        scenario = DEFAULT_SCENARIO if args.scenario is None else load_scenario(args.scenario)
    except ConfigFileError as exc:
        print(f"postedge sim lockboard: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(LockboardSim(scenario, link=args.link), args))
    except OSError as exc:
        print(f"postedge sim lockboard: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(simulator: LockboardSim, args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with simulator:
        print(simulator.device_path, flush=True)
        for board in simulator.scenario.boards:
            print(board.describe())
        sys.stdout.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=args.duration)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value
