"""The Modbus probe driver against its simulator, over real ptys joined by the null modem.

Scenarios run on a fake clock, so each read has one exact expected value. Fault tests use
short timeouts and no retries to stay fast; nothing here waits by sleeping.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from pymodbus.framer import FramerRTU

from contracts import TemperatureBody
from firmware_bridge.errors import DeviceProtocolError, DeviceTimeout, DeviceUnavailable
from firmware_bridge.nullmodem import Direction, PtyNullModem
from firmware_bridge.probes.modbus import (
    ModbusProbeSpec,
    ModbusRtuBus,
    RegisterSpec,
    decode_register,
    encode_register,
)
from firmware_bridge.sim.probe import ProbeSimulator, Scenario, SimulatedProbe
from tests.helpers import SIM_CLI, FakeClock, run_async

pytestmark = pytest.mark.hil

T = TypeVar("T")
START = 1000.0


def fast_bus(port: str | Path) -> ModbusRtuBus:
    """A bus that gives up quickly: fault tests wait out one short timeout, no retries."""
    return ModbusRtuBus(str(port), timeout=0.25, retries=0)


def served_value(scenario: Scenario, elapsed_s: float, spec: RegisterSpec) -> float:
    """What a probe shows for ``scenario`` at ``elapsed_s``: the value quantised to its register."""
    return decode_register(encode_register(scenario.value_at(elapsed_s), spec), spec)


def test_reads_follow_the_scenario_and_equal_the_served_log() -> None:
    scenario = Scenario.drift(-2.0, 3.0, noise=0.2, seed=5)
    probe = SimulatedProbe(1, 0, 1, scenario, humidity=Scenario.steady(72.5))
    clock = FakeClock(START)

    async def body() -> list[TemperatureBody]:
        async with (
            ProbeSimulator([probe], clock=clock) as sim,
            ModbusRtuBus(sim.device_path) as bus,
        ):
            readings = []
            for elapsed in (0, 30, 61.7, 600):
                clock.at(elapsed)
                readings.append(await bus.read(probe.probe_spec("cold-1")))
            assert sim.served == {1: [reading.celsius for reading in readings]}
            return readings

    readings = run_async(body())
    expected = [served_value(scenario, t, probe.temperature_spec) for t in (0, 30, 61.7, 600)]
    assert [reading.celsius for reading in readings] == expected
    assert expected[-1] > expected[0] + 25  # the drift really moved the reading
    assert {(reading.probe, reading.humidity) for reading in readings} == {("cold-1", 72.5)}


def test_two_units_on_one_bus_each_answer_with_their_own_values() -> None:
    chilled = SimulatedProbe(1, 0, 1, Scenario.steady(4.2), humidity=Scenario.steady(60.0))
    frozen = SimulatedProbe(7, 100, None, Scenario.steady(-18.5), table="input", scale=0.01)

    async def body() -> None:
        async with ProbeSimulator([chilled, frozen]) as sim, ModbusRtuBus(sim.device_path) as bus:
            for _ in range(3):
                assert await bus.read(chilled.probe_spec("c")) == TemperatureBody(
                    probe="c", celsius=4.2, humidity=60.0
                )
                assert await bus.read(frozen.probe_spec("f")) == TemperatureBody(
                    probe="f", celsius=-18.5
                )
            assert sim.served == {1: [4.2] * 3, 7: [-18.5] * 3}

    run_async(body())


def test_concurrent_reads_on_one_bus_are_serialised() -> None:
    """RS-485 is half-duplex: overlapping reads must queue, not interleave their frames."""
    probes = [SimulatedProbe(unit, 0, 1, Scenario.steady(unit / 10)) for unit in (1, 2, 3)]

    async def body() -> list[TemperatureBody]:
        async with ProbeSimulator(probes) as sim, ModbusRtuBus(sim.device_path) as bus:
            return await asyncio.gather(*(bus.read(p.probe_spec(f"p{p.unit}")) for p in probes))

    assert [reading.celsius for reading in run_async(body())] == [0.1, 0.2, 0.3]


def test_negative_temperatures_arrive_signed_through_an_excursion() -> None:
    scenario = Scenario.excursion(-25.3, -5.0, start_s=10, ramp_s=10, hold_s=10)
    probe = SimulatedProbe(3, 40, 41, scenario)
    clock = FakeClock(START)
    times = (0, 15, 25, 35, 50)

    async def body() -> list[float]:
        async with (
            ProbeSimulator([probe], clock=clock) as sim,
            ModbusRtuBus(sim.device_path) as bus,
        ):
            celsius = []
            for elapsed in times:
                clock.at(elapsed)
                celsius.append((await bus.read(probe.probe_spec("deep"))).celsius)
            return celsius

    assert run_async(body()) == [-25.3, -15.2, -5.0, -15.2, -25.3]


def test_unsigned_registers_are_read_unsigned() -> None:
    probe = SimulatedProbe(2, 0, None, Scenario.steady(4000.0), signed=False)

    async def body() -> float:
        async with ProbeSimulator([probe]) as sim, ModbusRtuBus(sim.device_path) as bus:
            return (await bus.read(probe.probe_spec("hot"))).celsius

    assert run_async(body()) == 4000.0


def flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


def flip_payload(data: bytes) -> bytes:
    return data[:3] + bytes([data[3] ^ 0x40]) + data[4:]


def with_crc(frame: bytes) -> bytes:
    return frame + FramerRTU.compute_CRC(frame).to_bytes(2, "big")


def as_input_register_answer(data: bytes) -> bytes:
    """A well-formed answer, but to a different function (04 instead of 03)."""
    return with_crc(data[:1] + b"\x04" + data[2:-2])


def one_register_fewer(data: bytes) -> bytes:
    """A well-formed answer with a register missing."""
    count = data[2] - 2
    return with_crc(data[:2] + bytes([count]) + data[3 : 3 + count])


GARBLED = "bad CRC or garbled"
SILENT = "no answer within"
CORRUPTIONS: dict[str, tuple[Direction, Callable[[bytes], bytes], type[Exception], str]] = {
    "answer-crc-flipped": (Direction.TO_DEVICE, flip_last, DeviceProtocolError, GARBLED),
    "answer-payload-flipped": (Direction.TO_DEVICE, flip_payload, DeviceProtocolError, GARBLED),
    "answer-truncated": (Direction.TO_DEVICE, lambda data: data[:-2], DeviceProtocolError, GARBLED),
    "answer-wrong-function": (
        Direction.TO_DEVICE,
        as_input_register_answer,
        DeviceProtocolError,
        "answered function 4 to a read of holding registers",
    ),
    "answer-register-missing": (
        Direction.TO_DEVICE,
        one_register_fewer,
        DeviceProtocolError,
        "asked for 2 registers, got 1",
    ),
    "answer-dropped": (Direction.TO_DEVICE, lambda data: b"", DeviceTimeout, SILENT),
    "request-dropped": (Direction.TO_SIM, lambda data: b"", DeviceTimeout, SILENT),
    "request-crc-flipped": (Direction.TO_SIM, flip_last, DeviceTimeout, SILENT),
}


@pytest.mark.parametrize("fault", list(CORRUPTIONS))
def test_line_faults_raise_bridge_errors_and_the_next_clean_read_works(fault: str) -> None:
    """A damaged frame never becomes a wrong value; the bus keeps working once the line is clean."""
    direction, damage, error, match = CORRUPTIONS[fault]
    probe = SimulatedProbe(1, 0, 1, Scenario.steady(-7.5))

    def manipulator(seen: Direction, data: bytes) -> bytes:
        return damage(data) if seen is direction else data

    async def body() -> None:
        async with ProbeSimulator([probe]) as sim, fast_bus(sim.device_path) as bus:
            sim.modem.set_manipulator(manipulator)
            with pytest.raises(error, match=match):
                await bus.read(probe.probe_spec("p"))
            sim.modem.set_manipulator(None)
            assert (await bus.read(probe.probe_spec("p"))).celsius == -7.5

    run_async(body())


def test_one_corrupted_answer_is_recovered_by_a_retry() -> None:
    probe = SimulatedProbe(1, 0, None, Scenario.drift(10.0, 60.0))
    clock = FakeClock(START)
    damaged: list[bytes] = []

    def corrupt_first_answer(direction: Direction, data: bytes) -> bytes:
        if direction is Direction.TO_DEVICE and not damaged:
            damaged.append(data)
            clock.at(1)  # the retry is served a second later, with a new value
            return flip_last(data)
        return data

    async def body() -> tuple[float, list[float]]:
        async with ProbeSimulator([probe], clock=clock) as sim:
            sim.modem.set_manipulator(corrupt_first_answer)
            async with ModbusRtuBus(sim.device_path, timeout=0.25, retries=1) as bus:
                reading = await bus.read(probe.probe_spec("p"))
            return reading.celsius, sim.served[1]

    celsius, served = run_async(body())
    assert served == [10.0, 11.0]
    assert celsius == 11.0  # the value of the answer that arrived intact, not the damaged one


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (ModbusProbeSpec("p", 1, RegisterSpec(5)), "illegal address"),
        (ModbusProbeSpec("p", 1, RegisterSpec(0, "input")), "illegal address"),
        (ModbusProbeSpec("p", 1, RegisterSpec(0), RegisterSpec(1, scale=10.0)), "implausible"),
    ],
)
def test_wrong_register_maps_are_protocol_errors(spec: ModbusProbeSpec, match: str) -> None:
    probe = SimulatedProbe(1, 0, 1, Scenario.steady(4.0))

    async def body() -> None:
        async with ProbeSimulator([probe]) as sim, fast_bus(sim.device_path) as bus:
            with pytest.raises(DeviceProtocolError, match=match):
                await bus.read(spec)

    run_async(body())


def test_a_unit_that_is_not_on_the_bus_times_out() -> None:
    probe = SimulatedProbe(1, 0, None, Scenario.steady(4.0))

    async def body() -> None:
        async with ProbeSimulator([probe]) as sim, fast_bus(sim.device_path) as bus:
            with pytest.raises(DeviceTimeout, match="unit 9"):
                await bus.read(ModbusProbeSpec("absent", 9, RegisterSpec(0)))
            assert sim.served == {1: []}

    run_async(body())


def test_bus_reopens_its_port_after_it_vanished_and_before_it_existed(tmp_path: Path) -> None:
    link = tmp_path / "ttyPROBE"
    probe = SimulatedProbe(1, 0, None, Scenario.steady(3.3))
    spec = probe.probe_spec("p")

    async def body() -> None:
        async with fast_bus(link) as bus:  # no port yet: not an error here
            with pytest.raises(DeviceUnavailable):
                await bus.read(spec)
            async with ProbeSimulator([probe], link=link):
                assert (await bus.read(spec)).celsius == 3.3
            assert not link.exists()
            with pytest.raises(DeviceUnavailable):
                await bus.read(spec)
            async with ProbeSimulator([probe], link=link) as again:
                assert (await bus.read(spec)).celsius == 3.3
                assert again.served == {1: [3.3]}

    run_async(body())


async def read_exactly(fd: int, count: int) -> bytes:
    """Wait for ``count`` bytes on a non-blocking fd."""
    loop = asyncio.get_running_loop()
    data = bytearray()
    done: asyncio.Future[bytes] = loop.create_future()

    def readable() -> None:
        data.extend(os.read(fd, count - len(data)))
        if len(data) >= count and not done.done():
            done.set_result(bytes(data))

    loop.add_reader(fd, readable)
    try:
        return await done
    finally:
        loop.remove_reader(fd)


def test_null_modem_relays_every_byte_value_unchanged_and_traces_it(tmp_path: Path) -> None:
    """Raw mode: no echo, no CR/LF mapping, no ^C, ^S or ^Q handling of binary frames."""
    link = tmp_path / "ttyNM"
    every_byte = bytes(range(256))
    traced: list[tuple[Direction, bytes]] = []

    async def body() -> tuple[bytes, bytes, bytes]:
        modem = PtyNullModem(
            link=link, trace=lambda direction, data: traced.append((direction, data))
        )
        async with modem:
            assert os.readlink(link) == modem.device_path
            device = os.open(link, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            sim = os.open(modem.sim_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            try:
                os.write(device, every_byte)
                to_sim = await read_exactly(sim, 256)
                os.write(sim, every_byte[::-1])
                to_device = await read_exactly(device, 256)
                modem.set_manipulator(lambda direction, data: data.upper())
                os.write(device, b"abc")
                manipulated = await read_exactly(sim, 3)
            finally:
                os.close(device)
                os.close(sim)
        assert not os.path.lexists(link)
        return to_sim, to_device, manipulated

    to_sim, to_device, manipulated = run_async(body())
    assert (to_sim, to_device, manipulated) == (every_byte, every_byte[::-1], b"ABC")
    assert b"".join(data for direction, data in traced if direction is Direction.TO_SIM) == (
        every_byte + b"ABC"
    )


def test_simulator_cli_prints_a_port_a_driver_can_read_and_stops_cleanly() -> None:
    async def body() -> tuple[list[str], TemperatureBody, int, bytes]:
        process = await asyncio.create_subprocess_exec(
            *SIM_CLI, "probe", "--units", "2", "--base", "-3.5",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None
        try:
            lines = [(await process.stdout.readline()).decode().strip() for _ in range(2)]
            async with ModbusRtuBus(lines[0]) as bus:
                reading = await bus.read(ModbusProbeSpec("p2", 2, RegisterSpec(0), RegisterSpec(1)))
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = await process.communicate()
        assert process.returncode is not None
        return lines, reading, process.returncode, stderr

    lines, reading, returncode, stderr = run_async(body())
    assert lines[0].startswith("/dev/pts/")
    assert lines[1] == (
        "units 1-2: temperature holding register 0, scale 0.1, signed; humidity holding register 1"
    )
    assert reading == TemperatureBody(probe="p2", celsius=-3.5, humidity=55.0)
    assert returncode == 0, stderr.decode()
