"""The probe and door state machines: unit cases and hypothesis properties on random readings."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.profiles import Limits
from gateway.coldchain.machine import DoorMachine, DoorRules, ProbeMachine, Rules, Transition

PHARMA = Rules(Limits(2.0, 8.0), critical=Limits(0.0, 12.0), delay_s=600, hysteresis_c=0.5,
               clear_after_s=300, escalate_after_s=1800, offline_after_s=900)  # fmt: skip
T0 = 1_700_000_000.0


def feed(machine: ProbeMachine, readings: list[tuple[float, float]]) -> list[Transition]:
    out: list[Transition] = []
    for at, celsius in readings:
        out += machine.observe(at, celsius)
    return out


def condition(machine: ProbeMachine) -> str:
    return machine.state.temperature.condition


def changes(transitions: list[Transition]) -> list[tuple[str, str]]:
    return [(t.change, t.kind) for t in transitions]


def test_an_excursion_alarms_after_the_delay_and_not_before() -> None:
    machine = ProbeMachine(PHARMA)
    assert feed(machine, [(T0 + 60 * i, 9.0) for i in range(10)]) == []  # 540 s out
    [alarm] = machine.observe(T0 + 600, 9.1)
    assert (alarm.change, alarm.kind, alarm.severity) == ("raise", "temperature_high", "warning")
    assert alarm.details["since"] == T0


def test_back_inside_before_the_delay_is_no_alarm() -> None:
    machine = ProbeMachine(PHARMA)
    assert feed(machine, [(T0, 9.0), (T0 + 500, 9.0), (T0 + 590, 7.9), (T0 + 700, 9.0)]) == []
    assert machine.state.temperature.condition == "pending"
    assert machine.state.temperature.since == T0 + 700


def test_a_critical_reading_alarms_at_once() -> None:
    machine = ProbeMachine(PHARMA)
    [alarm] = machine.observe(T0, 12.5)
    assert (alarm.kind, alarm.severity) == ("temperature_high", "critical")


def test_a_warning_alarm_becomes_critical_without_a_second_alert() -> None:
    machine = ProbeMachine(PHARMA)
    feed(machine, [(T0, 9.0), (T0 + 600, 9.0)])
    [update] = machine.observe(T0 + 660, 13.0)
    assert (update.change, update.severity) == ("update", "critical")
    assert machine.observe(T0 + 720, 14.0) == []


def test_recovery_needs_the_hysteresis_and_the_clear_time() -> None:
    machine = ProbeMachine(PHARMA)
    feed(machine, [(T0, 9.0), (T0 + 600, 9.0)])
    assert feed(machine, [(T0 + 660 + 60 * i, 7.7) for i in range(20)]) == []  # in the band
    assert condition(machine) == "alarm"
    assert machine.observe(T0 + 2000, 7.4) == []
    assert condition(machine) == "recovering"
    assert machine.observe(T0 + 2100, 7.8) == []  # not cleared: back to the same alarm
    assert condition(machine) == "alarm"
    assert feed(machine, [(T0 + 2200, 7.0), (T0 + 2400, 7.0)]) == []
    [resolved] = machine.observe(T0 + 2500, 7.0)
    assert (resolved.change, resolved.kind) == ("resolve", "temperature_high")
    assert machine.state.temperature.condition == "normal"


def test_low_side_alarm() -> None:
    machine = ProbeMachine(PHARMA)
    feed(machine, [(T0, 1.0)])
    [alarm] = machine.tick(T0 + 600)
    assert (alarm.kind, alarm.severity) == ("temperature_low", "warning")


def test_a_tick_does_not_raise_a_pending_alarm_of_a_silent_probe() -> None:
    machine = ProbeMachine(PHARMA)
    machine.observe(T0, 9.0)
    assert changes(machine.tick(T0 + 1000)) == [("raise", "probe_offline")]
    assert machine.state.temperature.condition == "pending"


def test_unacknowledged_alarm_escalates_once_and_acknowledged_does_not() -> None:
    machine = ProbeMachine(PHARMA)
    machine.observe(T0, 12.5)
    machine.observe(T0 + 1700, 12.5)
    [escalation] = machine.tick(T0 + 1800)
    assert (escalation.change, escalation.severity) == ("escalate", "critical")
    assert machine.state.temperature.condition == "escalated"
    assert machine.tick(T0 + 1810) == []

    other = ProbeMachine(PHARMA)
    other.observe(T0, 12.5)
    assert other.acknowledge("temperature")
    other.observe(T0 + 1700, 12.5)
    assert other.tick(T0 + 1800) == []


def test_offline_and_back() -> None:
    machine = ProbeMachine(PHARMA)
    machine.observe(T0, 5.0)
    assert machine.tick(T0 + 899) == []
    assert changes(machine.tick(T0 + 900)) == [("raise", "probe_offline")]
    assert machine.tick(T0 + 950) == []
    assert changes(machine.observe(T0 + 1000, 5.0)) == [("resolve", "probe_offline")]


def test_impossible_and_stuck_values_are_sensor_faults() -> None:
    machine = ProbeMachine(PHARMA)
    [fault] = machine.observe(T0, 85.0)  # a DS18B20's power-on value
    assert (fault.kind, fault.details["reason"]) == ("sensor_fault", "impossible")
    assert machine.state.temperature.condition == "normal"  # never a temperature alarm
    assert changes(machine.observe(T0 + 60, 5.0)) == [("resolve", "sensor_fault")]

    stuck = ProbeMachine(Rules(Limits(2.0, 8.0), stuck_after_s=3600))
    assert feed(stuck, [(T0 + 60 * i, 5.0) for i in range(60)]) == []
    [fault] = stuck.observe(T0 + 3600, 5.0)
    assert fault.details["reason"] == "stuck"
    assert changes(stuck.observe(T0 + 3660, 5.0625)) == [("resolve", "sensor_fault")]


def test_an_old_or_repeated_reading_has_no_effect() -> None:
    machine = ProbeMachine(PHARMA)
    machine.observe(T0, 12.5)
    assert machine.observe(T0, 12.5) == []
    assert machine.observe(T0 - 60, 1.0) == []


def test_manual_resolve_of_a_persisting_excursion_restarts_the_delay() -> None:
    machine = ProbeMachine(PHARMA)
    feed(machine, [(T0, 9.0), (T0 + 600, 9.0)])
    resolved = machine.resolve("temperature", T0 + 700)
    assert resolved is not None
    assert resolved.change == "resolve"
    assert machine.state.temperature.condition == "pending"
    assert machine.observe(T0 + 1200, 9.0) == []
    assert changes(machine.observe(T0 + 1300, 9.0)) == [("raise", "temperature_high")]


def test_door_left_open() -> None:
    door = DoorMachine(DoorRules(open_max_s=120))
    assert door.door(T0, is_open=True) == []
    assert door.tick(T0 + 119) == []
    assert changes(door.tick(T0 + 120)) == [("raise", "door_open")]
    assert changes(door.door(T0 + 200, is_open=False)) == [("resolve", "door_open")]
    assert door.door(T0 + 300, is_open=True) == []
    assert door.door(T0 + 310, is_open=False) == []
    assert door.tick(T0 + 1000) == []


# -- properties --------------------------------------------------------------------------

NO_CRITICAL = Rules(Limits(2.0, 8.0), delay_s=600, hysteresis_c=0.5, clear_after_s=0,
                    stuck_after_s=None)  # fmt: skip
edges = st.sampled_from([1.5, 1.99, 2.0, 2.3, 2.5, 2.6, 7.4, 7.5, 7.6, 7.9, 8.0, 8.01, 9.0])
values = st.one_of(
    edges, st.floats(min_value=-1.0, max_value=11.0, allow_nan=False).map(lambda v: round(v, 2))
)
steps = st.integers(min_value=1, max_value=240)


@st.composite
def sequences(
    draw: st.DrawFn, values: st.SearchStrategy[float] = values
) -> list[tuple[int, float]]:
    """Runs of one value (how excursions look), each reading after a random step."""
    runs = draw(st.lists(st.tuples(values, st.integers(1, 8)), min_size=1, max_size=12))
    return [(draw(steps), value) for value, repeats in runs for _ in range(repeats)]


def timed(sequence: list[tuple[int, float]]) -> list[tuple[float, float]]:
    at, out = T0, []
    for step, value in sequence:
        at += step
        out.append((at, value))
    return out


def side(value: float) -> str | None:
    return "high" if value > 8.0 else "low" if value < 2.0 else None


def run_start(readings: list[tuple[float, float]], index: int) -> float:
    """The time of the first reading of the same-side run that ends at ``index``."""
    start = index
    while start > 0 and side(readings[start - 1][1]) == side(readings[index][1]):
        start -= 1
    return readings[start][0]


@settings(max_examples=300, deadline=None)
@given(sequences())
def test_property_never_alarms_before_the_delay(sequence: list[tuple[int, float]]) -> None:
    readings = timed(sequence)
    machine = ProbeMachine(NO_CRITICAL)
    for index, (at, value) in enumerate(readings):
        for transition in machine.observe(at, value):
            if transition.change == "raise":
                assert side(value) is not None
                assert at - run_start(readings, index) >= NO_CRITICAL.delay_s


@settings(max_examples=300, deadline=None)
@given(sequences())
def test_property_always_alarms_after_the_delay(sequence: list[tuple[int, float]]) -> None:
    readings = timed(sequence)
    machine = ProbeMachine(NO_CRITICAL)
    for index, (at, value) in enumerate(readings):
        machine.observe(at, value)
        if side(value) is not None and at - run_start(readings, index) >= NO_CRITICAL.delay_s:
            assert machine.state.temperature.condition in ("alarm", "escalated")


@settings(max_examples=300, deadline=None)
@given(sequences(), st.sampled_from([0.0, 300.0]))
def test_property_never_flaps_inside_the_hysteresis(
    sequence: list[tuple[int, float]], clear_after_s: float
) -> None:
    """An alarm resolves only on a reading inside the limits by the hysteresis, and a
    second alert needs a resolution first."""
    rules = Rules(Limits(2.0, 8.0), delay_s=600, hysteresis_c=0.5, clear_after_s=clear_after_s,
                  stuck_after_s=None)  # fmt: skip
    machine = ProbeMachine(rules)
    open_side: str | None = None
    for at, value in timed(sequence):
        for transition in machine.observe(at, value):
            if transition.change == "raise":
                assert open_side is None
                open_side = transition.kind.removeprefix("temperature_")
            elif transition.change == "resolve":
                assert (value <= 7.5) if open_side == "high" else (value >= 2.5)
                open_side = None


wide = st.floats(min_value=-3.0, max_value=15.0, allow_nan=False).map(lambda v: round(v, 2))


@settings(max_examples=300, deadline=None)
@given(sequences(wide))
def test_property_critical_limits_alarm_at_once(sequence: list[tuple[int, float]]) -> None:
    machine = ProbeMachine(PHARMA)
    for at, value in timed(sequence):
        machine.observe(at, value)
        if value > 12.0 or value < 0.0:
            channel = machine.state.temperature
            assert channel.condition in ("alarm", "escalated")
            assert channel.severity == "critical"
            assert channel.side == ("high" if value > 12.0 else "low")
