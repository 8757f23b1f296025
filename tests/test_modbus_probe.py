"""Pure tests of the Modbus probe driver's data: register decoding, specs and scenarios."""

from __future__ import annotations

import math
from typing import Any

import pytest

from contracts import InvalidId
from firmware_bridge.errors import BridgeError, DeviceProtocolError, map_exceptions
from firmware_bridge.probes.modbus import (
    ModbusProbeSpec,
    ModbusRtuBus,
    RegisterSpec,
    decode_register,
    encode_register,
)
from firmware_bridge.sim.probe import ProbeSimulator, Scenario, SimulatedProbe

SIGNED = RegisterSpec(0)
UNSIGNED = RegisterSpec(0, signed=False)


# --- decode_register / encode_register ---------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "spec", "expected"),
    [
        (0, SIGNED, 0.0),
        (45, SIGNED, 4.5),
        (3, SIGNED, 0.3),  # 3 * 0.1 is 0.30000000000000004 in floats
        (0x7FFF, SIGNED, 3276.7),
        (0xFFFF, SIGNED, -0.1),
        (0xFF47, SIGNED, -18.5),
        (0x8000, SIGNED, -3276.8),
        (0xFFFF, UNSIGNED, 6553.5),
        (0x8000, UNSIGNED, 3276.8),
        (250, RegisterSpec(0, scale=0.01), 2.5),
        (7, RegisterSpec(0, scale=2), 14.0),
        (10, RegisterSpec(0, scale=-0.5), -5.0),
    ],
)
def test_decode_register_applies_sign_and_scale(
    raw: int, spec: RegisterSpec, expected: float
) -> None:
    assert decode_register(raw, spec) == expected


@pytest.mark.parametrize("raw", [-1, 0x10000, True, 1.0])
def test_decode_register_rejects_values_a_register_cannot_hold(raw: Any) -> None:
    with pytest.raises(ValueError, match="register holds"):
        decode_register(raw, SIGNED)


@pytest.mark.parametrize("value", [-40.0, -18.5, -0.1, 0.0, 4.5, 25.3, 3276.7])
def test_encode_register_round_trips_through_decode(value: float) -> None:
    assert decode_register(encode_register(value, SIGNED), SIGNED) == value


def test_encode_register_uses_twos_complement_for_negatives() -> None:
    assert encode_register(-0.1, SIGNED) == 0xFFFF
    assert encode_register(-18.5, SIGNED) == 0xFF47


def test_encode_register_saturates_like_probe_firmware() -> None:
    assert encode_register(5000.0, SIGNED) == 0x7FFF
    assert encode_register(-5000.0, SIGNED) == 0x8000
    assert encode_register(-3.0, UNSIGNED) == 0


def test_encode_register_rejects_non_finite_values() -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        encode_register(math.nan, SIGNED)


