"""``postedge sim lockboard``: simulated parcel-locker lock boards on a pty.

The first stdout line is the serial port to connect to, so a script can start the
simulator and read one line to know where it is; one line per board follows.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from firmware_bridge.sim.lockboard import (
    DEFAULT_SCENARIO,
    LockboardScenario,
    LockboardSim,
    load_scenario,
)
from firmware_bridge.sim.runner import add_link_options, run_command, wait_until_stopped

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
    add_link_options(
        parser,
        scenario_help="scenario file (TOML): boards, actions over time, faults "
        "(default: the built-in two-board scenario)",
        link_help="also make PATH a symlink to the port, a stable name that survives unplug/replug",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted or ``--duration`` ends; 0 on a clean stop."""
    return run_command(
        "lockboard",
        lambda: DEFAULT_SCENARIO if args.scenario is None else load_scenario(args.scenario),
        lambda scenario, stop: _serve(scenario, args, stop),
    )


async def _serve(
    scenario: LockboardScenario, args: argparse.Namespace, stop: asyncio.Event
) -> None:
    async with LockboardSim(scenario, link=args.link) as simulator:
        print(simulator.device_path, flush=True)
        for board in simulator.scenario.boards:
            print(board.describe())
        sys.stdout.flush()
        await wait_until_stopped(stop, args.duration)
