"""``postedge sim ds18b20``: simulated DS18B20 1-wire sensors as a sysfs-like directory.

The first stdout line is the directory to give the driver as its base (the --link path
if given), so a script can start the simulator and read one line to know where it is;
the second line lists the sensor ids.
"""

from __future__ import annotations

import argparse
import asyncio

from firmware_bridge.sim.ds18b20 import Ds18b20Scenario, Ds18b20Simulator, load_scenario
from firmware_bridge.sim.runner import add_link_options, run_command, wait_until_stopped

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
    add_link_options(
        parser,
        scenario_help="scenario file (TOML) with sensors, scenarios and faults (default: built in)",
        link_help="also make PATH a symlink to the directory, a stable base to configure",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run until interrupted or ``--duration`` ends; 0 on a clean stop, 2 on a bad scenario."""
    return run_command(
        "ds18b20",
        lambda: DEFAULT_SCENARIO if args.scenario is None else load_scenario(args.scenario),
        lambda scenario, stop: _serve(scenario, args, stop),
    )


async def _serve(scenario: Ds18b20Scenario, args: argparse.Namespace, stop: asyncio.Event) -> None:
    link = args.link
    simulator = Ds18b20Simulator(scenario.to_sensors(), link=link, refresh_s=scenario.refresh_s)
    async with simulator:
        print(link if link is not None else simulator.base)
        print(" ".join(sensor.sensor_id for sensor in simulator.sensors), flush=True)
        await wait_until_stopped(stop, args.duration)
