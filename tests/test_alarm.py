"""The local cold-chain alarm: profile limits, several probes, profile changes, outputs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from contracts import TemperatureBody
from contracts.commands import SetProfileArgs
from contracts.profiles import BUILTIN_LIMITS, Limits
from edge.alarm import (
    AlarmConfig,
    AlarmError,
    BuzzerChange,
    ProbeAlarm,
    SimulatedBuzzer,
    SysfsGpio,
    make_output,
)
from edge.commandlog import CommandLog
from edge.commands import load_profiles, set_profile_handler
from tests.helpers import FakeClock, run_async

PHARMA = BUILTIN_LIMITS["pharma"]  # 2..8 °C
FROZEN = BUILTIN_LIMITS["frozen"]  # up to -18 °C


def reading(probe: str, celsius: float) -> TemperatureBody:
    return TemperatureBody(probe=probe, celsius=celsius)


def alarm_with(profiles: dict[str, Limits]) -> tuple[ProbeAlarm, SimulatedBuzzer, FakeClock]:
    clock = FakeClock(100.0)
    buzzer = SimulatedBuzzer(clock=clock)
    return ProbeAlarm(profiles, buzzer, clock=clock), buzzer, clock


def test_sounds_when_a_probe_leaves_its_range_and_stops_when_it_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    alarm, buzzer, clock = alarm_with({"fridge": PHARMA})
    alarm.on_reading(reading("fridge", 5.0))
    assert not buzzer.sounding
    clock.at(10)
    alarm.on_reading(reading("fridge", 8.5))
    assert buzzer.sounding
    assert alarm.out_of_range == {"fridge"}
    clock.at(20)
    alarm.on_reading(reading("fridge", 9.0))  # still out: no second change
    clock.at(70)
    alarm.on_reading(reading("fridge", 8.0))  # the limits are inclusive
    assert not buzzer.sounding
    assert buzzer.changes == [BuzzerChange(110.0, True), BuzzerChange(170.0, False)]
    buzzer_lines = [r.message for r in caplog.records if "buzzer" in r.message]
    assert buzzer_lines == ["alarm buzzer on", "alarm buzzer off"]
    assert "alarm silenced after 60 s" in caplog.text
    assert "probe fridge at 8.5 °C is outside 2..8 °C" in caplog.text


def test_any_probe_out_of_range_sounds_until_all_are_back() -> None:
    alarm, buzzer, _ = alarm_with({"fridge": PHARMA, "freezer": FROZEN})
    alarm.on_reading(reading("fridge", 1.0))
    alarm.on_reading(reading("freezer", -10.0))
    assert buzzer.sounding
    assert alarm.out_of_range == {"fridge", "freezer"}
    alarm.on_reading(reading("fridge", 4.0))
    assert buzzer.sounding
    assert alarm.out_of_range == {"freezer"}
    alarm.on_reading(reading("freezer", -20.0))
    assert not buzzer.sounding
    assert [change.sounding for change in buzzer.changes] == [True, False]


def test_probes_without_a_profile_never_alarm() -> None:
    alarm, buzzer, _ = alarm_with({"fridge": PHARMA})
    for celsius in (-40.0, 60.0, 200.0):
        alarm.on_reading(reading("attic", celsius))
    assert not buzzer.sounding
    assert buzzer.changes == []
    alarm.on_reading(reading("fridge", 12.0))
    assert buzzer.sounding
    assert alarm.out_of_range == {"fridge"}


def test_a_profile_set_by_command_takes_effect_at_once_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    """The set_profile command's on_change feeds the alarm; load_profiles restores it."""
    with CommandLog(tmp_path / "commands.db") as log:
        alarm, buzzer, _ = alarm_with(load_profiles(log, "cold-1"))
        handle = set_profile_handler("cold-1", ["fridge"], log, on_change=alarm.set_profile)

        def set_profile(args: SetProfileArgs) -> None:
            async def call() -> None:
                await handle(args)

            run_async(call())

        alarm.on_reading(reading("fridge", 6.0))
        assert not buzzer.sounding  # no profile yet
        set_profile(SetProfileArgs(probe="fridge", profile="chilled"))  # 0..4 °C
        assert buzzer.sounding  # the last reading is out of the new range
        set_profile(SetProfileArgs(probe="fridge", profile="custom", high_c=7.0))
        assert not buzzer.sounding

    with CommandLog(tmp_path / "commands.db") as log:
        restarted, buzzer, _ = alarm_with(load_profiles(log, "cold-1"))
        restarted.on_reading(reading("fridge", 7.5))
        assert buzzer.sounding


def fake_gpio_tree(tmp_path: Path, pin: int, *, exported: bool = True) -> Path:
    base = tmp_path / "gpio"
    base.mkdir()
    (base / "export").write_text("")
    if exported:
        line = base / f"gpio{pin}"
        line.mkdir()
        for name, value in (("direction", "in"), ("value", "0"), ("active_low", "0")):
            (line / name).write_text(value)
    return base


def test_sysfs_gpio_drives_the_value_file_of_an_exported_line(tmp_path: Path) -> None:
    base = fake_gpio_tree(tmp_path, 17)
    gpio = SysfsGpio(17, base=base, active_low=True)
    line = base / "gpio17"
    gpio.start()
    assert (line / "direction").read_text() == "out"
    assert (line / "active_low").read_text() == "1"
    assert (line / "value").read_text() == "0"
    assert (base / "export").read_text() == ""  # already exported: left alone
    alarm = ProbeAlarm({"fridge": PHARMA}, gpio, clock=FakeClock())
    alarm.on_reading(reading("fridge", 9.0))
    assert (line / "value").read_text() == "1"
    alarm.on_reading(reading("fridge", 3.0))
    assert (line / "value").read_text() == "0"


def test_sysfs_gpio_exports_a_missing_line_and_fails_clearly_if_it_never_appears(
    tmp_path: Path,
) -> None:
    base = fake_gpio_tree(tmp_path, 529, exported=False)
    gpio = SysfsGpio(529, base=base, export_wait_s=0.05)
    with pytest.raises(AlarmError, match="GPIO 529: not created after export"):
        gpio.start()
    assert (base / "export").read_text() == "529"


def test_a_failing_output_is_logged_once_and_retried_on_the_next_reading(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    base = fake_gpio_tree(tmp_path, 17)
    gpio = SysfsGpio(17, base=base)
    gpio.start()
    alarm = ProbeAlarm({"fridge": PHARMA}, gpio, clock=FakeClock())
    value = base / "gpio17" / "value"
    value.unlink()
    value.mkdir()  # writing to a directory fails like an unexported line
    for _ in range(3):
        alarm.on_reading(reading("fridge", 9.0))
    assert alarm.sounding
    assert caplog.text.count("alarm: output failed") == 1
    value.rmdir()
    alarm.on_reading(reading("fridge", 9.5))
    assert value.read_text() == "1"
    assert "alarm: output works again" in caplog.text


def test_alarm_config_picks_the_simulated_buzzer_or_a_gpio_line(tmp_path: Path) -> None:
    assert isinstance(make_output(AlarmConfig()), SimulatedBuzzer)
    gpio = make_output(AlarmConfig(gpio=17, gpio_base=tmp_path))
    assert isinstance(gpio, SysfsGpio)
    assert gpio.pin == 17
    with pytest.raises(ValueError, match="pin must be an int"):
        SysfsGpio(-1)
