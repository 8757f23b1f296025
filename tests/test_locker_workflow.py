"""The locker workflow against the lock-board simulator on a real pty, with no gateway.

The simulated people act when the workflow tells the panel a slot stands open: a courier
puts a parcel in and shuts the door, a recipient takes it out, someone walks away. The
gateway's decisions are injected with ``on_decision`` (as the device runtime does), so
every pickup here is an offline one: the codes are the locker's own cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import tomllib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import ValidationError

from contracts import (
    AnyBody,
    AnyEnvelope,
    DecisionMessage,
    DepositBody,
    DepositDecision,
    DepositRequestBody,
    DoorBody,
    PickupBody,
    PickupCode,
    PickupCodes,
    ScanBody,
    make_envelope,
    utc_now,
)
from contracts.station import pickup_code_hash
from edge.commands import CommandFailed
from edge.workflows.locker import DoorAlarm, LockerConfig, LockerWorkflow, OnOpen, Slot
from edge.workflows.lockercodes import CodeCache
from firmware_bridge.lockboard import LockBus
from firmware_bridge.scanner.driver import SerialScanner
from firmware_bridge.serial_link import SerialLink
from firmware_bridge.sim.lockboard import LockboardScenario, LockboardSim, SimBoard
from firmware_bridge.sim.scanner import ScannerScenario, ScannerSimulator, SimulatedCode
from tests.helpers import FakeClock, run_async

pytestmark = pytest.mark.hil

B = TypeVar("B")
DEVICE = "village-23-locker"
BOARD = SimBoard(1, occupied=frozenset({1}), reports=True)
SLOTS = [
    {"board": 1, "lock": 1, "size": "S"},
    {"board": 1, "lock": 2, "size": "M"},
    {"board": 1, "locks": "3-4", "size": "S"},
    {"board": 1, "locks": "5-6", "size": "M"},
    {"board": 1, "lock": 7, "size": "L"},
]


def config(**overrides: Any) -> LockerConfig:
    return LockerConfig.model_validate({"slots": SLOTS, **overrides})


class Recorder:
    """The workflow's ``emit``: every body becomes the device's next envelope, in order,
    as the outbox keeps them; ``answer`` plays the gateway for requests."""

    def __init__(self, answer: Callable[[AnyEnvelope], DecisionMessage | None] | None = None):
        self.envelopes: list[AnyEnvelope] = []
        self.answer = answer
        self.decide: Callable[[DecisionMessage], None] | None = None
        self._emitted = asyncio.Event()

    def __call__(self, body: AnyBody) -> AnyEnvelope:
        seq = len(self.envelopes) + 1
        envelope = make_envelope(
            station="village-23", device=DEVICE, boot=1, seq=seq, ts=utc_now(), body=body
        )
        self.envelopes.append(envelope)
        decision = self.answer(envelope) if self.answer else None
        if decision is not None and self.decide is not None:
            # After emit returns: the workflow expects the answer before it can come.
            asyncio.get_running_loop().call_soon(self.decide, decision)
        self._emitted.set()
        return envelope

    def bodies(self, kind: type[B]) -> list[B]:
        return [e.body for e in self.envelopes if isinstance(e.body, kind)]

    async def next(self, kind: type[B], where: Callable[[B], bool] = lambda _: True) -> B:
        """The first body of ``kind`` matching ``where``, waiting for it to be emitted."""
        while True:
            for body in self.bodies(kind):
                if where(body):
                    return body
            self._emitted.clear()
            await asyncio.wait_for(self._emitted.wait(), 5)


@dataclass
class Locker:
    sim: LockboardSim
    bus: LockBus
    workflow: LockerWorkflow
    emitted: Recorder
    alarms: asyncio.Queue[DoorAlarm] = field(default_factory=asyncio.Queue)


@contextlib.asynccontextmanager
async def running(
    sim: LockboardSim,
    codes: Path,
    settings: LockerConfig | None = None,
    emitted: Recorder | None = None,
    poll_s: float | None = None,
    **kwargs: Any,
) -> AsyncIterator[Locker]:
    """A workflow on ``sim``'s boards, its door watcher running, stopped on exit."""
    emitted = emitted or Recorder()
    alarms: asyncio.Queue[DoorAlarm] = asyncio.Queue()
    boards = [board.address for board in sim.scenario.boards]
    async with (
        SerialLink(sim.device_path, reopen_initial_s=0.02, reopen_max_s=0.05) as link,
        LockBus(
            link, boards=boards, answer_timeout_s=0.1, confirm_delay_s=0.01, poll_interval_s=poll_s
        ) as bus,
    ):
        workflow = LockerWorkflow(
            settings or config(),
            bus,
            emitted,
            scanner=kwargs.pop("scanner", None),
            codes_path=codes,
            on_alarm=alarms.put_nowait,
            **kwargs,
        )
        emitted.decide = workflow.on_decision
        stop = asyncio.Event()
        task = asyncio.create_task(workflow.run(stop))
        try:
            await asyncio.wait_for(workflow.ready.wait(), 5)  # the doors are known
            yield Locker(sim, bus, workflow, emitted, alarms)
        finally:
            stop.set()
            await task


