"""The DS18B20 driver against its simulator: real files in a sysfs-like directory.

Scenarios run on a fake clock and the simulator writes only when told (``update()``), so
every read has one exact expected value. Nothing here waits by sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import TypeVar

import pytest

from contracts import TemperatureBody
from firmware_bridge.errors import DeviceProtocolError, DeviceTimeout, DeviceUnavailable
from firmware_bridge.probes.ds18b20 import Ds18b20, encode_w1_slave, parse_w1_slave, sensor_ids
from firmware_bridge.sim.ds18b20 import Ds18b20Simulator, SimulatedDs18b20, W1Fault, reading_file
from firmware_bridge.sim.sensor_faults import Scenario, Schedule, SensorFault
from tests.helpers import SIM_CLI, FakeClock, run_async

pytestmark = pytest.mark.hil

T = TypeVar("T")
START = 500.0
SENSOR = "28-0316a2795eff"
OTHER = "28-0416b3e58aff"
DRIVER_LOG = "firmware_bridge.probes.ds18b20"


def expected(scenario: Scenario, elapsed_s: float) -> float:
    """What the kernel reports for the scenario's value: 12-bit steps, t= truncated."""
    return parse_w1_slave_value(scenario.value_at(elapsed_s))


def parse_w1_slave_value(celsius: float) -> float:
    return parse_w1_slave(encode_w1_slave(reading_file(celsius)))


async def read_at(
    sim: Ds18b20Simulator, clock: FakeClock, sensor: Ds18b20, elapsed_s: float
) -> TemperatureBody:
    clock.at(elapsed_s)
    sim.update()
    return await sensor.read()


def test_readings_follow_each_sensors_scenario(tmp_path: Path) -> None:
    chilled = Scenario.drift(3.0, 6.0, noise=0.3, seed=4)
    frozen = Scenario.excursion(-18.0, -9.0, start_s=10, ramp_s=10, hold_s=10)
    sims = [SimulatedDs18b20(SENSOR, chilled), SimulatedDs18b20(OTHER, frozen)]
    clock = FakeClock(START)
    times = (0, 15, 25, 47.5)

    async def body() -> tuple[list[float], list[float], list[str]]:
        async with Ds18b20Simulator(sims, base=tmp_path, clock=clock, refresh_s=None) as sim:
            ids = sensor_ids(sim.base)
            a = Ds18b20(SENSOR, probe="locker-3", base=sim.base)
            b = Ds18b20(OTHER, base=sim.base)
            first, second = [], []
            for t in times:
                first.append((await read_at(sim, clock, a, t)).celsius)
                second.append((await b.read()).celsius)
            assert a.stats == {"readings": 4}
            assert (await a.read()).probe == "locker-3"
        return first, second, ids

    first, second, ids = run_async(body())
    assert ids == [SENSOR, OTHER]
    assert first == [expected(chilled, t) for t in times]
    assert second == [-18.0, -13.5, -9.0, -18.0]
    assert not any(tmp_path.iterdir())  # the simulator cleans up what it wrote


WIRE_FAULTS = {
    "crc_no": (DeviceProtocolError, "bad_crc", "CRC check failed"),
    "bad_crc": (DeviceProtocolError, "bad_crc", "CRC check failed"),
    "power_on": (DeviceProtocolError, "power_on", "85 °C power-on"),
    "disconnected": (DeviceTimeout, "disconnected", "disconnected"),
}


@pytest.mark.parametrize("kind", list(WIRE_FAULTS))
def test_wire_faults_are_counted_logged_once_and_never_readings(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    error, counter, match = WIRE_FAULTS[kind]
    scenario = Scenario.drift(4.0, 3.0)
    fault = W1Fault(kind, Schedule(start_s=10, duration_s=10))  # type: ignore[arg-type]
    clock = FakeClock(START)

    async def body() -> list[float]:
        async with Ds18b20Simulator(
            [SimulatedDs18b20(SENSOR, scenario, w1_faults=(fault,))], clock=clock, refresh_s=None
        ) as sim:
            sensor = Ds18b20(SENSOR, base=sim.base)
            good = [(await read_at(sim, clock, sensor, 0)).celsius]
            for t in (10, 12, 19.9):
                with pytest.raises(error, match=match):
                    await read_at(sim, clock, sensor, t)
            good.append((await read_at(sim, clock, sensor, 20)).celsius)
            assert sensor.stats == {"readings": 2, counter: 3}
            assert sim.faults == {kind: 3}
        return good

    with caplog.at_level(logging.INFO, logger=DRIVER_LOG):
        assert run_async(body()) == [expected(scenario, 0), expected(scenario, 20)]
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == DRIVER_LOG]
    assert len(messages) == 2, messages
    assert messages[0][0] == "WARNING"
    assert match in messages[0][1]
    assert SENSOR in messages[0][1]
    assert messages[1] == ("INFO", f"DS18B20 {SENSOR}: working again after {counter}")


def test_stuck_and_spiking_values_inside_the_range_are_passed_on() -> None:
    """Judging them is the gateway's cold-chain engine's job: it sees the whole series."""
    scenario = Scenario.drift(2.0, 6.0)
    faults = (
        SensorFault("stuck", Schedule(start_s=10, duration_s=20)),
        SensorFault("spike", Schedule(start_s=40, duration_s=1), delta=25.0),
    )
    clock = FakeClock(START)

    async def body() -> list[float]:
        sensors = [SimulatedDs18b20(SENSOR, scenario, faults=faults)]
        async with Ds18b20Simulator(sensors, clock=clock, refresh_s=None) as sim:
            sensor = Ds18b20(SENSOR, base=sim.base)
            return [(await read_at(sim, clock, sensor, t)).celsius for t in (5, 10, 20, 29, 40, 41)]

    assert run_async(body()) == [
        expected(scenario, 5),
        expected(scenario, 10),
        expected(scenario, 10),
        expected(scenario, 10),
        parse_w1_slave_value(scenario.value_at(40) + 25.0),
        expected(scenario, 41),
    ]


