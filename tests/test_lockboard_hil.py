"""The lock-board driver against its simulator, over real ptys, with every line fault.

Each fault test checks the same four things: the driver recovers, counts the fault, logs
it once, and never returns a value that differs from what the simulated board holds.
Timeouts are short and faults are seeded, so the suite is fast and repeatable; nothing
waits by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from contracts import DoorBody
from firmware_bridge.errors import (
    BridgeError,
    DeviceProtocolError,
    DeviceTimeout,
    DeviceUnavailable,
)
from firmware_bridge.lockboard import LockBus, LockNotOpened
from firmware_bridge.lockboard.codec import DoorReply, DoorReport, encode
from firmware_bridge.lockboard.driver import Cause
from firmware_bridge.nullmodem import Direction
from firmware_bridge.serial_link import SerialLink
from firmware_bridge.sim.faults import NO_FAULTS, LineFaults
from firmware_bridge.sim.lockboard import LockboardScenario, LockboardSim, SimAction, SimBoard
from tests.helpers import SIM_CLI, run_async

pytestmark = pytest.mark.hil

T = TypeVar("T")
DRIVER_LOG = "firmware_bridge.lockboard.driver"
SCENARIO_FILE = (
    Path(__file__).resolve().parent.parent / "firmware_bridge/sim/scenarios/lockboard.toml"
)
BOARD = SimBoard(1, occupied=frozenset({1, 2, 5}), open_doors=frozenset({9}), reports=True)
QUIET = SimBoard(2, occupied=frozenset({5}))


def scenario(*boards: SimBoard, **kwargs: Any) -> LockboardScenario:
    return LockboardScenario(boards or (BOARD, QUIET), **kwargs)


@contextlib.asynccontextmanager
async def bus_for(sim: LockboardSim, **kwargs: Any) -> AsyncIterator[LockBus]:
    """A bus on ``sim`` that gives up quickly and does not poll unless asked to."""
    settings: dict[str, Any] = {
        "boards": [board.address for board in sim.scenario.boards],
        "answer_timeout_s": 0.05,
        "confirm_delay_s": 0.01,
        "retries": 4,
        "poll_interval_s": None,
    }
    settings.update(kwargs)
    async with (
        SerialLink(sim.device_path, reopen_initial_s=0.02, reopen_max_s=0.05) as link,
        LockBus(link, **settings) as bus,
    ):
        yield bus


def truth(sim: LockboardSim, board: int, lock: int, cause: Cause = "poll") -> DoorBody:
    """What the simulated board holds for one slot, as the driver should report it."""
    items = sim.scenario.board(board).item_sensors
    return DoorBody(
        board=board,
        lock=lock,
        door="open" if sim.is_open(board, lock) else "closed",
        occupied=sim.is_occupied(board, lock) if items else None,
        cause=cause,
    )


def warnings_with(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(
        1
        for record in caplog.records
        if record.name == DRIVER_LOG
        and record.levelno == logging.WARNING
        and text in record.message
    )


async def next_event(bus: LockBus) -> DoorBody:
    async with contextlib.aclosing(bus.events()) as events:
        async for event in events:
            return event
    raise AssertionError("events() ended")


# --- behaviour on a clean line -------------------------------------------------------------


def test_open_is_confirmed_by_the_door_sensor_and_reads_match_the_boards() -> None:
    async def body() -> None:
        async with LockboardSim(scenario()) as sim, bus_for(sim) as bus:
            assert await bus.status(1, 1) == truth(sim, 1, 1)
            opened = await bus.open(1, 1)
            assert opened == DoorBody(board=1, lock=1, door="open", occupied=True, cause="command")
            assert sim.is_open(1, 1)
            assert await bus.status(1, 9) == truth(sim, 1, 9)
            for board in (1, 2):
                assert await bus.all_status(board) == [
                    truth(sim, board, lock) for lock in range(1, 25)
                ]
            assert sim.open_commands == {(1, 1): 1}
            assert bus.stats.frames > 0

    run_async(body())


def test_four_boards_of_24_locks_share_one_bus_and_each_answers_for_itself() -> None:
    boards = tuple(
        SimBoard(
            address, occupied=frozenset(range(address, 25, 4)), open_doors=frozenset({address})
        )
        for address in (1, 2, 3, 4)
    )

    async def body() -> None:
        async with LockboardSim(scenario(*boards)) as sim, bus_for(sim) as bus:
            for address in (1, 2, 3, 4):
                assert await bus.all_status(address) == [
                    truth(sim, address, lock) for lock in range(1, 25)
                ]
                await bus.open(address, 24)
            assert sim.open_commands == {(address, 24): 1 for address in (1, 2, 3, 4)}
            assert bus.stats.foreign == bus.stats.unexpected == 0

    run_async(body())


def test_a_jammed_lock_raises_lock_not_opened_after_every_try(
    caplog: pytest.LogCaptureFixture,
) -> None:
    jammed = SimBoard(1, jammed=frozenset({7}))

    async def body() -> None:
        async with LockboardSim(scenario(jammed)) as sim, bus_for(sim, retries=2) as bus:
            for _ in range(2):
                with pytest.raises(LockNotOpened, match="board 1 lock 7 did not open"):
                    await bus.open(1, 7)
            assert sim.open_commands == {(1, 7): 6}
            assert bus.stats.not_opened == 2
            assert await bus.status(1, 7) == truth(sim, 1, 7)

    run_async(body())
    assert warnings_with(caplog, "lock 7 did not open") == 1


def test_a_board_without_item_sensors_reports_occupied_as_unknown() -> None:
    plain = SimBoard(3, locks=8, item_sensors=False, occupied=frozenset({2}))

    async def body() -> None:
        async with (
            LockboardSim(scenario(plain)) as sim,
            bus_for(sim, locks_per_board=8, item_sensors=False) as bus,
        ):
            assert await bus.status(3, 2) == truth(sim, 3, 2)
            assert (await bus.open(3, 2)).occupied is None
            assert await bus.all_status(3) == [truth(sim, 3, lock) for lock in range(1, 9)]

    run_async(body())


def test_bad_arguments_and_absent_boards_are_errors_of_their_own() -> None:
    async def body() -> None:
        async with LockboardSim(scenario(BOARD)) as sim, bus_for(sim, boards=[1, 7]) as bus:
            with pytest.raises(ValueError, match="board 5 is not on this bus"):
                await bus.status(5, 1)
            with pytest.raises(ValueError, match="lock"):
                await bus.open(1, 25)
            with pytest.raises(DeviceTimeout, match="board 7"):
                await bus.status(7, 1)
            assert await bus.status(1, 2) == truth(sim, 1, 2)

    run_async(body())


# --- events -------------------------------------------------------------------------------


def test_a_person_closing_the_door_arrives_as_a_report() -> None:
    async def body() -> None:
        sim = LockboardSim(scenario(BOARD, close_after_s=0.05, take_item=True))
        async with sim, bus_for(sim) as bus:
            await bus.open(1, 2)
            event = await next_event(bus)
            assert event == truth(sim, 1, 2, cause="report")
            assert (event.door, event.occupied) == ("closed", False)

    run_async(body())


def test_changes_on_a_board_without_reports_are_found_by_polling() -> None:
    async def body() -> None:
        async with LockboardSim(scenario()) as sim, bus_for(sim, poll_interval_s=0.02) as bus:
            await bus.all_status(2)  # what the driver knew before
            sim.force_open(2, 3)
            sim.remove_item(2, 5)
            async with contextlib.aclosing(bus.events()) as events:
                seen = [await anext(events), await anext(events)]
            assert seen == [truth(sim, 2, 3), truth(sim, 2, 5)]

    run_async(body())


def test_a_report_arriving_while_an_answer_is_awaited_is_kept_and_not_taken_for_it() -> None:
    report = DoorReport(1, 6, door_open=True, occupied=False)

    def report_first(direction: Direction, data: bytes) -> bytes:
        if direction is Direction.TO_DEVICE and data[:1] == b"\x80":
            return encode(report) + data
        return data

    async def body() -> None:
        async with LockboardSim(scenario()) as sim, bus_for(sim) as bus:
            assert sim.modem is not None
            sim.modem.set_manipulator(report_first)
            assert await bus.status(1, 1) == truth(sim, 1, 1)
            assert await next_event(bus) == DoorBody(
                board=1, lock=6, door="open", occupied=False, cause="report"
            )
            assert bus.stats.reports == 1

    run_async(body())


def test_frames_from_other_boards_and_for_other_requests_are_skipped_and_counted() -> None:
    foreign = encode(DoorReply(9, 1, door_open=True, occupied=True))
    other_lock = encode(DoorReply(1, 2, door_open=True, occupied=True))

    def interlopers(direction: Direction, data: bytes) -> bytes:
        return foreign + other_lock + data if direction is Direction.TO_DEVICE else data

    async def body() -> None:
        async with LockboardSim(scenario()) as sim, bus_for(sim) as bus:
            assert sim.modem is not None
            sim.modem.set_manipulator(interlopers)
            assert await bus.status(1, 1) == truth(sim, 1, 1)
            assert (bus.stats.foreign, bus.stats.unexpected) == (1, 1)

    run_async(body())


async def until(condition: Callable[[], bool], deadline_s: float = 5.0) -> None:
    """Readiness only (a port coming back): short polling with a deadline."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not condition():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