def courier(sim: LockboardSim) -> OnOpen:
    """Puts the parcel in and shuts the door."""

    def act(slot: Slot) -> None:
        sim.insert_item(*slot)
        sim.close_door(*slot)

    return act


def recipient(sim: LockboardSim) -> OnOpen:
    """Takes the parcel out and shuts the door."""

    def act(slot: Slot) -> None:
        sim.remove_item(*slot)
        sim.close_door(*slot)

    return act


def code_for(code: str, waybill: str, slot: Slot, expires_in_s: float | None = None) -> PickupCode:
    salt = os.urandom(16).hex()
    expires = None if expires_in_s is None else utc_now() + timedelta(seconds=expires_in_s)
    return PickupCode(
        waybill=waybill,
        board=slot[0],
        lock=slot[1],
        salt=salt,
        code_hash=pickup_code_hash(code, salt),
        expires=expires,
    )


def code_list(version: int, *codes: PickupCode) -> DecisionMessage:
    body = PickupCodes(version=version, codes=list(codes))
    return DecisionMessage(id=f"codes:{DEVICE}:{version}", ts=utc_now(), body=body)


def decide_send(allowed: bool) -> Callable[[AnyEnvelope], DecisionMessage | None]:
    def answer(envelope: AnyEnvelope) -> DecisionMessage | None:
        if not isinstance(envelope.body, DepositRequestBody):
            return None
        body = DepositDecision(
            waybill=envelope.body.waybill,
            allowed=allowed,
            reason=None if allowed else "no_realname",
        )
        return DecisionMessage(id=f"d-{envelope.id}", ts=utc_now(), request=envelope.id, body=body)

    return answer


def scenario(*boards: SimBoard) -> LockboardScenario:
    return LockboardScenario(boards or (BOARD,))


# --- deposits -----------------------------------------------------------------------------


def test_a_delivery_takes_a_free_slot_of_its_size_and_is_deposited_when_closed_full(
    tmp_path: Path,
) -> None:
    """Lock 1 is occupied, 2 is the wrong size, 3 holds a parcel awaiting pickup: 4 it is."""

    async def body() -> None:
        async with LockboardSim(scenario()) as sim, running(sim, tmp_path / "c.json") as locker:
            locker.workflow.on_decision(code_list(1, code_for("111111", "YT0000000003", (1, 3))))
            outcome = await locker.workflow.deliver(
                "YT0000000004", "S", "courier-7", on_open=courier(sim)
            )
            assert (outcome.status, outcome.slot) == ("deposited", (1, 4))
            assert sim.open_commands == {(1, 4): 1}
            deposits = locker.emitted.bodies(DepositBody)
            assert deposits == [
                DepositBody(
                    waybill="YT0000000004", purpose="delivery", board=1, lock=4, courier="courier-7"
                )
            ]
            kinds = [type(e.body).__name__ for e in locker.emitted.envelopes]
            assert kinds == ["DoorBody", "DepositBody"]  # the door closed, then the deposit
            assert outcome.event == locker.emitted.envelopes[-1].id
            assert locker.workflow.stats.forced == 0

    run_async(body())


