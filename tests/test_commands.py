"""Command processing: each command id is carried out at most once, and no payload,
however broken, stops the processor; the slot handlers against the lock-board simulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, JsonValue

from contracts.commands import (
    MAX_COMMAND_BYTES,
    Command,
    CommandResultBody,
    encode_command,
)
from contracts.profiles import Limits
from edge.commandlog import INTERRUPTED_MESSAGE, CommandLog, CommandLogError
from edge.commands import (
    CommandFailed,
    CommandProcessor,
    Handler,
    load_profiles,
    open_slot_handler,
    query_slots_handler,
    set_profile_handler,
)
from firmware_bridge.lockboard import LockBus
from firmware_bridge.serial_link import SerialLink
from firmware_bridge.sim.lockboard import LockboardScenario, LockboardSim, SimBoard
from tests.helpers import run_async

DEVICE = "locker-1"
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def command(command_id: str, name: str, expires: datetime | None = None, **args: Any) -> bytes:
    return encode_command(Command(id=command_id, command=name, args=args, expires=expires))


class Recorder:
    """A handler that records its calls and returns what it was given."""

    def __init__(self, result: dict[str, JsonValue] | None = None) -> None:
        self.calls: list[BaseModel] = []
        self.result = result or {"status": "fine"}

    async def __call__(self, args: BaseModel) -> dict[str, JsonValue]:
        self.calls.append(args)
        return self.result


def raising(exc: Exception) -> Handler:
    async def handle(args: BaseModel) -> dict[str, JsonValue]:
        raise exc

    return handle


@pytest.fixture
def log(tmp_path: Path) -> Any:
    with CommandLog(tmp_path / "commands.sqlite") as opened:
        yield opened


def processor(log: CommandLog, **handlers: Handler) -> CommandProcessor:
    return CommandProcessor(DEVICE, log, handlers, clock=lambda: NOW)


# --- idempotency -----------------------------------------------------------------------------


def test_the_same_command_id_twice_runs_once_and_replays_the_first_outcome(
    log: CommandLog,
) -> None:
    status = Recorder({"uptime_s": 12.5})
    commands = processor(log, report_status=status)

    first = run_async(commands.process(command("c-1", "report_status")))
    second = run_async(commands.process(command("c-1", "report_status")))

    assert len(status.calls) == 1
    assert first == CommandResultBody(
        command_id="c-1", command="report_status", ok=True, result={"uptime_s": 12.5}
    )
    assert second.replayed is True
    assert second.model_copy(update={"replayed": False}) == first
    assert (commands.stats.processed, commands.stats.replayed) == (2, 1)


def test_ids_are_per_device_and_a_new_id_runs_again(log: CommandLog) -> None:
    status = Recorder()
    run_async(processor(log, report_status=status).process(command("c-1", "report_status")))
    other = CommandProcessor("locker-2", log, {"report_status": status}, clock=lambda: NOW)
    assert not run_async(other.process(command("c-1", "report_status"))).replayed
    assert not run_async(other.process(command("c-2", "report_status"))).replayed
    assert len(status.calls) == 3


def test_the_record_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "commands.sqlite"
    status = Recorder()
    with CommandLog(path) as log:
        run_async(processor(log, report_status=status).process(command("c-1", "report_status")))
    with CommandLog(path) as log:
        again = run_async(
            processor(log, report_status=status).process(command("c-1", "report_status"))
        )
    assert again.ok
    assert again.replayed
    assert len(status.calls) == 1


def test_a_command_cut_off_by_a_crash_is_answered_interrupted_and_never_run(
    tmp_path: Path,
) -> None:
    path = tmp_path / "commands.sqlite"
    crashed = CommandLog(path)
    crashed.open()
    assert crashed.begin(DEVICE, "c-open", "open_slot") is None  # then the power went
    opener = Recorder()
    with CommandLog(path) as log:
        commands = processor(log, open_slot=opener)
        results = [
            run_async(commands.process(command("c-open", "open_slot", board=1, lock=3)))
            for _ in range(2)
        ]
    crashed.close()
    assert opener.calls == []
    for result in results:
        assert result == CommandResultBody(
            command_id="c-open",
            command="open_slot",
            ok=False,
            error=INTERRUPTED_MESSAGE,
            reason="interrupted",
            replayed=True,
        )


def test_a_cancelled_handler_leaves_the_id_interrupted(log: CommandLog) -> None:
    """Cancelled mid-way (the agent stopping): nobody knows if it acted, so no second try."""
    started = asyncio.Event()

    async def slow(args: BaseModel) -> dict[str, JsonValue]:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def body() -> CommandResultBody:
        commands = processor(log, open_slot=slow)
        task = asyncio.create_task(commands.process(command("c-9", "open_slot", board=1, lock=1)))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await commands.process(command("c-9", "open_slot", board=1, lock=1))

    assert run_async(body()).reason == "interrupted"


# --- every bad input is an error result, and the processor carries on --------------------------


def expired_command() -> bytes:
    return command("c-late", "report_status", expires=NOW - timedelta(seconds=1))


BAD_INPUTS: list[tuple[str, Callable[[], bytes], str | None, str, Handler | None]] = [
    ("malformed json", lambda: b'{"id": "c-x", ', None, "malformed", None),
    ("not utf-8", lambda: b"\xff\xfe", None, "malformed", None),
    (
        "wrong schema",
        lambda: b'{"id": "c-s", "command": "open_slot", "x": 1}',
        "c-s",
        "schema",
        None,
    ),
    (
        "unreadable id",
        lambda: b'{"id": "bad id!", "command": "report_status"}',
        None,
        "schema",
        None,
    ),
    (
        "oversize",
        lambda: (
            b'{"id": "c-big", "command": "report_status", "args": {"pad": "'
            + b"x" * MAX_COMMAND_BYTES
            + b'"}}'
        ),
        None,
        "oversize",
        None,
    ),
    ("unknown command", lambda: command("c-u", "self_destruct"), "c-u", "unknown_command", None),
    ("unsupported", lambda: command("c-n", "query_slots", board=1), "c-n", "unsupported", None),
    ("bad args", lambda: command("c-a", "open_slot", board=1, lock=99), "c-a", "schema", None),
    ("expired", expired_command, "c-late", "expired", None),
    (
        "handler refuses",
        lambda: command("c-f", "open_slot", board=1, lock=2),
        "c-f",
        "device_error",
        raising(CommandFailed("device_error", "board 1 lock 2 did not open")),
    ),
    (
        "handler bug",
        lambda: command("c-b", "open_slot", board=1, lock=2),
        "c-b",
        "internal",
        raising(RuntimeError("secret parcel holder Zhang San")),
    ),
]


@pytest.mark.parametrize(
    ("payload", "command_id", "reason", "handler"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_gets_an_error_result_and_the_processor_keeps_working(
    log: CommandLog,
    caplog: pytest.LogCaptureFixture,
    payload: Callable[[], bytes],
    command_id: str | None,
    reason: str,
    handler: Handler | None,
) -> None:
    status = Recorder()
    handlers: dict[str, Handler] = {"report_status": status}
    if handler is not None:
        handlers["open_slot"] = handler
    commands = processor(log, **handlers)

    result = run_async(commands.process(payload()))

    assert (result.ok, result.command_id, result.reason) == (False, command_id, reason)
    assert result.error
    assert "Zhang" not in result.error
    assert "Zhang" not in caplog.text
    assert commands.stats.rejected == {reason: 1}
    assert status.calls == []
    after = run_async(commands.process(command("c-good", "report_status")))
    assert after.ok
    assert len(status.calls) == 1


def test_a_handler_bug_is_named_by_its_type_and_logged(
    log: CommandLog, caplog: pytest.LogCaptureFixture
) -> None:
    commands = processor(log, report_status=raising(KeyError("resident 110101199003077777")))
    with caplog.at_level(logging.ERROR, logger="edge.commands"):
        result = run_async(commands.process(command("c-k", "report_status")))
    assert result.error == "KeyError"
    assert "KeyError" in caplog.text
    assert "110101" not in caplog.text


def test_an_expired_command_is_recorded_so_its_repeat_is_expired_too(log: CommandLog) -> None:
    status = Recorder()
    late = processor(log, report_status=status)
    first = run_async(late.process(expired_command()))
    # Even once the clock is back before the expiry, the id's outcome stays the first one.
    early = CommandProcessor(
        DEVICE, log, {"report_status": status}, clock=lambda: NOW - timedelta(hours=1)
    )
    second = run_async(early.process(expired_command()))
    assert first.reason == second.reason == "expired"
    assert second.replayed
    assert status.calls == []


def test_command_failed_needs_a_machine_word_as_reason() -> None:
    with pytest.raises(ValueError, match="reason"):
        CommandFailed("Device Error!", "no")


def test_a_closed_log_refuses_without_running_the_command(tmp_path: Path) -> None:
    status = Recorder()
    log = CommandLog(tmp_path / "never-opened.sqlite")
    result = run_async(processor(log, report_status=status).process(command("c", "report_status")))
    assert (result.ok, result.reason) == (False, "storage")
    assert status.calls == []
    with pytest.raises(CommandLogError, match="not open"):
        log.begin(DEVICE, "c", "report_status")


# --- the command log -------------------------------------------------------------------------


def test_old_and_surplus_ids_are_pruned_at_open(tmp_path: Path) -> None:
    path = tmp_path / "commands.sqlite"
    now = [1_000_000.0]
    with CommandLog(path, clock=lambda: now[0]) as log:
        for index in range(5):
            now[0] += 1
            log.begin(DEVICE, f"old-{index}", "report_status")
        now[0] += 2 * 86_400
        for index in range(5):
            now[0] += 1
            log.begin(DEVICE, f"new-{index}", "report_status")
    with CommandLog(path, keep_days=1, max_rows=3, clock=lambda: now[0]) as log:
        assert log.count() == 3
        # The newest survive; a pruned id counts as new again.
        assert log.begin(DEVICE, "new-4", "report_status") is not None
        assert log.begin(DEVICE, "old-0", "report_status") is None


def test_settings_persist_and_list_by_prefix(tmp_path: Path) -> None:
    path = tmp_path / "commands.sqlite"
    with CommandLog(path) as log:
        log.set_setting("profile/a/p1", "1")
        log.set_setting("profile/a/p1", "2")
        log.set_setting("profile/a_b/p2", "3")  # '_' must not act as a LIKE wildcard
        log.set_setting("profile/ab/p3", "4")
    with CommandLog(path) as log:
        assert log.get_setting("profile/a/p1") == "2"
        assert log.get_setting("missing") is None
        assert log.settings("profile/a/") == {"profile/a/p1": "2"}


# --- profiles --------------------------------------------------------------------------------


def test_set_profile_stores_builtin_and_custom_limits_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "commands.sqlite"
    changes: list[tuple[str, Limits]] = []

    def on_change(probe: str, limits: Limits) -> None:
        changes.append((probe, limits))

    with CommandLog(path) as log:
        commands = processor(
            log, set_profile=set_profile_handler(DEVICE, ["fridge", "freezer"], log, on_change)
        )
        pharma = run_async(
            commands.process(command("p-1", "set_profile", probe="fridge", profile="pharma"))
        )
        custom = run_async(
            commands.process(
                command("p-2", "set_profile", probe="freezer", profile="custom", high_c=-20.0)
            )
        )
        unknown = run_async(
            commands.process(command("p-3", "set_profile", probe="attic", profile="frozen"))
        )
    assert pharma.result == {"probe": "fridge", "profile": "pharma", "low_c": 2.0, "high_c": 8.0}
    assert custom.result == {
        "probe": "freezer",
        "profile": "custom",
        "low_c": None,
        "high_c": -20.0,
    }
    assert (unknown.ok, unknown.reason) == (False, "unknown_probe")
    assert changes == [("fridge", Limits(2.0, 8.0)), ("freezer", Limits(None, -20.0))]
    with CommandLog(path) as log:
        assert load_profiles(log, DEVICE) == {
            "fridge": Limits(2.0, 8.0),
            "freezer": Limits(None, -20.0),
        }
        assert load_profiles(log, "other-device") == {}


def test_a_damaged_stored_profile_is_skipped(log: CommandLog) -> None:
    log.set_setting(f"profile/{DEVICE}/fridge", "{not json")
    log.set_setting(
        f"profile/{DEVICE}/box", json.dumps({"profile": "fresh", "low_c": 0.0, "high_c": 10.0})
    )
    assert load_profiles(log, DEVICE) == {"box": Limits(0.0, 10.0)}


def test_set_profile_args_are_checked_by_the_contract(log: CommandLog) -> None:
    handler = set_profile_handler(DEVICE, ["fridge"], log)
    commands = processor(log, set_profile=handler)
    result = run_async(
        commands.process(command("p-x", "set_profile", probe="fridge", profile="frozen", low_c=1.0))
    )
    assert result.reason == "schema"
    assert log.get_setting(f"profile/{DEVICE}/fridge") is None


# --- slot handlers against the lock-board simulator -----------------------------------------


@contextlib.asynccontextmanager
async def locker(*boards: SimBoard) -> AsyncIterator[tuple[LockboardSim, LockBus]]:
    async with (
        LockboardSim(LockboardScenario(boards)) as sim,
        SerialLink(sim.device_path, reopen_initial_s=0.02, reopen_max_s=0.05) as link,
        LockBus(
            link,
            boards=[board.address for board in boards],
            answer_timeout_s=0.05,
            confirm_delay_s=0.01,
            retries=2,
            poll_interval_s=None,
        ) as bus,
    ):
        yield sim, bus


def run_with_locker(
    body: Callable[[LockboardSim, LockBus], Awaitable[None]], *boards: SimBoard
) -> None:
    async def wrapped() -> None:
        async with locker(*boards) as (sim, bus):
            await body(sim, bus)

    run_async(wrapped())


@pytest.mark.hil
def test_a_duplicated_open_slot_opens_the_lock_once(log: CommandLog) -> None:
    async def body(sim: LockboardSim, bus: LockBus) -> None:
        commands = processor(log, open_slot=open_slot_handler(bus))
        first = await commands.process(command("o-1", "open_slot", board=1, lock=3))
        sim.close_door(1, 3)  # the customer took the parcel and shut the door
        second = await commands.process(command("o-1", "open_slot", board=1, lock=3))
        assert first.ok
        assert first.result == {
            "board": 1,
            "lock": 3,
            "door": "open",
            "occupied": True,
        }
        assert second.replayed
        assert second.result == first.result
        assert sim.open_commands == {(1, 3): 1}
        assert not sim.is_open(1, 3)

    run_with_locker(body, SimBoard(1, occupied=frozenset({3})))


@pytest.mark.hil
def test_a_jammed_lock_and_a_foreign_board_are_error_results(log: CommandLog) -> None:
    async def body(sim: LockboardSim, bus: LockBus) -> None:
        commands = processor(log, open_slot=open_slot_handler(bus))
        jammed = await commands.process(command("o-2", "open_slot", board=1, lock=7))
        foreign = await commands.process(command("o-3", "open_slot", board=9, lock=1))
        assert (jammed.reason, foreign.reason) == ("device_error", "unknown_slot")
        assert jammed.error is not None
        assert "board 1 lock 7 did not open" in jammed.error
        assert foreign.error is not None
        assert "board 9" in foreign.error
        assert sim.open_commands[(9, 1)] == 0

    run_with_locker(body, SimBoard(1, jammed=frozenset({7})))


@pytest.mark.hil
def test_query_slots_reports_every_door_and_item_sensor(log: CommandLog) -> None:
    async def body(sim: LockboardSim, bus: LockBus) -> None:
        commands = processor(log, query_slots=query_slots_handler(bus))
        result = await commands.process(command("q-1", "query_slots", board=2))
        assert result.ok
        assert result.result == {
            "board": 2,
            "slots": [
                {
                    "lock": lock,
                    "door": "open" if lock == 4 else "closed",
                    "occupied": lock in (1, 5),
                }
                for lock in range(1, 25)
            ],
        }

    run_with_locker(body, SimBoard(2, occupied=frozenset({1, 5}), open_doors=frozenset({4})))


@pytest.mark.hil
def test_a_silent_board_is_a_device_error(log: CommandLog) -> None:
    async def body(sim: LockboardSim, bus: LockBus) -> None:
        await sim.unplug()
        commands = processor(log, query_slots=query_slots_handler(bus))
        result = await commands.process(command("q-2", "query_slots", board=1))
        assert (result.ok, result.reason) == (False, "device_error")

    run_with_locker(body, SimBoard(1))
