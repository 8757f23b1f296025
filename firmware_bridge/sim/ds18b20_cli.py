"""``postedge sim ds18b20``: simulated DS18B20 1-wire sensors as a sysfs-like directory.

The first stdout line is the directory to give the driver as its base (the --link path
if given), so a script can start the simulator and read one line to know where it is;
the second line lists the sensor ids.
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
from firmware_bridge.sim.ds18b20 import Ds18b20Scenario, Ds18b20Simulator, load_scenario

_DESCRIPTION = """\
Simulate DS18B20 temperature sensors on a Linux 1-wire bus, as files laid out like
/sys/bus/w1/devices: one 28-xxxxxxxxxxxx/w1_slave file per sensor, in the kernel's format
(the scratchpad with its CRC verdict, then t= in millidegrees).

Prints the directory to use as the driver's base as the first line (the --link path if
given), then the sensor ids, and rewrites the files every refresh_s seconds until
interrupted (Ctrl-C, SIGTERM) or --duration ends. The directory is a new temporary one,
removed on exit.

The scenario file (TOML; see firmware_bridge/sim/scenarios/ds18b20.toml) sets each
sensor's id, temperature scenario (steady, drift or excursion), sensor faults (stuck,
spike, out_of_range, silent: the sensor's directory vanishes) and 1-wire faults (crc_no,
bad_crc, power_on: the 85 °C reset value, disconnected: an all-ones scratchpad). Without
one, a chilled sensor at 4 °C and a frozen one at -18 °C, both slightly noisy.
"""

DEFAULT_SCENARIO = Ds18b20Scenario.model_validate(
    {
        "sensors": [
            {
                "id": "28-00000a1b2c3d",
                "temperature": {"kind": "steady", "base": 4.0, "noise": 0.2, "seed": 1},
            },
            {
                "id": "28-00000a1b2c3e",
                "temperature": {"kind": "steady", "base": -18.0, "noise": 0.3, "seed": 2},
            },
        ]
    }
)


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``ds18b20`` subcommand to the ``postedge sim`` subparsers."""
    parser = subparsers.add_parser(
        "ds18b20",
        help="simulate DS18B20 1-wire temperature sensors as sysfs w1_slave files",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--scenario",
        type=Path,
        metavar="FILE",
        help="scenario file (TOML) with sensors, scenarios and faults (default: built in)",
    )
    parser.add_argument(
        "--link",
        type=Path,
        metavar="PATH",
        help="also make PATH a symlink to the directory, a stable base to configure",
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
        print(f"postedge sim ds18b20: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(scenario, args.link, args.duration))
    except OSError as exc:
        print(f"postedge sim ds18b20: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(scenario: Ds18b20Scenario, link: Path | None, duration: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    simulator = Ds18b20Simulator(scenario.to_sensors(), link=link, refresh_s=scenario.refresh_s)
    async with simulator:
        print(link if link is not None else simulator.base)
        print(" ".join(sensor.sensor_id for sensor in simulator.sensors), flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=duration)


def _positive(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number more than 0, not {text}")
    return value