def test_a_door_closed_on_an_empty_slot_cancels_and_the_slot_is_free_again(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        async with LockboardSim(scenario()) as sim, running(sim, tmp_path / "c.json") as locker:
            cancelled = await locker.workflow.deliver(
                "YT0000000005", "S", on_open=lambda slot: sim.close_door(*slot)
            )
            assert (cancelled.status, cancelled.slot) == ("cancelled", (1, 3))
            again = await locker.workflow.deliver("YT0000000005", "S", on_open=courier(sim))
            assert (again.status, again.slot) == ("deposited", (1, 3))
            assert len(locker.emitted.bodies(DepositBody)) == 1

    run_async(body())


def test_no_free_slot_of_the_size_refuses_without_opening_anything(tmp_path: Path) -> None:
    full = SimBoard(1, occupied=frozenset({1, 7}), reports=True)

    async def body() -> None:
        async with LockboardSim(scenario(full)) as sim, running(sim, tmp_path / "c.json") as lk:
            assert (await lk.workflow.deliver("YT0000000007", "L")).reason == "no_slot"
            assert (await lk.workflow.deliver("YT0000000007", "XL")).reason == "no_slot"
            assert (await lk.workflow.deliver("bad waybill", "S")).reason == "invalid_waybill"
            assert sim.open_commands == {}
            assert lk.emitted.bodies(DepositBody) == []

    run_async(body())


def test_a_jammed_lock_is_skipped_for_the_next_free_slot(tmp_path: Path) -> None:
    jammed = SimBoard(1, occupied=frozenset({1}), jammed=frozenset({3}), reports=True)

    async def body() -> None:
        async with LockboardSim(scenario(jammed)) as sim, running(sim, tmp_path / "c.json") as lk:
            outcome = await lk.workflow.deliver("YT0000000008", "S", on_open=courier(sim))
            assert (outcome.status, outcome.slot) == ("deposited", (1, 4))
            assert lk.workflow.stats.not_opened == 1
            assert lk.workflow.stats.forced == 0

    run_async(body())


def test_a_door_change_read_before_our_open_is_not_taken_for_its_closing(
    tmp_path: Path,
) -> None:
    """Lock 3 stood open and was shut unseen (no reports, no polling): choosing a slot
    reads it closed, which queues a change; that queued change must not end the deposit,
    which ends when the courier shuts the door."""
    quiet = SimBoard(1, occupied=frozenset({1}), open_doors=frozenset({3}))
    settings = config(deposit_timeout_s=0.3)

    async def body() -> None:
        async with (
            LockboardSim(scenario(quiet)) as sim,
            running(sim, tmp_path / "c", settings) as lk,
        ):
            sim.close_door(1, 3)
            outcome = await lk.workflow.deliver("YT0000000006", "S", on_open=lambda _: None)
            assert (outcome.status, outcome.slot) == ("timeout", (1, 3))
            courier(sim)((1, 3))
            await lk.bus.status(1, 3)  # what a poll would do: the bus sees the door shut
            deposit = await lk.emitted.next(DepositBody)
            assert (deposit.waybill, deposit.lock) == ("YT0000000006", 3)
            assert lk.workflow.stats.cancelled == 0

    run_async(body())


@pytest.mark.parametrize(
    ("allowed", "status", "reason"),
    [(True, "deposited", None), (False, "refused", "no_realname"), (None, "refused", "offline")],
)
def test_a_send_deposit_needs_the_gateways_word(
    allowed: bool | None, status: str, reason: str | None, tmp_path: Path
) -> None:
    """Allowed: deposited as a send. Refused (no real-name record) or no answer in time
    (offline): no slot opens, and the request stays emitted for the record."""
    answer = None if allowed is None else decide_send(allowed)

    async def body() -> None:
        settings = config(decision_timeout_s=0.3)
        async with (
            LockboardSim(scenario()) as sim,
            running(sim, tmp_path / "c.json", settings, Recorder(answer)) as locker,
        ):
            outcome = await locker.workflow.send("YT0000000009", "M", on_open=courier(sim))
            assert (outcome.status, outcome.reason) == (status, reason)
            requests = locker.emitted.bodies(DepositRequestBody)
            assert requests == [DepositRequestBody(waybill="YT0000000009")]
            if allowed:
                assert locker.emitted.bodies(DepositBody) == [
                    DepositBody(waybill="YT0000000009", purpose="send", board=1, lock=2)
                ]
                assert sim.open_commands == {(1, 2): 1}
            else:
                assert sim.open_commands == {}
                assert locker.emitted.bodies(DepositBody) == []
            if allowed is None:
                request = locker.emitted.envelopes[0]
                late = decide_send(True)(request)
                assert late is not None
                locker.workflow.on_decision(late)
                assert locker.workflow.stats.late_decisions == 1
                assert sim.open_commands == {}

    run_async(body())


# --- pickups ------------------------------------------------------------------------------

PARCEL = SimBoard(1, occupied=frozenset({1, 5}), reports=True)
CODE = "482913"
ENTRY = code_for(CODE, "YT0000000010", (1, 5), expires_in_s=3600)


def test_a_valid_code_opens_its_slot_and_a_wrong_one_opens_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        async with LockboardSim(scenario(PARCEL)) as sim, running(sim, tmp_path / "c") as lk:
            lk.workflow.on_decision(code_list(1, ENTRY, code_for("555555", "YT0000000011", (1, 6))))
            wrong = await lk.workflow.pickup("000000", on_open=recipient(sim))
            assert (wrong.status, wrong.reason) == ("refused", "invalid_code")
            assert sim.open_commands == {}
            outcome = await lk.workflow.pickup(CODE, on_open=recipient(sim))
            assert (outcome.status, outcome.slot, outcome.waybill) == (
                "collected",
                (1, 5),
                "YT0000000010",
            )
            assert lk.emitted.bodies(PickupBody) == [
                PickupBody(waybill="YT0000000010", board=1, lock=5)
            ]
            assert sim.open_commands == {(1, 5): 1}
            spent = await lk.workflow.pickup(CODE, on_open=recipient(sim))
            assert spent.reason == "invalid_code"  # a code opens once
            assert sim.open_commands == {(1, 5): 1}
            assert [e.waybill for e in lk.workflow.codes.entries()] == ["YT0000000011"]
            assert lk.workflow.keypad.wrong_codes == 2
            assert lk.workflow.stats.forced == 0

    run_async(body())


def test_a_recipient_who_leaves_the_parcel_keeps_the_code(tmp_path: Path) -> None:
    async def body() -> None:
        async with LockboardSim(scenario(PARCEL)) as sim, running(sim, tmp_path / "c") as lk:
            lk.workflow.on_decision(code_list(1, ENTRY))
            shut = await lk.workflow.pickup(CODE, on_open=lambda slot: sim.close_door(*slot))
            assert shut.status == "not_taken"
            assert lk.emitted.bodies(PickupBody) == []
            assert (await lk.workflow.pickup(CODE, on_open=recipient(sim))).status == "collected"

    run_async(body())


def test_an_expired_code_is_refused(tmp_path: Path) -> None:
    old = code_for("777777", "YT0000000012", (1, 5), expires_in_s=-60)

    async def body() -> None:
        async with LockboardSim(scenario(PARCEL)) as sim, running(sim, tmp_path / "c") as lk:
            lk.workflow.on_decision(code_list(1, old))
            outcome = await lk.workflow.pickup("777777", on_open=recipient(sim))
            assert (outcome.status, outcome.reason) == ("refused", "expired")
            assert sim.open_commands == {}

    run_async(body())


def test_wrong_codes_lock_the_keypad_for_a_while(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    settings = config(max_wrong_codes=3, wrong_code_window_s=60, lockout_s=120)

    async def body() -> None:
        async with (
            LockboardSim(scenario(PARCEL)) as sim,
            running(sim, tmp_path / "c", settings, clock=clock) as lk,
        ):
            lk.workflow.on_decision(code_list(1, ENTRY))
            for wrong in ("1", "2"):
                assert (await lk.workflow.pickup(wrong)).reason == "invalid_code"
            clock.at(61)  # those two fall out of the window
            for wrong in ("3", "4"):
                assert (await lk.workflow.pickup(wrong)).reason == "invalid_code"
            assert (await lk.workflow.pickup("5")).reason == "invalid_code"
            locked = await lk.workflow.pickup(CODE, on_open=recipient(sim))
            assert locked.reason == "locked_out"
            assert sim.open_commands == {}
            clock.at(61 + 121)
            assert (await lk.workflow.pickup(CODE, on_open=recipient(sim))).status == "collected"

    run_async(body())


def test_codes_survive_a_restart_and_work_with_no_gateway_at_all(tmp_path: Path) -> None:
    """The list is on disk (0600, hashes only); a spent code stays spent even when a list
    made before the gateway heard of the pickup comes later."""
    codes = tmp_path / "state" / "codes.json"

    async def body() -> None:
        async with LockboardSim(scenario(PARCEL)) as sim:
            async with running(sim, codes) as first:
                first.workflow.on_decision(code_list(3, ENTRY))
            assert stat.S_IMODE(codes.stat().st_mode) == 0o600
            text = codes.read_text()
            assert ENTRY.code_hash in text
            assert CODE not in text
            async with running(sim, codes) as second:
                assert second.workflow.codes.version == 3
                outcome = await second.workflow.pickup(CODE, on_open=recipient(sim))
                assert outcome.status == "collected"
                assert second.emitted.bodies(PickupBody) == [
                    PickupBody(waybill="YT0000000010", board=1, lock=5)
                ]
                second.workflow.on_decision(code_list(4, ENTRY))  # made before the pickup
                assert second.workflow.codes.entries() == ()
            async with running(sim, codes) as third:
                sim.insert_item(1, 5)
                assert (await third.workflow.pickup(CODE)).reason == "invalid_code"
                third.workflow.on_decision(code_list(5))
                assert json.loads(codes.read_text())["used"] == []

    run_async(body())


# --- door alarms --------------------------------------------------------------------------


def test_a_door_left_open_raises_an_alarm_and_the_pickup_ends_when_it_closes(
    tmp_path: Path,
) -> None:
    settings = config(door_open_alarm_s=0.2, pickup_timeout_s=0.3)

    async def body() -> None:
        async with (
            LockboardSim(scenario(PARCEL)) as sim,
            running(sim, tmp_path / "c", settings) as lk,
        ):
            lk.workflow.on_decision(code_list(1, ENTRY))
            walks_away = await lk.workflow.pickup(CODE, on_open=lambda slot: sim.remove_item(*slot))
            assert walks_away.status == "timeout"
            alarm = await asyncio.wait_for(lk.alarms.get(), 5)
            assert (alarm.board, alarm.lock, alarm.alarm) == (1, 5, "left_open")
            assert alarm.seconds >= 0.2
            still_open = await lk.emitted.next(DoorBody, lambda b: b.door == "open")
            assert (still_open.lock, still_open.cause) == (5, "poll")
            assert lk.emitted.bodies(PickupBody) == []
            sim.close_door(1, 5)
            assert await lk.emitted.next(PickupBody) == PickupBody(
                waybill="YT0000000010", board=1, lock=5
            )
            assert lk.workflow.stats.left_open == 1
            assert lk.workflow.stats.forced == 0

    run_async(body())


@pytest.mark.parametrize("reports", [True, False], ids=["reported", "polled"])
def test_a_door_opened_without_our_command_is_forced(reports: bool, tmp_path: Path) -> None:
    board = SimBoard(2, occupied=frozenset({8}), reports=reports)
    settings = LockerConfig.model_validate({"slots": [{"board": 2, "locks": "1-8", "size": "M"}]})

    async def body() -> None:
        async with (
            LockboardSim(scenario(board)) as sim,
            running(sim, tmp_path / "c", settings, poll_s=None if reports else 0.05) as lk,
        ):
            sim.force_open(2, 8)
            alarm = await asyncio.wait_for(lk.alarms.get(), 5)
            assert (alarm.board, alarm.lock, alarm.alarm) == (2, 8, "forced")
            door = await lk.emitted.next(DoorBody, lambda b: b.lock == 8)
            assert (door.door, door.cause) == ("open", "report" if reports else "poll")
            assert lk.workflow.stats.forced == 1

    run_async(body())


def test_a_slot_opened_by_command_is_expected_and_still_timed(tmp_path: Path) -> None:
    """An operator's ``open_slot``: no ``forced`` alarm for its door, but left open too
    long it raises ``left_open`` like any other; a slot a pickup is using is refused."""
    settings = config(door_open_alarm_s=0.2)

    async def body() -> None:
        async with (
            LockboardSim(scenario(PARCEL)) as sim,
            running(sim, tmp_path / "c", settings) as lk,
        ):
            door = await lk.workflow.open_on_command(1, 3)
            assert (door.board, door.lock, door.door) == (1, 3, "open")
            alarm = await asyncio.wait_for(lk.alarms.get(), 5)
            assert (alarm.board, alarm.lock, alarm.alarm) == (1, 3, "left_open")
            sim.close_door(1, 3)
            await lk.emitted.next(DoorBody, lambda b: b.lock == 3 and b.door == "closed")

            lk.workflow.on_decision(code_list(1, ENTRY))
            opened = asyncio.Event()
            pickup = asyncio.create_task(
                lk.workflow.pickup(CODE, on_open=lambda slot: opened.set())
            )
            await asyncio.wait_for(opened.wait(), 5)
            with pytest.raises(CommandFailed) as refused:
                await lk.workflow.open_on_command(1, 5)
            assert refused.value.reason == "slot_in_use"
            sim.remove_item(1, 5)
            sim.close_door(1, 5)
            assert (await asyncio.wait_for(pickup, 5)).status == "collected"
            assert sim.open_commands == {(1, 3): 1, (1, 5): 1}
            stats = lk.workflow.stats
            assert (stats.opened_on_command, stats.forced, stats.left_open) == (1, 0, 1)
            assert lk.alarms.empty()

    run_async(body())


def test_a_command_for_a_slot_not_on_the_bus_leaves_nothing_expected(tmp_path: Path) -> None:
    async def body() -> None:
        async with LockboardSim(scenario(PARCEL)) as sim, running(sim, tmp_path / "c") as lk:
            with pytest.raises(ValueError, match="board"):
                await lk.workflow.open_on_command(9, 1)
            assert lk.workflow.stats.opened_on_command == 0
            assert sim.open_commands == {}

    run_async(body())


# --- scanner, config and cache ------------------------------------------------------------


def test_scanned_waybills_reach_the_panel_and_every_scan_is_emitted(tmp_path: Path) -> None:
    codes = (SimulatedCode("not a waybill!", "qr", 0.0), SimulatedCode("YT0000000014", delay_s=0))
    scan_scenario = ScannerScenario(codes, repeat=False)

    async def body() -> None:
        async with (
            ScannerSimulator(scan_scenario, autoplay=False) as scan_sim,
            SerialLink(scan_sim.device_path) as scan_link,
            SerialScanner(scan_link, reader="locker-scanner") as scanner,
            LockboardSim(scenario()) as sim,
            running(sim, tmp_path / "c", scanner=scanner) as lk,
        ):
            await scan_sim.play()
            assert await lk.workflow.next_waybill(5) == "YT0000000014"
            assert [scan.code for scan in lk.emitted.bodies(ScanBody)] == [
                "not a waybill!",
                "YT0000000014",
            ]
            assert await lk.workflow.next_waybill(0.05) is None

    run_async(body())


def test_the_locker_section_reads_from_toml_and_rejects_mistakes() -> None:
    text = """
        slots = [{ board = 1, locks = "1-8", size = "S" }, { board = 2, lock = 1, size = "XL" }]
        door_open_alarm_s = 90
    """
    parsed = LockerConfig.model_validate(tomllib.loads(text))
    assert list(parsed.sizes()) == [(1, lock) for lock in range(1, 9)] + [(2, 1)]
    assert parsed.sizes()[2, 1] == "XL"
    bad = [
        {"slots": [{"board": 1, "lock": 1, "locks": "1-2", "size": "S"}]},
        {"slots": [{"board": 1, "locks": "5-2", "size": "S"}]},
        {
            "slots": [
                {"board": 1, "locks": "1-3", "size": "S"},
                {"board": 1, "lock": 2, "size": "M"},
            ]
        },
        {"slots": [{"board": 1, "lock": 1, "size": "XXL"}]},
        {"slots": [{"board": 1, "lock": 1, "size": "S"}], "door_alarm": 5},
        {"slots": []},
    ]
    for data in bad:
        with pytest.raises(ValidationError):
            LockerConfig.model_validate(data)


def test_the_code_cache_takes_only_newer_lists_and_survives_a_damaged_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "codes.json"
    cache = CodeCache(path)
    entry = code_for("123456", "YT0000000015", (1, 2))
    assert cache.replace(PickupCodes(version=2, codes=[entry]))
    assert not cache.replace(PickupCodes(version=2, codes=[]))  # a resend of version 2
    assert not cache.replace(PickupCodes(version=1, codes=[]))  # late
    assert CodeCache(path).entries() == (entry,)
    path.write_text("{ not json")
    damaged = CodeCache(path)
    assert (damaged.entries(), damaged.version) == ((), 0)
    assert "unreadable" in caplog.text
    assert "not json" not in caplog.text
