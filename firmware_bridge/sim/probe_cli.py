"""``postedge sim probe``: simulated Modbus RTU temperature probes on a pty, for people and scripts.

The first stdout line is the path to connect to, so a script can start the simulator and
read one line to know where it is; the second line describes the register map.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import sys
from pathlib import Path

from firmware_bridge.sim.probe import SCENARIO_KINDS, ProbeSimulator, Scenario, SimulatedProbe

_DESCRIPTION = """\
Simulate Modbus RTU temperature/humidity probes on one RS-485 bus, over a pseudo-terminal.

Prints the serial port to connect to as the first line (the --link path if given), then
the register map, and serves until interrupted (Ctrl-C, SIGTERM) or --duration ends.
Each probe has temperature in holding register 0 and relative humidity in holding
register 1, both int16 in tenths (scale 0.1, signed); unit ids run 1..N. Units other
than those stay silent, as on a real bus.
"""


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``probe`` subcommand to the ``postedge sim`` subparsers."""
    parser = subparsers.add_parser(
        "probe",
        help="simulate Modbus RTU temperature probes on a pty",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--scenario",
        choices=SCENARIO_KINDS,
        default="steady",
        help="steady: stay at --base; drift: move --per-minute from --base; "
        "excursion: ramp from --base to --peak and back (default: %(default)s)",
    )
    parser.add_argument(
        "--base",
        type=_finite,
        default=4.0,
        metavar="C",
        help="base temperature in °C (default: %(default)s)",
    )
    parser.add_argument(
        "--peak",
        type=_finite,
        default=12.0,
        metavar="C",
        help="excursion peak in °C (default: %(default)s)",
    )
    parser.add_argument(
        "--per-minute",
        type=_finite,
        default=0.5,
        metavar="C",
        help="drift in °C per minute (default: %(default)s)",
    )
    parser.add_argument(
        "--start",
        type=_non_negative,
        default=10.0,
        metavar="S",
        help="excursion starts after S seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--ramp",
        type=_non_negative,
        default=30.0,
        metavar="S",
        help="excursion ramp up and down takes S seconds each (default: %(default)s)",
    )
    parser.add_argument(
        "--hold",
        type=_non_negative,
        default=60.0,
        metavar="S",
        help="excursion stays at the peak for S seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--noise",
        type=_non_negative,
        default=0.0,
        metavar="C",
        help="deterministic noise amplitude in °C (default: %(default)s)",
    )
    parser.add_argument(
        "--humidity",
        type=_finite,
        default=55.0,
        metavar="PCT",
        help="relative humidity served, %%RH (default: %(default)s)",
    )
    parser.add_argument(
        "--units",
        type=_unit_count,
        default=1,
        metavar="N",
        help="probes on the bus, unit ids 1..N (default: %(default)s)",
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
    """Serve until interrupted or ``--duration`` ends; 0 on a clean stop."""
    try:
        asyncio.run(_serve(args))
    except OSError as exc:
        print(f"postedge sim probe: {exc}", file=sys.stderr)
        return 1
    return 0


def probes_from_args(args: argparse.Namespace) -> list[SimulatedProbe]:
    """The simulated probes the arguments ask for; unit ``n`` gets noise seed ``n``."""
    return [
        SimulatedProbe(
            unit,
            temperature_register=0,
            humidity_register=1,
            scenario=_scenario(args, seed=unit),
            humidity=Scenario.steady(args.humidity),
        )
        for unit in range(1, args.units + 1)
    ]


def _scenario(args: argparse.Namespace, seed: int) -> Scenario:
    noise = {"noise": args.noise, "seed": seed}
    if args.scenario == "drift":
        return Scenario.drift(args.base, args.per_minute, **noise)
    if args.scenario == "excursion":
        return Scenario.excursion(args.base, args.peak, args.start, args.ramp, args.hold, **noise)
    return Scenario.steady(args.base, **noise)


async def _serve(args: argparse.Namespace) -> None:
    probes = probes_from_args(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with ProbeSimulator(probes, link=args.link) as simulator:
        units = "unit 1" if len(probes) == 1 else f"units 1-{len(probes)}"
        print(args.link if args.link is not None else simulator.device_path)
        print(f"{units}: {probes[0].register_map()}", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=args.duration)


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


def _positive(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _unit_count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 247:
        raise argparse.ArgumentTypeError(f"must be 1..247 (Modbus unit ids), not {text}")
    return value
