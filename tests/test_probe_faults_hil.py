"""Sensor and line faults on the Modbus probe bus: the driver recovers, counts, logs once,
and never passes on a damaged or impossible value.

The pure parts (the driver's answer finder, scenario files) come first; the
hardware-in-loop tests run the driver against the simulator over real ptys, on a fake
clock so every read has one exact expected value. Nothing waits by sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU

from contracts import TemperatureBody
from contracts.configfile import ConfigFileError
from firmware_bridge.errors import (
    BridgeError,
    DeviceProtocolError,
    DeviceTimeout,
    DeviceUnavailable,
)
from firmware_bridge.probes.modbus import (
    ModbusRtuBus,
    RegisterSpec,
    decode_register,
    encode_register,
    find_answer,
)
from firmware_bridge.sim.faults import NO_FAULTS, LineFaults
from firmware_bridge.sim.probe import ProbeSimulator, Scenario, SimulatedProbe
from firmware_bridge.sim.probe_cli import load_scenario
from firmware_bridge.sim.sensor_faults import Schedule, SensorFault
from tests.helpers import SIM_CLI, FakeClock, run_async

T = TypeVar("T")
START = 1000.0
SCENARIOS = Path(__file__).parent.parent / "firmware_bridge" / "sim" / "scenarios"
DRIVER_LOG = "firmware_bridge.probes.modbus"


# --- the answer finder: the driver's view of RTU framing (pure) -----------------------------


def answer(unit: int, registers: list[int], function: int = 3) -> bytes:
    body = bytes([unit, function, 2 * len(registers)])
    body += b"".join(r.to_bytes(2, "big") for r in registers)
    return body + FramerRTU.compute_CRC(body).to_bytes(2, "big")


ANSWERS = [answer(1, [0xFFB5, 0x0226]), answer(7, [45], 4), answer(3, [])]
EXCEPTION = bytes([1, 0x83, 2]) + FramerRTU.compute_CRC(bytes([1, 0x83, 2])).to_bytes(2, "big")


@pytest.mark.parametrize("frame", [*ANSWERS, EXCEPTION], ids=lambda f: f.hex())
@pytest.mark.parametrize("noise", [b"", b"\x01\x03\x04", b"\x34\xa2\x0f\x0b"])
def test_answer_is_found_however_the_bytes_are_split(frame: bytes, noise: bytes) -> None:
    """pymodbus shows the hook the whole buffer so far; try every place a chunk can end."""
    unit, stream = frame[0], noise + frame + b"\x00\x01"
    for cut in range(len(stream) + 1):
        found = find_answer(stream[:cut], unit)
        if cut < len(noise) + len(frame):
            assert found is None, cut
        else:
            assert found == (len(noise), len(frame)), cut


def test_damaged_answers_and_other_units_are_never_found() -> None:
    good = ANSWERS[0]
    assert find_answer(good[:-1] + bytes([good[-1] ^ 1]), 1) is None
    assert find_answer(good, 2) is None
    assert find_answer(answer(1, [5], function=6), 1) is None  # not a register read


@given(st.integers(1, 247), st.lists(st.integers(0, 0xFFFF), max_size=20), st.sampled_from([3, 4]))
def test_any_whole_answer_is_found_where_it_is(unit: int, registers: list[int], fc: int) -> None:
    frame = answer(unit, registers, fc)
    assert find_answer(frame, unit) == (0, len(frame))


@given(st.binary(max_size=64), st.integers(0, 255))
def test_whatever_the_finder_returns_from_noise_is_a_crc_valid_frame(
    data: bytes, unit: int
) -> None:
    found = find_answer(data, unit)
    if found is not None:
        start, size = found
        frame = data[start : start + size]
        assert frame[0] == unit
        assert FramerRTU.compute_CRC(frame[:-2]) == int.from_bytes(frame[-2:], "big")


# --- scenario files (pure) ----------------------------------------------------------------


def test_shipped_probe_scenario_loads() -> None:
    scenario = load_scenario(SCENARIOS / "probe.toml")
    probes = scenario.to_probes()
    assert [probe.unit for probe in probes] == [1, 2]
    assert {fault.kind for probe in probes for fault in probe.faults} == {
        "spike",
        "stuck",
        "out_of_range",
        "silent",
    }
    assert scenario.faults.to_faults().any
    assert scenario.unplug is not None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("probes = []\n", "probes: List should have at least 1 item"),
        ("[[probes]]\nunit = 1\ntemperature = { base = 4 }\n[faults]\ndrop = 2\n", "faults.drop"),
        (
            "[[probes]]\nunit = 1\ntemperature = { base = 4 }\n"
            "[[probes]]\nunit = 1\ntemperature = { base = 5 }\n",
            "unit ids must be unique",
        ),
        (
            "[[probes]]\nunit = 1\nhumidity_register = 0\ntemperature = { base = 4 }\n",
            "probes.0: Value error, temperature and humidity cannot share a register",
        ),
        (
            '[[probes]]\nunit = 1\ntemperature = { kind = "excursion", base = 4 }\n',
            "probes.0.temperature: Value error, peak is required",
        ),
        (
            '[[probes]]\nunit = 1\ntemperature = { base = 4 }\n[[probes.faults]]\nkind = "hot"\n',
            "probes.0.faults.0.kind",
        ),
    ],
)
def test_bad_probe_scenarios_name_the_key(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=match):
        load_scenario(path)


# --- hardware in the loop ------------------------------------------------------------------


def fast_bus(port: str | Path) -> ModbusRtuBus:
    return ModbusRtuBus(str(port), timeout=0.12, retries=0)


def served(value: float) -> float:
    spec = RegisterSpec(0)
    return decode_register(encode_register(value, spec), spec)


DRIFT = Scenario.drift(-5.0, 6.0)  # a tenth of a degree a second: every read differs
PROBE = SimulatedProbe(1, 0, 1, DRIFT, humidity=Scenario.steady(60.0))
SPEC = PROBE.probe_spec("p")


async def read_at(bus: ModbusRtuBus, clock: FakeClock, elapsed_s: float) -> float:
    clock.at(elapsed_s)
    return (await bus.read(SPEC)).celsius


LINE_FAULTS = {
    "drop": (LineFaults(drop=1), DeviceTimeout, "timeouts"),
    "corrupt": (LineFaults(corrupt=1), DeviceProtocolError, "bad_answers"),
    "stall": (LineFaults(stall=1, stall_s=0.2), DeviceTimeout, "timeouts"),
}


@pytest.mark.hil
@pytest.mark.parametrize("kind", list(LINE_FAULTS))
def test_lost_answers_are_errors_counted_once_logged_and_then_fresh_reads(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    faults, error, counter = LINE_FAULTS[kind]
    clock = FakeClock(START)

    async def body() -> tuple[list[float], ModbusRtuBus]:
        async with ProbeSimulator([PROBE], clock=clock, faults=faults) as sim:
            async with fast_bus(sim.device_path) as bus:
                for t in (0, 1):
                    with pytest.raises(error):
                        await read_at(bus, clock, t)
                await sim.wait_sent()  # a stalled answer is out now, late
                sim.set_line_faults(NO_FAULTS)
                readings = [await read_at(bus, clock, t) for t in (60, 61)]
            assert sim.injected == {kind: 2}
            return readings, bus

    with caplog.at_level(logging.INFO, logger=DRIVER_LOG):
        readings, bus = run_async(body())
    # Fresh values, not the late answers of the stalled reads at 0 and 1 seconds.
    assert readings == [served(DRIFT.value_at(60)), served(DRIFT.value_at(61))]
    assert bus.stats[counter] == 2
    assert bus.stats["readings"] == 2
    # The stalled answers did come, late: seen and ignored, not taken for the next answer.
    assert bus.stats["late_answers"] == (2 if kind == "stall" else 0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum(f"[{counter};" in message for message in warnings) == 1, warnings
    assert any("working again" in r.getMessage() for r in caplog.records)


@pytest.mark.hil
@pytest.mark.parametrize("kind", ["garbage", "duplicate", "stall"])
def test_noise_repeats_and_short_stalls_still_give_the_right_value(kind: str) -> None:
    faults = LineFaults(**{kind: 1.0}, stall_s=0.05, seed=4)
    clock = FakeClock(START)

    async def body() -> tuple[list[float], ModbusRtuBus]:
        async with ProbeSimulator([PROBE], clock=clock, faults=faults) as sim:
            async with fast_bus(sim.device_path) as bus:
                readings = [await read_at(bus, clock, t) for t in (0, 5, 10, 15)]
            assert sim.injected == {kind: 4}
            return readings, bus

    readings, bus = run_async(body())
    assert readings == [served(DRIFT.value_at(t)) for t in (0, 5, 10, 15)]
    assert bus.stats["readings"] == 4
    if kind != "stall":  # the driver saw the stray bytes (in the answer's chunk or after it)
        assert bus.stats["stray_bytes"] + bus.stats["late_answers"] >= 1


@pytest.mark.hil
def test_mixed_random_line_faults_never_yield_a_wrong_value() -> None:
    faults = LineFaults(
        drop=0.15, corrupt=0.15, garbage=0.3, duplicate=0.3, stall=0.2, stall_s=0.02, seed=11
    )
    clock = FakeClock(START)

    async def body() -> tuple[dict[float, float | str], ModbusRtuBus]:
        outcome: dict[float, float | str] = {}
        async with ProbeSimulator([PROBE], clock=clock, faults=faults) as sim:
            async with ModbusRtuBus(sim.device_path, timeout=0.1, retries=0) as bus:
                for t in range(0, 130, 10):
                    try:
                        outcome[t] = await read_at(bus, clock, t)
                    except BridgeError as exc:
                        outcome[t] = type(exc).__name__
            assert sum(sim.injected.values()) >= 8
        return outcome, bus

    outcome, bus = run_async(body())
    values = {t: v for t, v in outcome.items() if isinstance(v, float)}
    assert values == {t: served(DRIFT.value_at(t)) for t in values}
    assert set(outcome.values()) - set(values.values()) <= {"DeviceTimeout", "DeviceProtocolError"}
    assert bus.stats["readings"] == len(values) >= 5


SENSOR_FAULTS: dict[str, tuple[SensorFault, Callable[[float], float]]] = {
    "stuck": (SensorFault("stuck", Schedule(10, 20)), lambda t: DRIFT.value_at(10)),
    "spike": (SensorFault("spike", Schedule(10, 5), delta=40.0), lambda t: DRIFT.value_at(t) + 40),
    "in-range-but-wild": (
        SensorFault("out_of_range", Schedule(10, 20), value=300.0),
        lambda t: 300.0,
    ),
}


@pytest.mark.hil
@pytest.mark.parametrize("name", list(SENSOR_FAULTS))
def test_values_the_contract_accepts_are_passed_on_for_the_gateway_to_judge(name: str) -> None:
    fault, shown = SENSOR_FAULTS[name]
    probe = SimulatedProbe(1, 0, 1, DRIFT, faults=(fault,))
    clock = FakeClock(START)

    async def body() -> tuple[list[float], ProbeSimulator, ModbusRtuBus]:
        async with ProbeSimulator([probe], clock=clock) as sim, fast_bus(sim.device_path) as bus:
            return [await read_at(bus, clock, t) for t in (10, 14.9, 40)], sim, bus

    readings, sim, bus = run_async(body())
    assert readings == [served(shown(10)), served(shown(14.9)), served(DRIFT.value_at(40))]
    assert sim.sensor_faults == {fault.kind: 2}
    assert bus.stats == {"readings": 3}


@pytest.mark.hil
@pytest.mark.parametrize(
    ("value", "match"),
    [(-300.0, "implausible reading -300.0"), (5000.0, "0x7FFF, the end of its range")],
)
def test_impossible_values_are_protocol_errors_never_readings(value: float, match: str) -> None:
    fault = SensorFault("out_of_range", Schedule(10, 10), value=value)
    probe = SimulatedProbe(1, 0, 1, DRIFT, faults=(fault,))
    clock = FakeClock(START)

    async def body() -> ModbusRtuBus:
        async with ProbeSimulator([probe], clock=clock) as sim, fast_bus(sim.device_path) as bus:
            for t in (10, 15):
                with pytest.raises(DeviceProtocolError, match=match):
                    await read_at(bus, clock, t)
            assert await read_at(bus, clock, 20) == served(DRIFT.value_at(20))
            return bus

    assert run_async(body()).stats == {"implausible": 2, "readings": 1}


@pytest.mark.hil
def test_a_silent_sensor_times_out_while_the_other_units_answer() -> None:
    silent = SimulatedProbe(1, 0, 1, DRIFT, faults=(SensorFault("silent", Schedule(10, 10)),))
    other = SimulatedProbe(2, 0, None, Scenario.steady(-18.0))
    clock = FakeClock(START)

    async def body() -> tuple[ProbeSimulator, ModbusRtuBus]:
        async with (
            ProbeSimulator([silent, other], clock=clock) as sim,
            fast_bus(sim.device_path) as bus,
        ):
            clock.at(12)
            with pytest.raises(DeviceTimeout, match="unit 1: no answer"):
                await bus.read(SPEC)
            assert (await bus.read(other.probe_spec("f"))).celsius == -18.0
            assert await read_at(bus, clock, 20) == served(DRIFT.value_at(20))
            return sim, bus

    sim, bus = run_async(body())
    assert sim.sensor_faults == {"silent": 1}
    assert bus.stats == {"timeouts": 1, "readings": 2}


@pytest.mark.hil
def test_unplug_and_replug_at_the_same_link_is_survived(tmp_path: Path) -> None:
    link = tmp_path / "ttyRS485"
    clock = FakeClock(START)

    async def body() -> ModbusRtuBus:
        async with ProbeSimulator([PROBE], link=link, clock=clock) as sim:
            async with fast_bus(link) as bus:
                assert await read_at(bus, clock, 0) == served(DRIFT.value_at(0))
                old_tty = sim.modem.device_path
                await sim.unplug()
                for t in (1, 2):
                    with pytest.raises(DeviceUnavailable):
                        await read_at(bus, clock, t)
                await sim.replug()
                assert sim.modem.device_path != old_tty or link.exists()
                assert await read_at(bus, clock, 3) == served(DRIFT.value_at(3))
            return bus

    stats = run_async(body()).stats
    assert stats["readings"] == 2
    assert stats["unavailable"] == 2
    assert stats["reconnects"] == 1


UNPLUGGING = """
[unplug]
start_s = 0.4
duration_s = 0.3
[[probes]]
unit = 4
temperature_register = 10
table = "input"
temperature = { base = -21.5 }
"""


@pytest.mark.hil
def test_simulator_cli_follows_a_scenario_file_with_its_unplug_schedule(tmp_path: Path) -> None:
    scenario, link = tmp_path / "bus.toml", tmp_path / "ttyBUS"
    scenario.write_text(UNPLUGGING)
    spec = SimulatedProbe(4, 10, None, Scenario.steady(0), table="input").probe_spec("p")

    async def body() -> tuple[list[str], list[TemperatureBody], int, bytes]:
        process = await asyncio.create_subprocess_exec(
            *SIM_CLI, "probe", "--scenario", str(scenario), "--link", str(link),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None
        readings = []
        try:
            lines = [(await process.stdout.readline()).decode().strip() for _ in range(2)]
            async with fast_bus(lines[0]) as bus:
                readings.append(await bus.read(spec))
                for expect in ("unplugged", "plugged in again"):
                    lines.append((await process.stdout.readline()).decode().strip())
                    assert lines[-1] == expect
                readings.append(await bus.read(spec))
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = await process.communicate()
        assert process.returncode is not None
        return lines, readings, process.returncode, stderr

    lines, readings, returncode, stderr = run_async(body())
    assert lines[:2] == [str(link), "unit 4: temperature input register 10, scale 0.1, signed"]
    assert readings == [TemperatureBody(probe="p", celsius=-21.5)] * 2
    assert returncode == 0, stderr.decode()


@pytest.mark.hil
def test_simulator_cli_refuses_quick_options_with_a_scenario_file(tmp_path: Path) -> None:
    scenario = tmp_path / "bus.toml"
    scenario.write_text(UNPLUGGING)

    async def body() -> tuple[int, bytes]:
        process = await asyncio.create_subprocess_exec(
            *SIM_CLI, "probe", "--scenario", str(scenario), "--units", "2",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await process.communicate()
        assert process.returncode is not None
        return process.returncode, stderr

    returncode, stderr = run_async(body())
    assert returncode == 2
    assert "--units cannot be combined with --scenario" in stderr.decode()
