"""``postedge sim scanner``: a simulated serial barcode scanner on a pty, standalone.

The first stdout line is the port to connect to, so a script can start the simulator and
read one line to know where it is; the second line says how the scanner is set up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from contracts.configfile import ConfigFileError
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
    parser.add_argument(
        "--scenario",
        type=Path,
        metavar="FILE",
        help="scenario file (TOML) with codes, mode, suffix and faults (default: built in)",
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
        print(f"postedge sim scanner: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(scenario, args.link, args.duration))
    except OSError as exc:
        print(f"postedge sim scanner: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(scenario: ScannerScenario, link: Path | None, duration: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with ScannerSimulator(scenario, link=link) as simulator:
        print(simulator.device_path)
        print(f"scanner: {scenario.describe()}", flush=True)
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
