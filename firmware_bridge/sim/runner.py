"""What every ``postedge sim <kind>`` command shares: its options, exit codes and stopping.

A kind's module keeps what is its own (description, scenario, the lines it prints) and
leaves the rest here::

    def run(args: argparse.Namespace) -> int:
        return run_command(
            "scanner",
            lambda: DEFAULT_SCENARIO if args.scenario is None else load_scenario(args.scenario),
            lambda scenario, stop: _serve(scenario, args, stop),
        )

    async def _serve(scenario: Scenario, args: argparse.Namespace, stop: asyncio.Event) -> None:
        async with Simulator(scenario, link=args.link) as simulator:
            print(simulator.device_path, flush=True)  # the first line: where to connect
            await wait_until_stopped(stop, args.duration)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from contracts.configfile import ConfigFileError

S = TypeVar("S")

LINK_TO_PORT = "also make PATH a symlink to the port, a stable name to configure"


def positive_float(text: str) -> float:
    """An argparse type: a finite number more than 0 (a duration in seconds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number more than 0, not {text}")
    return value


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535, not {text}")
    return value


def add_link_options(
    parser: argparse.ArgumentParser, *, scenario_help: str, link_help: str = LINK_TO_PORT
) -> None:
    """``--scenario FILE``, ``--link PATH`` and ``--duration S``: a simulator on a local path."""
    _add_scenario_option(parser, scenario_help)
    parser.add_argument("--link", type=Path, metavar="PATH", help=link_help)
    _add_duration_option(parser)


def add_listen_options(parser: argparse.ArgumentParser, *, scenario_help: str) -> None:
    """``--scenario FILE``, ``--host``, ``--port N`` and ``--duration S``: a TCP simulator."""
    _add_scenario_option(parser, scenario_help)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=port_number,
        default=0,
        metavar="N",
        help="TCP port to listen on; 0 picks a free one (default: %(default)s)",
    )
    _add_duration_option(parser)


def _add_scenario_option(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--scenario", type=Path, metavar="FILE", help=text)


def _add_duration_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration",
        type=positive_float,
        metavar="S",
        help="stop after S seconds (default: run until interrupted)",
    )


def run_command(
    kind: str,
    load: Callable[[], S],
    serve: Callable[[S, asyncio.Event], Awaitable[None]],
) -> int:
    """Load the scenario, then serve it until stopped; the command's exit status.

    ``serve`` gets the scenario and an event that SIGINT and SIGTERM set, installed before
    it starts so a signal sent as soon as the first line appears still stops it cleanly.
    A :class:`ConfigFileError` from ``load`` exits 2 (as every postedge config error), an
    :class:`OSError` while serving exits 1, each with one ``postedge sim <kind>:`` line
    on stderr; a clean stop exits 0.
    """
    try:
        scenario = load()
    except ConfigFileError as exc:
        print(f"postedge sim {kind}: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve_until_signalled(serve, scenario))
    except OSError as exc:
        print(f"postedge sim {kind}: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve_until_signalled(
    serve: Callable[[S, asyncio.Event], Awaitable[None]], scenario: S
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await serve(scenario, stop)


async def wait_until_stopped(stop: asyncio.Event, duration: float | None) -> None:
    """Wait for ``stop`` or, if given, ``duration`` seconds from now; ``stop`` is set after."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=duration)
    stop.set()
