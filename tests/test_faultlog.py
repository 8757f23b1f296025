"""FaultLog (counts, one line per episode, re-arming) and RecentKeys (the bounded window)."""

from __future__ import annotations

import logging

import pytest

from firmware_bridge.faultlog import COUNTED_IN_STATS, UNTIL_RECOVERED, FaultLog, RecentKeys

LOGGER = "faultlog-test"


@pytest.fixture(autouse=True)
def _capture_everything(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)


def logged(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    """(level, message) of every record the test logger wrote, in order."""
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [message for _, message in logged(caplog)]


def faults(where: str = "dev", *, clean_streak: int = 1, note: str = "") -> FaultLog:
    return FaultLog(logging.getLogger(LOGGER), where, clean_streak=clean_streak, note=note)


def test_each_kind_is_logged_once_and_every_fault_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = faults()
    for _ in range(3):
        log.fault("timeouts", "no answer")
    log.fault("bad_checksum", "bad CRC")
    log.fault("timeouts", "no answer again")
    assert log.counts == {"timeouts": 4, "bad_checksum": 1}
    assert logged(caplog) == [
        (logging.WARNING, "dev: no answer"),
        (logging.WARNING, "dev: bad CRC"),
    ]


def test_good_ends_every_kind_and_says_which() -> None:
    log = faults()
    assert log.good() == ()  # nothing was failing
    log.fault("timeouts", "no answer")
    log.fault("bad_checksum", "bad CRC")
    assert log.good() == ("bad_checksum", "timeouts")
    assert log.good() == ()


def test_a_kind_is_logged_again_after_the_device_worked(caplog: pytest.LogCaptureFixture) -> None:
    log = faults()
    log.fault("timeouts", "first")
    log.fault("timeouts", "same episode")
    log.good()
    log.fault("timeouts", "second episode")
    assert messages(caplog) == ["dev: first", "dev: second episode"]
    assert log.counts["timeouts"] == 3


def test_clean_streak_ends_faults_only_after_that_many_good_calls_in_a_row(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = faults(clean_streak=3)
    log.fault("garbage", "noise")
    assert log.good() == ()
    assert log.good() == ()
    log.fault("garbage", "noise in the streak")  # not logged, and the streak starts over
    assert [log.good() for _ in range(3)] == [(), (), ("garbage",)]
    log.fault("garbage", "noise after the streak")
    assert messages(caplog) == ["dev: noise", "dev: noise after the streak"]


def test_good_calls_while_nothing_failed_do_not_count_towards_the_streak() -> None:
    log = faults(clean_streak=2)
    for _ in range(5):
        log.good()
    log.fault("garbage", "noise")
    assert log.good() == ()
    assert log.good() == ("garbage",)


def test_good_with_kinds_ends_only_those(caplog: pytest.LogCaptureFixture) -> None:
    log = faults()
    log.fault("timeouts", "silent")
    log.fault("bad_checksum", "bad CRC")
    assert log.good("timeouts", "unexpected_bytes") == ("timeouts",)
    log.fault("timeouts", "silent again")
    log.fault("bad_checksum", "bad CRC again")  # still the same episode: quiet
    assert messages(caplog) == ["dev: silent", "dev: bad CRC", "dev: silent again"]
    assert log.good() == ("bad_checksum", "timeouts")


def test_sources_fail_and_recover_independently(caplog: pytest.LogCaptureFixture) -> None:
    log = faults("")
    log.fault("timeouts", "unit 1: silent", source="unit 1")
    log.fault("timeouts", "unit 2: silent", source="unit 2")
    log.fault("timeouts", "unit 1: silent", source="unit 1")
    assert log.good(source="unit 1") == ("timeouts",)
    assert log.good() == ()  # the device as a whole was never failing
    log.fault("timeouts", "unit 2: still silent", source="unit 2")
    log.fault("timeouts", "unit 1: silent again", source="unit 1")
    assert messages(caplog) == [
        "unit 1: silent",
        "unit 2: silent",
        "unit 1: silent again",
    ]
    assert log.counts == {"timeouts": 5}


def test_a_fault_at_one_source_does_not_break_anothers_clean_streak() -> None:
    log = faults(clean_streak=2)
    log.fault("garbage", "a", source="a")
    log.fault("garbage", "b", source="b")
    log.good(source="a")
    log.fault("garbage", "b", source="b")
    assert log.good(source="a") == ("garbage",)
    assert log.good(source="b") == ()


def test_the_line_has_where_message_and_note_and_the_level_asked_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    faults("PLC", note=COUNTED_IN_STATS).fault("duplicates", "repeat", level=logging.INFO)
    faults("", note=UNTIL_RECOVERED).fault("timeouts", "unit 1: silent")
    faults("scanner").fault("skipped", "line skipped")
    assert logged(caplog) == [
        (logging.INFO, "PLC: repeat (counted in stats['duplicates'])"),
        (logging.WARNING, "unit 1: silent [timeouts; logged once until it recovers]"),
        (logging.WARNING, "scanner: line skipped"),
    ]


def test_messages_are_logged_verbatim_even_with_percent_signs_or_braces(
    caplog: pytest.LogCaptureFixture,
) -> None:
    faults("dev", note=UNTIL_RECOVERED).fault("implausible", "100 %RH {raw}")
    assert logged(caplog) == [
        (logging.WARNING, "dev: 100 %RH {raw} [implausible; logged once until it recovers]")
    ]


@pytest.mark.parametrize("streak", [0, -1, True, 1.5])
def test_clean_streak_must_be_a_positive_int(streak: object) -> None:
    with pytest.raises(ValueError, match="clean_streak"):
        FaultLog(logging.getLogger(LOGGER), clean_streak=streak)  # type: ignore[arg-type]


def test_recent_keys_says_whether_a_key_is_new() -> None:
    seen = RecentKeys[str](3)
    assert seen.add("a") is True
    assert seen.add("b") is True
    assert seen.add("a") is False
    assert len(seen) == 2
    assert "a" in seen
    assert "c" not in seen


def test_recent_keys_forgets_the_first_added_first() -> None:
    seen = RecentKeys[int](2)
    seen.add(1)
    seen.add(2)
    seen.add(1)  # a repeat does not make 1 newer
    seen.add(3)
    assert (1 in seen, 2 in seen, 3 in seen) == (False, True, True)
    assert len(seen) == 2


def test_recent_keys_with_refresh_forgets_the_least_recently_seen_first() -> None:
    seen = RecentKeys[int](2, refresh=True)
    seen.add(1)
    seen.add(2)
    seen.add(1)  # 1 is the newest now
    seen.add(3)
    assert (1 in seen, 2 in seen, 3 in seen) == (True, False, True)


def test_a_forgotten_key_is_new_again() -> None:
    seen = RecentKeys[tuple[int, int]](1)
    assert seen.add((1, 2))
    assert seen.add((3, 4))
    assert seen.add((1, 2))


@pytest.mark.parametrize("size", [0, -3, True, 2.0])
def test_recent_keys_size_must_be_a_positive_int(size: object) -> None:
    with pytest.raises(ValueError, match="size"):
        RecentKeys[int](size)  # type: ignore[arg-type]
