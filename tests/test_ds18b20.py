"""Pure tests: the DS18B20 w1_slave codec and its fault rules, the simulated sensor, and
what both probe drivers and simulators share (sensor faults and their schedules, the fault
tally)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.configfile import ConfigFileError
from firmware_bridge.errors import DeviceProtocolError, DeviceTimeout, DeviceUnavailable
from firmware_bridge.probes.ds18b20 import (
    Ds18b20,
    W1Slave,
    dallas_crc8,
    decode_w1_slave,
    encode_w1_slave,
    kernel_millidegrees,
    parse_w1_slave,
    sensor_ids,
    w1_fault,
)
from firmware_bridge.sim.ds18b20 import (
    POWER_ON_SCRATCHPAD,
    SimulatedDs18b20,
    W1Fault,
    load_scenario,
    reading_file,
    scratchpad_for,
)
from firmware_bridge.sim.sensor_faults import Scenario, Schedule, SensorFault, sensor_reading

SCENARIOS = Path(__file__).parent.parent / "firmware_bridge" / "sim" / "scenarios"

GOOD = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
NEGATIVE = "5e ff 4b 46 7f ff 02 10 b6 : crc=b6 YES\n5e ff 4b 46 7f ff 02 10 b6 t=-10125\n"
CRC_NO = "72 01 4b 46 7f ff 0e 10 56 : crc=57 NO\n72 01 4b 46 7f ff 0e 10 56 t=23125\n"
CRC_LIE = "72 01 4b 46 7f ff 0e 10 56 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 56 t=23125\n"
POWER_ON = "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n"
ALL_ONES = "ff ff ff ff ff ff ff ff ff : crc=c9 NO\nff ff ff ff ff ff ff ff ff t=-62\n"
ALL_ZEROS = "00 00 00 00 00 00 00 00 00 : crc=00 YES\n00 00 00 00 00 00 00 00 00 t=0\n"


def test_dallas_crc8_matches_known_scratchpads() -> None:
    assert dallas_crc8(bytes.fromhex("72014b467fff0e10")) == 0x57
    assert dallas_crc8(POWER_ON_SCRATCHPAD[:8]) == 0x1C
    assert dallas_crc8(b"\xff" * 8) == 0xC9
    assert dallas_crc8(bytes.fromhex("021cb8010000001a")[:7]) == 0xA2  # Maxim AN27's ROM


@pytest.mark.parametrize(("text", "celsius"), [(GOOD, 23.125), (NEGATIVE, -10.125)])
def test_good_files_parse_to_the_kernels_temperature(text: str, celsius: float) -> None:
    assert parse_w1_slave(text) == celsius


@pytest.mark.parametrize(
    ("text", "error", "match", "kind"),
    [
        (CRC_NO, DeviceProtocolError, "CRC check failed", "bad_crc"),
        (CRC_LIE, DeviceProtocolError, "CRC check failed", "bad_crc"),
        (POWER_ON, DeviceProtocolError, "85 °C power-on", "power_on"),
        (ALL_ONES, DeviceTimeout, "disconnected", "disconnected"),
        (GOOD.replace("t=23125", "t=-127000"), DeviceTimeout, "disconnected", "disconnected"),
        (ALL_ZEROS, DeviceProtocolError, "shorted", "implausible"),
        (GOOD.replace("t=23125", "t=23000"), DeviceProtocolError, "does not match", "implausible"),
    ],
    ids=["crc-no", "crc-yes-but-wrong", "power-on", "all-ones", "minus-127", "zeros", "t-mismatch"],
)
def test_files_that_are_not_readings_raise_with_their_reason(
    text: str, error: type[Exception], match: str, kind: str
) -> None:
    with pytest.raises(error, match=match):
        parse_w1_slave(text)
    fault = w1_fault(decode_w1_slave(text))
    assert fault is not None
    assert fault.kind == kind


@pytest.mark.parametrize("celsius", [125.5, 300.0, -55.5, -90.0])
def test_values_a_ds18b20_cannot_measure_are_implausible(celsius: float) -> None:
    with pytest.raises(DeviceProtocolError, match="outside the DS18B20's"):
        parse_w1_slave(encode_w1_slave(reading_file(celsius)))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "0 lines"),
        (GOOD.splitlines()[0], "1 lines"),
        (GOOD + GOOD, "4 lines"),
        (GOOD.replace("crc=57 YES", "crc=57 MAYBE"), "first line is malformed"),
        (GOOD.replace("t=23125", "temp=23125"), "second line is malformed"),
        (GOOD.replace("4b 46", "4B 46"), "malformed"),
        (GOOD.replace("10 57 t=", "10 58 t="), "two different scratchpads"),
        (GOOD.replace("crc=57", "crc=58"), "not the CRC of its scratchpad"),
    ],
)
def test_malformed_files_are_protocol_errors(text: str, match: str) -> None:
    with pytest.raises(DeviceProtocolError, match=match):
        parse_w1_slave(text)


@pytest.mark.parametrize("text", [GOOD, NEGATIVE, POWER_ON, ALL_ONES])
def test_every_truncation_of_a_file_is_rejected_never_a_wrong_value(text: str) -> None:
    """A read cut short at any byte (a torn file) is never taken for a reading."""
    for cut in range(len(text.rstrip("\n"))):
        with pytest.raises((DeviceProtocolError, DeviceTimeout)):
            parse_w1_slave(text[:cut])


@pytest.mark.parametrize("text", [GOOD, NEGATIVE, POWER_ON, ALL_ONES, CRC_NO])
def test_encode_writes_exactly_what_the_kernel_writes(text: str) -> None:
    assert encode_w1_slave(decode_w1_slave(text)) == text


SLAVES = st.builds(
    W1Slave,
    st.binary(min_size=9, max_size=9),
    st.booleans(),
    st.integers(-9_999_999, 9_999_999),
)


@given(SLAVES)
def test_decode_inverts_encode(slave: W1Slave) -> None:
    assert decode_w1_slave(encode_w1_slave(slave)) == slave


@given(st.text())
def test_decode_raises_nothing_but_protocol_errors_on_any_text(text: str) -> None:
    with contextlib.suppress(DeviceProtocolError, DeviceTimeout):
        parse_w1_slave(text)


@given(st.binary(max_size=120))
def test_decode_raises_nothing_but_protocol_errors_on_any_bytes(data: bytes) -> None:
    with contextlib.suppress(DeviceProtocolError, DeviceTimeout):
        parse_w1_slave(data.decode("ascii", errors="replace"))


@given(SLAVES)
def test_whatever_passes_the_checks_is_a_sound_reading(slave: W1Slave) -> None:
    """The rules admit only CRC-valid scratchpads with a measurable, consistent value."""
    if w1_fault(slave) is None:
        assert dallas_crc8(slave.scratchpad[:8]) == slave.scratchpad[8]
        assert -55_000 <= slave.millidegrees <= 125_000
        assert slave.millidegrees != 85_000


@given(st.floats(-55, 125).filter(lambda c: abs(c - 85) > 0.04))
def test_simulated_sensor_files_read_back_to_the_value_within_a_sixteenth(celsius: float) -> None:
    value = parse_w1_slave(encode_w1_slave(reading_file(celsius)))
    assert abs(value - celsius) <= 1 / 32 + 0.001  # 12-bit steps; the kernel truncates t=


def test_scratchpad_matches_a_real_sensors_layout() -> None:
    assert scratchpad_for(23.125) == bytes.fromhex("72014b467fff0e1057")
    assert kernel_millidegrees(scratchpad_for(-0.0625)) == -62  # C division truncates
    assert scratchpad_for(5000.0)[:2] == b"\xff\x7f"  # saturates, never wraps


def test_sensor_ids_lists_only_ds18b20_directories(tmp_path: Path) -> None:
    for name in ("28-0316a2795eff", "28-00000a1b2c3d", "w1_bus_master1", "10-000801b5a7d6"):
        (tmp_path / name).mkdir()
    (tmp_path / ".28-00000a1b2c3e.new").mkdir()
    assert sensor_ids(tmp_path) == ["28-00000a1b2c3d", "28-0316a2795eff"]
    with pytest.raises(DeviceUnavailable, match="1-wire bus"):
        sensor_ids(tmp_path / "absent")


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Ds18b20("10-000801b5a7d6"), "28-0123456789ab"),
        (lambda: Ds18b20("28-0316A2795EFF"), "28-0123456789ab"),
        (lambda: Ds18b20("28-0316a2795eff", probe="no spaces"), "probe"),
        (lambda: Ds18b20("28-0316a2795eff", timeout=0), "timeout"),
    ],
)
def test_driver_rejects_bad_configuration_without_touching_files(make: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()  # type: ignore[operator]


def test_probe_id_defaults_to_the_sensor_id() -> None:
    assert Ds18b20("28-0316a2795eff").probe == "28-0316a2795eff"


# --- the simulated sensor ------------------------------------------------------------------

SENSOR = "28-0316a2795eff"


def test_simulated_sensor_layers_wire_faults_over_sensor_faults() -> None:
    sensor = SimulatedDs18b20(
        SENSOR,
        Scenario.drift(2.0, 60.0),
        faults=(SensorFault("silent", Schedule(10, 5)),),
        w1_faults=(W1Fault("power_on", Schedule(20, 1)), W1Fault("crc_no", Schedule(20, 5))),
    )
    assert sensor.file_at(0) == (reading_file(2.0), None)
    assert sensor.file_at(12) == (None, "silent")
    slave, kind = sensor.file_at(20.5)
    assert (slave, kind) == (W1Slave(POWER_ON_SCRATCHPAD, True, 85_000), "power_on")
    slave, kind = sensor.file_at(22)
    assert kind == "crc_no"
    assert slave is not None
    assert not slave.crc_ok


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: SimulatedDs18b20("28-xyz", Scenario.steady(1)), "sensor_id"),
        (lambda: W1Fault("melted"), "kind"),  # type: ignore[arg-type]
        (lambda: SimulatedDs18b20(SENSOR, Scenario.steady(1), faults=[]), "tuple"),  # type: ignore[arg-type]
    ],
)
def test_simulated_sensors_are_validated_on_construction(make: object, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        make()  # type: ignore[operator]


def test_shipped_ds18b20_scenario_loads() -> None:
    scenario = load_scenario(SCENARIOS / "ds18b20.toml")
    sensors = scenario.to_sensors()
    assert [s.sensor_id for s in sensors] == ["28-0316a2795eff", "28-0416b3e58aff"]
    assert {f.kind for s in sensors for f in s.w1_faults} == {"crc_no", "power_on", "disconnected"}
    assert {f.kind for s in sensors for f in s.faults} == {"silent", "spike", "out_of_range"}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[[sensors]]\nid = "28-0316a2795eff"\n', "sensors.0.temperature: Field required"),
        ("sensors = []\n", "sensors: List should have at least 1 item"),
        (
            '[[sensors]]\nid = "28-0316a2795eff"\ntemperature = { base = 1.0 }\n'
            '[[sensors.w1_faults]]\nkind = "crc_no"\nevery_s = 5\n',
            "sensors.0.w1_faults.0: Value error, a repeating fault needs duration_s",
        ),
        (
            '[[sensors]]\nid = "28-0316a2795eff"\ntemperature = { base = 1.0 }\n'
            '[[sensors.faults]]\nkind = "spike"\n',
            "delta is required for a spike",
        ),
        (
            '[[sensors]]\nid = "28-0316a2795eff"\ntemperature = { base = 1.0, colour = 1 }\n',
            "sensors.0.temperature.colour: Extra inputs are not permitted",
        ),
    ],
)
def test_bad_ds18b20_scenarios_name_the_key(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=match):
        load_scenario(path)


# --- schedules and sensor faults ---------------------------------------------------


def test_schedule_windows_open_and_close_and_repeat() -> None:
    once = Schedule(start_s=10, duration_s=5)
    assert [once.window_start(t) for t in (9.9, 10, 14.9, 15, 100)] == [None, 10, 10, None, None]
    forever = Schedule(start_s=3)
    assert forever.window_start(1e6) == 3
    repeating = Schedule(start_s=10, duration_s=2, every_s=30)
    assert [repeating.window_start(t) for t in (11, 12, 41.5, 70, 72)] == [10, None, 40, 70, None]


def test_schedule_probability_is_per_window_and_repeatable_by_seed() -> None:
    schedule = Schedule(duration_s=1, every_s=1, probability=0.3, seed=8)
    hits = [schedule.window_start(t + 0.5) is not None for t in range(1000)]
    assert 230 <= sum(hits) <= 370
    again = Schedule(duration_s=1, every_s=1, probability=0.3, seed=8)
    assert hits == [again.window_start(t + 0.5) is not None for t in range(1000)]


def truth(t: float) -> float:
    return 4.0 + t / 10


def test_each_sensor_fault_shapes_the_value_only_in_its_window() -> None:
    window = Schedule(start_s=10, duration_s=10)
    assert [SensorFault("stuck", window).apply(t, truth) for t in (5, 12, 19)] == [4.5, 5.0, 5.0]
    spike = SensorFault("spike", Schedule(start_s=10, duration_s=1), delta=30.0)
    assert [spike.apply(t, truth) for t in (10, 11)] == [35.0, 5.1]
    assert SensorFault("out_of_range", window, value=300.0).apply(15, truth) == 300.0
    assert SensorFault("silent", window).apply(15, truth) is None
    assert SensorFault("silent", window).apply(20, truth) == 6.0


def test_the_first_active_fault_wins() -> None:
    faults = (
        SensorFault("silent", Schedule(start_s=10, duration_s=5)),
        SensorFault("stuck", Schedule(start_s=0)),
    )
    assert sensor_reading(faults, 12, truth) == (None, faults[0])
    assert sensor_reading(faults, 20, truth) == (4.0, faults[1])
    assert sensor_reading((), 20, truth) == (6.0, None)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Schedule(every_s=10), "needs duration_s"),
        (lambda: Schedule(duration_s=20, every_s=10), "at most every_s"),
        (lambda: Schedule(probability=1.5), "probability"),
        (lambda: Schedule(start_s=-1), "start_s"),
        (lambda: SensorFault("spike", Schedule(duration_s=1)), "delta is required"),
        (lambda: SensorFault("spike", delta=3.0), "needs a duration_s"),
        (lambda: SensorFault("stuck", value=3.0), "only there"),
        (lambda: SensorFault("out_of_range"), "value is required"),
        (lambda: SensorFault("melting"), "kind"),  # type: ignore[arg-type]
    ],
)
def test_faults_are_validated_on_construction(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()
