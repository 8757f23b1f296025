"""``postedge sim scanner``: a simulated serial barcode scanner on a pty, standalone.

The first stdout line is the port to connect to, so a script can start the simulator and
read one line to know where it is; the second line says how the scanner is set up.
"""

from __future__ import annotations

import argparse
import asyncio

from firmware_bridge.sim.runner import add_link_options, run_command, wait_until_stopped
from firmware_bridge.sim.scanner import (
    DEFAULT_SCENARIO,
    ScannerScenario,
    ScannerSimulator,
    load_scenario,
)

_DESCRIPTION = """\
Simulate a serial barcode scanner over a pseudo-terminal.

Prints the serial port to connect to as the first line (the --link path if given), then
the scanner's setup, and runs until interrupted (Ctrl-C, SIGTERM) or --duration ends.

Each code is one ASCII line: an optional AIM symbology identifier (]C0 Code 128, ]Q1 QR,
]E0 EAN-13, ...), the code, and a suffix (CR, LF, CRLF or TAB). A continuous scanner
sends its codes one after another; a triggered one answers each trigger command from
the host (Honeywell's SYN T CR by default) with the next code.

The scenario file (TOML) sets the codes, mode, suffix, AIM ids, trigger commands and
line faults; see firmware_bridge/sim/scenarios/scanner.toml. Without one, a continuous
Code 128/QR/EAN-13 scanner reads four codes a second apart, over and over, with CR
suffix and AIM ids. Codes sent before a driver opens the port are lost, as on a real line.
"""


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``scanner`` subcommand to the ``postedge sim`` subparsers."""
    parser = subparsers.add_parser(
        "scanner",
        help="simulate a serial barcode scanner on a pty",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_link_options(
        parser,
        scenario_help="scenario file (TOML) with codes, mode, suffix and faults "
        "(default: built in)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run until interrupted or ``--duration`` ends; 0 on a clean stop, 2 on a bad scenario."""
    return run_command(
        "scanner",
        lambda: DEFAULT_SCENARIO if args.scenario is None else load_scenario(args.scenario),
        lambda scenario, stop: _serve(scenario, args, stop),
    )


async def _serve(scenario: ScannerScenario, args: argparse.Namespace, stop: asyncio.Event) -> None:
    async with ScannerSimulator(scenario, link=args.link) as simulator:
        print(simulator.device_path)
        print(f"scanner: {scenario.describe()}", flush=True)
        await wait_until_stopped(stop, args.duration)