# --- specs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"register": -1}, ValueError),
        ({"register": 65536}, ValueError),
        ({"register": True}, TypeError),
        ({"register": "0"}, TypeError),
        ({"register": 0, "table": "coils"}, ValueError),
        ({"register": 0, "scale": 0}, ValueError),
        ({"register": 0, "scale": math.inf}, ValueError),
        ({"register": 0, "scale": "0.1"}, TypeError),
        ({"register": 0, "signed": 1}, TypeError),
    ],
)
def test_register_spec_rejects_invalid_fields(
    kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        RegisterSpec(**kwargs)


def test_register_spec_defaults_to_signed_tenths_in_holding_registers() -> None:
    assert RegisterSpec(5) == RegisterSpec(5, "holding", 0.1, True)


@pytest.mark.parametrize("unit", [0, 248, 255, -1])
def test_probe_spec_rejects_unit_ids_outside_1_to_247(unit: int) -> None:
    with pytest.raises(ValueError, match="unit"):
        ModbusProbeSpec("p1", unit, SIGNED)


@pytest.mark.parametrize("probe", ["", "has space", "a/b", "x" * 65])
def test_probe_spec_rejects_invalid_probe_ids(probe: str) -> None:
    with pytest.raises(InvalidId):
        ModbusProbeSpec(probe, 1, SIGNED)


def test_probe_spec_rejects_humidity_in_the_temperature_register() -> None:
    with pytest.raises(ValueError, match="share a register"):
        ModbusProbeSpec("p1", 1, RegisterSpec(3), RegisterSpec(3))


def test_probe_spec_allows_the_same_address_in_the_other_table() -> None:
    spec = ModbusProbeSpec("p1", 1, RegisterSpec(3), RegisterSpec(3, "input"))
    assert spec.humidity == RegisterSpec(3, "input")


def test_probe_spec_rejects_a_register_number_where_a_spec_belongs() -> None:
    with pytest.raises(TypeError, match="temperature"):
        ModbusProbeSpec("p1", 1, 0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"port": ""}, "port"),
        ({"port": "/dev/x", "timeout": 0}, "timeout"),
        ({"port": "/dev/x", "retries": -1}, "retries"),
    ],
)
def test_bus_rejects_invalid_settings_without_touching_the_port(
    kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        ModbusRtuBus(**kwargs)


# --- scenarios ----------------------------------------------------------------------------


def test_steady_scenario_stays_at_base() -> None:
    scenario = Scenario.steady(4.0)
    assert [scenario.value_at(t) for t in (0, 1, 3600)] == [4.0, 4.0, 4.0]


def test_drift_scenario_moves_per_minute() -> None:
    scenario = Scenario.drift(2.0, 0.5)
    assert scenario.value_at(0) == 2.0
    assert scenario.value_at(60) == pytest.approx(2.5)
    assert scenario.value_at(600) == pytest.approx(7.0)


def test_excursion_ramps_holds_and_returns_to_base() -> None:
    scenario = Scenario.excursion(4.0, 12.0, start_s=10, ramp_s=20, hold_s=30)
    expected = {
        0: 4.0,
        9.9: 4.0,
        10: 4.0,
        20: 8.0,  # half way up
        30: 12.0,
        59.9: 12.0,
        70: 8.0,  # half way down
        80: 4.0,
        1000: 4.0,
    }
    assert {t: pytest.approx(scenario.value_at(t)) for t in expected} == expected


def test_excursion_without_ramp_is_a_step() -> None:
    scenario = Scenario.excursion(-20.0, -5.0, start_s=5, ramp_s=0, hold_s=10)
    assert [scenario.value_at(t) for t in (4.9, 5, 14.9, 15)] == [-20.0, -5.0, -5.0, -20.0]


def test_noise_is_bounded_and_deterministic_per_seed() -> None:
    noisy = Scenario.steady(4.0, noise=0.5, seed=7)
    values = [noisy.value_at(t) for t in range(100)]
    assert all(3.5 <= value <= 4.5 for value in values)
    assert len(set(values)) > 50
    assert values == [Scenario.steady(4.0, noise=0.5, seed=7).value_at(t) for t in range(100)]
    assert values != [Scenario.steady(4.0, noise=0.5, seed=8).value_at(t) for t in range(100)]


def test_noise_is_constant_within_a_second() -> None:
    noisy = Scenario.drift(4.0, 0.0, noise=1.0, seed=1)
    assert noisy.value_at(3.0) == noisy.value_at(3.99)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Scenario("wobble", 4.0), "kind"),  # type: ignore[arg-type]
        (lambda: Scenario.steady(math.nan), "base"),
        (lambda: Scenario.drift(4.0, math.inf), "per_minute"),
        (lambda: Scenario.excursion(4.0, 12.0, start_s=-1, ramp_s=0, hold_s=0), "start_s"),
        (lambda: Scenario.excursion(4.0, 12.0, start_s=0, ramp_s=-1, hold_s=0), "ramp_s"),
        (lambda: Scenario("excursion", 4.0), "peak"),
        (lambda: Scenario("steady", 4.0, peak=9.0), "peak"),
        (lambda: Scenario.steady(4.0, noise=-0.1), "noise"),
    ],
)
def test_scenario_rejects_invalid_parameters(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_scenario_rejects_negative_time() -> None:
    with pytest.raises(ValueError, match="elapsed_s"):
        Scenario.steady(4.0).value_at(-0.1)


# --- simulated probe definitions ----------------------------------------------------------


def test_simulated_probe_describes_itself_as_the_driver_sees_it() -> None:
    probe = SimulatedProbe(3, 10, 11, Scenario.steady(4.0), table="input", scale=0.01)
    assert probe.probe_spec("cold1") == ModbusProbeSpec(
        "cold1", 3, RegisterSpec(10, "input", 0.01), RegisterSpec(11, "input", 0.01)
    )
    assert probe.register_map() == (
        "temperature input register 10, scale 0.01, signed; humidity input register 11"
    )


def test_simulated_probe_clamps_humidity_to_a_real_sensor_range() -> None:
    probe = SimulatedProbe(1, 0, 1, Scenario.steady(4.0), humidity=Scenario.steady(104.0))
    assert probe.readings(0)[1][1] == 100.0


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: SimulatedProbe(0, 0, None, Scenario.steady(4.0)), "unit"),
        (lambda: SimulatedProbe(1, 0, 0, Scenario.steady(4.0)), "share a register"),
        (lambda: SimulatedProbe(1, 0, None, Scenario.steady(4.0), scale=0), "scale"),
    ],
)
def test_simulated_probe_rejects_invalid_definitions(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_simulator_rejects_two_probes_with_one_unit_id_without_opening_anything() -> None:
    probe = SimulatedProbe(1, 0, None, Scenario.steady(4.0))
    with pytest.raises(ValueError, match="unique"):
        ProbeSimulator([probe, probe])


# --- errors -------------------------------------------------------------------------------


def test_map_exceptions_translates_and_keeps_the_cause() -> None:
    with (
        pytest.raises(DeviceProtocolError) as caught,
        map_exceptions({KeyError: DeviceProtocolError}),
    ):
        raise KeyError("frame")
    assert isinstance(caught.value.__cause__, KeyError)
    assert isinstance(caught.value, BridgeError)


def test_map_exceptions_lets_unmapped_exceptions_through() -> None:
    with pytest.raises(ZeroDivisionError), map_exceptions({KeyError: DeviceProtocolError}):
        raise ZeroDivisionError