@pytest.mark.parametrize("celsius", [300.0, -90.0])
def test_out_of_range_values_are_implausible_never_readings(celsius: float) -> None:
    fault = SensorFault("out_of_range", Schedule(start_s=5, duration_s=5), value=celsius)
    clock = FakeClock(START)

    async def body() -> Ds18b20:
        sensors = [SimulatedDs18b20(SENSOR, Scenario.steady(4.0), faults=(fault,))]
        async with Ds18b20Simulator(sensors, clock=clock, refresh_s=None) as sim:
            sensor = Ds18b20(SENSOR, base=sim.base)
            for t in (5, 9):
                with pytest.raises(DeviceProtocolError, match="outside the DS18B20's"):
                    await read_at(sim, clock, sensor, t)
            assert (await read_at(sim, clock, sensor, 10)).celsius == 4.0
            return sensor

    assert run_async(body()).stats == {"implausible": 2, "readings": 1}


def test_a_silent_sensor_vanishes_and_comes_back(tmp_path: Path) -> None:
    fault = SensorFault("silent", Schedule(start_s=5, duration_s=5))
    clock = FakeClock(START)

    async def body() -> Ds18b20:
        sensors = [
            SimulatedDs18b20(SENSOR, Scenario.steady(-20.5), faults=(fault,)),
            SimulatedDs18b20(OTHER, Scenario.steady(3.0)),
        ]
        async with Ds18b20Simulator(sensors, base=tmp_path, clock=clock, refresh_s=None) as sim:
            sensor = Ds18b20(SENSOR, base=sim.base)
            assert (await read_at(sim, clock, sensor, 0)).celsius == -20.5
            with pytest.raises(DeviceUnavailable, match="sensor not on the bus"):
                await read_at(sim, clock, sensor, 5)
            assert sensor_ids(sim.base) == [OTHER]
            assert (await read_at(sim, clock, sensor, 10)).celsius == -20.5
            assert sensor_ids(sim.base) == [SENSOR, OTHER]
            return sensor

    assert run_async(body()).stats == {"readings": 2, "unavailable": 1}


def test_a_read_the_kernel_holds_too_long_times_out(tmp_path: Path) -> None:
    """A FIFO with no writer blocks the read in its thread, as a hung 1-wire bus does."""
    (tmp_path / SENSOR).mkdir()
    fifo = tmp_path / SENSOR / "w1_slave"
    os.mkfifo(fifo)

    async def body() -> Ds18b20:
        sensor = Ds18b20(SENSOR, base=tmp_path, timeout=0.2)
        try:
            with pytest.raises(DeviceTimeout, match=r"no answer within 0\.2 s"):
                await sensor.read()
        finally:
            # Release the blocked thread: a writer that closes at once gives it EOF.
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        return sensor

    assert run_async(body()).stats == {"timeouts": 1}


def test_atomic_rewrites_never_show_a_torn_file() -> None:
    """The simulator rewrites as fast as it can while the driver reads in its thread."""
    scenario = Scenario.drift(-30.0, 600.0, noise=0.5, seed=3)

    async def body() -> Ds18b20:
        sensors = [SimulatedDs18b20(SENSOR, scenario)]
        async with Ds18b20Simulator(sensors, refresh_s=0.0005) as sim:
            sensor = Ds18b20(SENSOR, base=sim.base)
            for _ in range(150):
                assert -55 <= (await sensor.read()).celsius <= 125
            return sensor

    assert run_async(body()).stats == {"readings": 150}


def test_simulator_cli_serves_a_directory_a_driver_reads_and_stops_cleanly(tmp_path: Path) -> None:
    scenario = tmp_path / "w1.toml"
    scenario.write_text(
        f'refresh_s = 0.05\n[[sensors]]\nid = "{SENSOR}"\ntemperature = {{ base = -18.25 }}\n'
    )
    link = tmp_path / "w1"

    async def body() -> tuple[list[str], TemperatureBody, int, bytes]:
        process = await asyncio.create_subprocess_exec(
            *SIM_CLI, "ds18b20", "--scenario", str(scenario),
            "--link", str(link), "--duration", "30",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None
        try:
            lines = [(await process.stdout.readline()).decode().strip() for _ in range(2)]
            reading = await Ds18b20(SENSOR, base=Path(lines[0])).read()
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = await process.communicate()
        assert process.returncode is not None
        return lines, reading, process.returncode, stderr

    lines, reading, returncode, stderr = run_async(body())
    assert lines == [str(link), SENSOR]
    assert reading == TemperatureBody(probe=SENSOR, celsius=-18.25)
    assert returncode == 0, stderr.decode()
    assert not link.exists()


def test_simulator_cli_reports_a_bad_scenario_with_exit_2(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text("sensors = []\n")

    async def body() -> tuple[int, bytes]:
        process = await asyncio.create_subprocess_exec(
            *SIM_CLI, "ds18b20", "--scenario", str(scenario),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await process.communicate()
        assert process.returncode is not None
        return process.returncode, stderr

    returncode, stderr = run_async(body())
    assert returncode == 2
    assert f"{scenario}: sensors: List should have at least 1 item" in stderr.decode()