def test_scenario_actions_happen_on_their_timeline(tmp_path: Path) -> None:
    actions = (
        SimAction(0.2, "force_open", 1, 4),
        SimAction(0.2, "remove_item", 2, 5),
        SimAction(0.3, "unplug"),
        SimAction(0.35, "replug"),
    )

    async def body() -> None:
        sim = LockboardSim(scenario(actions=actions), link=tmp_path / "ttyLock")
        async with sim, bus_for(sim) as bus:
            await bus.all_status(1)
            assert await next_event(bus) == truth(sim, 1, 4, cause="report")
            await until(lambda: bus.stats.reconnects == 1)
            assert await bus.status(2, 5) == truth(sim, 2, 5)
            assert not sim.is_occupied(2, 5)
            assert bus.stats.unavailable == 1

    run_async(body())


# --- line faults --------------------------------------------------------------------------

FAULTS: dict[str, tuple[LineFaults, str, str, type[BridgeError] | None]] = {
    # fault: (always, counter, the one warning, what a call raises while it lasts)
    "drop": (LineFaults(drop=1.0), "timeouts", "no valid answer", DeviceTimeout),
    "corrupt": (LineFaults(corrupt=1.0), "bad_checksum", "bad XOR checksum", DeviceProtocolError),
    "garbage": (LineFaults(garbage=1.0, seed=4), "garbage", "garbage", None),
    "duplicate": (LineFaults(duplicate=1.0), "unexpected", "nobody waited for", None),
    "stall": (LineFaults(stall=1.0, stall_s=0.08), "timeouts", "no valid answer", None),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_line_fault_is_survived_counted_and_logged_once(
    fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    always, counter, warning, raised = FAULTS[fault]
    sometimes = LineFaults(**{fault: 0.3}, stall_s=0.08, seed=11)

    async def read_and_check(sim: LockboardSim, bus: LockBus, lock: int) -> None:
        assert await bus.status(1, lock) == truth(sim, 1, lock)

    async def body() -> None:
        async with LockboardSim(scenario()) as sim, bus_for(sim) as bus:
            sim.faults.faults = always
            for lock in (1, 2):
                if raised is None:
                    await read_and_check(sim, bus, lock)
                else:
                    with pytest.raises(raised):
                        await bus.status(1, lock)
            assert getattr(bus.stats, counter) >= 2
            assert warnings_with(caplog, warning) == 1
            sim.faults.faults = sometimes
            for lock in range(1, 9):
                await read_and_check(sim, bus, lock)
            assert await bus.all_status(2) == [truth(sim, 2, lock) for lock in range(1, 25)]
            sim.faults.faults = NO_FAULTS
            await read_and_check(sim, bus, 9)

    run_async(body())


def test_corrupted_requests_go_unanswered_and_are_retried() -> None:
    damaged: list[bytes] = []

    def corrupt_first_request(direction: Direction, data: bytes) -> bytes:
        if direction is Direction.TO_SIM and not damaged:
            damaged.append(data)
            return data[:3] + bytes([data[3] ^ 0x22]) + data[4:]
        return data

    async def body() -> None:
        async with LockboardSim(scenario()) as sim, bus_for(sim) as bus:
            assert sim.modem is not None
            sim.modem.set_manipulator(corrupt_first_request)
            assert (await bus.open(1, 5)).door == "open"
            assert sim.open_commands == {(1, 5): 1}
            assert bus.stats.timeouts == 1

    run_async(body())


def test_a_noisy_line_never_yields_a_value_the_boards_do_not_hold() -> None:
    noisy = LineFaults(drop=0.1, corrupt=0.1, garbage=0.1, seed=5)

    async def body() -> None:
        async with LockboardSim(scenario(faults=noisy)) as sim, bus_for(sim, retries=5) as bus:
            for lock in range(1, 7):
                opened = await bus.open(1, lock)
                assert opened == truth(sim, 1, lock, cause="command")
                assert await bus.status(1, lock) == truth(sim, 1, lock)
                sim.close_door(1, lock)
                assert await bus.all_status(1) == [truth(sim, 1, n) for n in range(1, 25)]
            assert bus.stats.bad_checksum > 0
            assert bus.stats.timeouts > 0

    run_async(body())


def test_unplug_and_replug_are_survived_by_requests_and_events(tmp_path: Path) -> None:
    async def body() -> None:
        sim = LockboardSim(scenario(), link=tmp_path / "ttyLock")
        async with sim, bus_for(sim, poll_interval_s=0.05) as bus:
            assert await bus.status(1, 1) == truth(sim, 1, 1)
            events = asyncio.create_task(next_event(bus))
            await sim.unplug()
            with pytest.raises(DeviceUnavailable):
                await bus.status(1, 1)
            await sim.replug()
            await until(lambda: bus.stats.reconnects == 1)
            assert not events.done()
            sim.force_open(1, 3)
            assert await events == truth(sim, 1, 3, cause="report")
            assert await bus.status(1, 3) == truth(sim, 1, 3)
            assert bus.stats.unavailable == 1

    run_async(body())


# --- standalone simulator -------------------------------------------------------------------


@pytest.mark.parametrize("extra", [[], ["--scenario", str(SCENARIO_FILE)]])
def test_simulator_cli_prints_a_port_a_driver_can_use_and_stops_cleanly(
    extra: list[str], tmp_path: Path
) -> None:
    link = tmp_path / "ttyCLI"

    async def body() -> tuple[list[str], DoorBody, int, bytes]:
        process = await asyncio.create_subprocess_exec(
            *SIM_CLI, "lockboard", "--link", str(link), *extra,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None
        try:
            lines = [(await process.stdout.readline()).decode().strip() for _ in range(2)]
            async with (
                SerialLink(lines[0]) as serial,
                LockBus(serial, boards=[1, 2], answer_timeout_s=0.2, retries=5) as bus,
            ):
                status = await bus.status(1, 2)
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = await process.communicate()
        assert process.returncode is not None
        return lines, status, process.returncode, stderr

    lines, status, returncode, stderr = run_async(body())
    assert lines[0] == str(link)
    assert lines[1].startswith("board 1: 24 locks")
    assert status == DoorBody(board=1, lock=2, door="closed", occupied=True, cause="poll")
    assert returncode == 0, stderr.decode()
