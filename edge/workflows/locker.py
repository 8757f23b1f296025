"""The smart-locker workflow: couriers deposit, senders send, recipients pick up.

A deposit or a pickup is a transaction on one slot that ends when its door closes: the
slot opens by our command, and the door watcher (:meth:`LockerWorkflow.run`, the lock
bus's only event consumer) finishes it when the door is seen closed, reading the item
sensor: ``deposit`` if a parcel lies in the slot, ``pickup`` if the slot is empty. A
caller that stops waiting (timeout) gets ``timeout``, and the transaction still ends
when the door closes, so a deposit or pickup is never lost to a slow person.

Pickups work offline: codes come from the gateway as salted hashes (see
:mod:`edge.workflows.lockercodes`) and are checked here. A send-deposit needs the
gateway's word (the sender's real-name record is the gateway's), so without a decision
in time it is refused as ``offline``. Everything is emitted through ``emit``, whose
outbox publishes later, in order, what happened while the link was down.

Doors are watched: one opened without our command is ``forced``; one open longer than
``door_open_alarm_s`` is ``left_open``. Both are counted, logged, and handed to
``on_alarm``; the door change itself goes out as a ``door`` event. An operator's
``open_slot`` command opens through :meth:`LockerWorkflow.open_on_command`, so its door
is expected (never ``forced``) and timed (``left_open``) like the workflow's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from contracts import (
    DecisionMessage,
    DepositBody,
    DepositDecision,
    DepositRequestBody,
    DoorBody,
    PickupBody,
    PickupCode,
    PickupCodes,
)
from contracts.events import Waybill
from contracts.ids import Identifier
from contracts.timestamps import utc_now
from edge.commands import CommandFailed
from edge.tasks import run_until
from edge.workflows import DecisionWaiter, Emit, ScanSource
from edge.workflows.lockercodes import CodeCache, Keypad, Slot
from firmware_bridge.errors import BridgeError
from firmware_bridge.lockboard import LockNotOpened

log = logging.getLogger(__name__)

SlotSize = Literal["S", "M", "L", "XL"]
_STRICT = ConfigDict(extra="forbid", frozen=True)
_WAYBILL: TypeAdapter[str] = TypeAdapter(Waybill)
_COURIER: TypeAdapter[str | None] = TypeAdapter(Identifier | None)
_SCAN_QUEUE = 16


class SlotGroup(BaseModel):
    """Slots of one size on one board: ``lock = 3`` or ``locks = "1-8"``."""

    model_config = _STRICT

    board: int = Field(ge=0, le=255)
    lock: int | None = Field(default=None, ge=1, le=24)
    locks: str | None = Field(default=None, pattern=r"^[0-9]{1,2}-[0-9]{1,2}$")
    size: SlotSize

    @model_validator(mode="after")
    def _lock_or_range(self) -> Self:
        if (self.lock is None) == (self.locks is None):
            raise ValueError("give either lock or locks")
        if self.locks is not None:
            first, last = (int(part) for part in self.locks.split("-"))
            if not 1 <= first <= last <= 24:
                raise ValueError(f"locks {self.locks!r}: need 1 <= first <= last <= 24")
        return self

    def slots(self) -> list[Slot]:
        if self.lock is not None:
            return [(self.board, self.lock)]
        assert self.locks is not None
        first, last = (int(part) for part in self.locks.split("-"))
        return [(self.board, lock) for lock in range(first, last + 1)]


class LockerConfig(BaseModel):
    """``[devices.locker]``: the slots with their sizes, and how long people may take."""

    model_config = _STRICT

    slots: list[SlotGroup] = Field(min_length=1)
    door_open_alarm_s: float = Field(default=120.0, gt=0, le=86_400)
    deposit_timeout_s: float = Field(default=120.0, gt=0, le=3_600)
    """How long a deposit call waits for the door to close (the deposit still ends later)."""
    pickup_timeout_s: float = Field(default=120.0, gt=0, le=3_600)
    decision_timeout_s: float = Field(default=5.0, gt=0, le=60)
    """How long a send-deposit waits for the gateway's decision before refusing it."""
    max_wrong_codes: int = Field(default=5, ge=1, le=1_000)
    wrong_code_window_s: float = Field(default=300.0, gt=0)
    lockout_s: float = Field(default=300.0, ge=0)

    @model_validator(mode="after")
    def _slots_once(self) -> Self:
        listed = [slot for group in self.slots for slot in group.slots()]
        if len(set(listed)) != len(listed):
            raise ValueError("a slot (board, lock) is listed twice")
        return self

    def sizes(self) -> dict[Slot, SlotSize]:
        """Every slot and its size, in the order of the file (the order slots are used)."""
        return {slot: group.size for group in self.slots for slot in group.slots()}


DepositStatus = Literal["deposited", "cancelled", "refused", "timeout", "failed"]
PickupStatus = Literal["collected", "not_taken", "refused", "timeout", "failed"]


@dataclass(frozen=True)
class DepositOutcome:
    """How a deposit ended. ``reason`` for refused and failed: ``invalid_waybill``,
    ``invalid_courier``, ``no_slot``, ``no_realname``, ``offline``, ``not_recorded``,
    ``bad_decision``, ``not_opened``, ``bus_error``. ``event`` is the deposit's message id."""

    status: DepositStatus
    reason: str | None = None
    slot: Slot | None = None
    event: str | None = None


@dataclass(frozen=True)
class PickupOutcome:
    """How a pickup ended. ``reason`` for refused and failed: ``invalid_code``,
    ``expired``, ``locked_out``, ``busy``, ``not_opened``, ``bus_error``."""

    status: PickupStatus
    reason: str | None = None
    slot: Slot | None = None
    waybill: str | None = None
    event: str | None = None


@dataclass(frozen=True)
class DoorAlarm:
    """A door open too long (``left_open``) or opened without our command (``forced``)."""

    board: int
    lock: int
    alarm: Literal["left_open", "forced"]
    seconds: float


@dataclass
class LockerStats:
    deposits: int = 0
    cancelled: int = 0
    pickups: int = 0
    not_taken: int = 0
    not_opened: int = 0
    sends_refused: int = 0
    sends_offline: int = 0
    left_open: int = 0
    forced: int = 0
    code_lists: int = 0
    stale_code_lists: int = 0
    late_decisions: int = 0
    opened_on_command: int = 0

    def as_dict(self) -> dict[str, int]:
        return {item.name: getattr(self, item.name) for item in fields(self)}


class LockBoards(Protocol):
    """What the workflow needs of :class:`firmware_bridge.lockboard.LockBus`."""

    async def open(self, board: int, lock: int) -> DoorBody: ...
    async def status(self, board: int, lock: int) -> DoorBody: ...
    async def all_status(self, board: int) -> list[DoorBody]: ...
    def events(self) -> AsyncIterator[DoorBody]: ...


OnOpen = Callable[[Slot], None]
"""Told which slot stands open (the panel shows it to the person)."""


@dataclass
class _Deposit:
    waybill: str
    purpose: Literal["delivery", "send"]
    courier: str | None
    done: asyncio.Future[DepositOutcome]


@dataclass
class _Pickup:
    entry: PickupCode
    done: asyncio.Future[PickupOutcome]


class LockerWorkflow:
    """One locker's slots on ``bus``; :meth:`run` must be running for doors to be watched
    and for deposits and pickups to finish. ``clock`` is monotonic seconds (alarms,
    lockout), ``wall_clock`` the UTC time that code expiry is checked against."""

    def __init__(
        self,
        config: LockerConfig,
        bus: LockBoards,
        emit: Emit,
        *,
        scanner: ScanSource | None,
        codes_path: Path,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = utc_now,
        on_alarm: Callable[[DoorAlarm], None] | None = None,
    ) -> None:
        self.config = config
        self.stats = LockerStats()
        self.codes = CodeCache(codes_path)
        self._bus = bus
        self._emit = emit
        self._scanner = scanner
        self._clock = clock
        self._on_alarm = on_alarm
        self._sizes = config.sizes()
        self.keypad = Keypad(
            self.codes,
            max_wrong=config.max_wrong_codes,
            window_s=config.wrong_code_window_s,
            lockout_s=config.lockout_s,
            clock=clock,
            wall_clock=wall_clock,
        )
        self._decisions = DecisionWaiter()
        self._pending: dict[Slot, _Deposit | _Pickup] = {}
        self._commanded: set[Slot] = set()
        self._open_since: dict[Slot, float] = {}
        self._alarmed: set[Slot] = set()
        self._scans: asyncio.Queue[str] = asyncio.Queue(_SCAN_QUEUE)
        self.ready = asyncio.Event()
        """Set once :meth:`run` has read the doors: every change after it is watched."""

    # --- the panel's calls ------------------------------------------------------------

    async def deliver(
        self, waybill: str, size: str, courier: str | None = None, *, on_open: OnOpen | None = None
    ) -> DepositOutcome:
        """A courier's delivery: a free slot of ``size`` opens; ``deposit`` once it closes
        with the parcel inside."""
        if not _valid(_WAYBILL, waybill):
            return DepositOutcome("refused", "invalid_waybill")
        if not _valid(_COURIER, courier):
            return DepositOutcome("refused", "invalid_courier")
        return await self._deposit(waybill, size, "delivery", courier, on_open)

    async def send(
        self, waybill: str, size: str, *, on_open: OnOpen | None = None
    ) -> DepositOutcome:
        """A sender's parcel: only if the gateway says it has a real-name record."""
        if not _valid(_WAYBILL, waybill):
            return DepositOutcome("refused", "invalid_waybill")
        try:
            if not await self._free_slots(size):
                return DepositOutcome("refused", "no_slot")  # no need to ask anyone
        except BridgeError:
            return DepositOutcome("failed", "bus_error")
        envelope = self._emit(DepositRequestBody(waybill=waybill))
        if envelope is None:
            return DepositOutcome("failed", "not_recorded")
        answer = self._decisions.expect(envelope.id)
        try:
            message = await asyncio.wait_for(answer, self.config.decision_timeout_s)
        except TimeoutError:
            # The request stays in the outbox and is decided later, for the record only.
            self.stats.sends_offline += 1
            return DepositOutcome("refused", "offline")
        decision = message.body
        if not isinstance(decision, DepositDecision) or decision.waybill != waybill:
            return DepositOutcome("refused", "bad_decision")
        if not decision.allowed:
            self.stats.sends_refused += 1
            return DepositOutcome("refused", decision.reason or "no_realname")
        return await self._deposit(waybill, size, "send", None, on_open)

    async def pickup(self, code: str, *, on_open: OnOpen | None = None) -> PickupOutcome:
        """A recipient's code: its slot opens; ``pickup`` once it closes empty. Offline too."""
        entry = await self.keypad.check(code)
        if isinstance(entry, str):
            return PickupOutcome("refused", entry)
        slot = (entry.board, entry.lock)
        if slot in self._pending:
            return PickupOutcome("refused", "busy", slot, entry.waybill)
        pending = _Pickup(entry, asyncio.get_running_loop().create_future())
        failure = await self._open_for(slot, pending)
        if failure is not None:
            return PickupOutcome("failed", failure, slot, entry.waybill)
        if on_open is not None:
            on_open(slot)
        try:
            return await asyncio.wait_for(
                asyncio.shield(pending.done), self.config.pickup_timeout_s
            )
        except TimeoutError:
            return PickupOutcome("timeout", None, slot, entry.waybill)

    async def next_waybill(self, timeout_s: float) -> str | None:
        """The next waybill the scanner read (the panel's "scan the parcel" step)."""
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self._scans.get(), timeout_s)
        return None

    # --- the runtime's calls -----------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Watch doors (and the scanner) until ``stop``; deposits and pickups end here."""
        self.codes.load()
        await self._learn_doors()
        self.ready.set()
        work = [self._watch_doors(), self._watch_clock()]
        if self._scanner is not None:
            work.append(self._watch_scans(self._scanner))
        await run_until(stop, work)

    async def open_on_command(self, board: int, lock: int) -> DoorBody:
        """Open a slot for an operator's ``open_slot`` command; the door as read after.

        The door is then ours (no ``forced`` alarm) and timed like any other (left open
        too long, it raises ``left_open``). A slot a deposit or pickup is using is refused
        as ``slot_in_use``; a slot not on this bus raises ``ValueError``, a lock that did
        not open ``LockNotOpened`` (as :meth:`LockBus.open`).
        """
        slot = (board, lock)
        if slot in self._pending:
            raise CommandFailed("slot_in_use", f"slot {board}/{lock} is in use at the locker")
        self._commanded.add(slot)
        try:
            body = await self._bus.open(board, lock)
        except (LockNotOpened, ValueError):
            self._commanded.discard(slot)
            raise  # any other bus error: still "commanded", the door may have opened
        self.stats.opened_on_command += 1
        self._open_since[slot] = self._clock()
        self._alarmed.discard(slot)
        log.info("locker: slot %d/%d opened by command", board, lock)
        return body

    def on_decision(self, message: DecisionMessage) -> None:
        body = message.body
        if isinstance(body, PickupCodes):
            if self.codes.replace(body):
                self.stats.code_lists += 1
                log.info("pickup codes version %d: %d codes", body.version, len(body.codes))
            else:
                self.stats.stale_code_lists += 1
        elif isinstance(body, DepositDecision):
            if not self._decisions.deliver(message):
                self.stats.late_decisions += 1  # its send was refused as offline meanwhile
        else:
            log.warning("locker ignored a %s decision", body.kind)

    async def check_doors(self) -> None:
        """Raise ``left_open`` for doors open too long (run calls this periodically)."""
        now = self._clock()
        for slot, since in list(self._open_since.items()):
            if slot in self._alarmed or now - since < self.config.door_open_alarm_s:
                continue
            try:
                body = await self._bus.status(*slot)
            except BridgeError:
                continue  # counted and logged by the bus; tried again on the next tick
            if body.door == "closed":
                continue  # a change the bus now queues for the door watcher
            self._alarmed.add(slot)
            self._emit(body)
            self._alarm(slot, "left_open", now - since)

    # --- slots and doors --------------------------------------------------------------

    async def _deposit(
        self,
        waybill: str,
        size: str,
        purpose: Literal["delivery", "send"],
        courier: str | None,
        on_open: OnOpen | None,
    ) -> DepositOutcome:
        try:
            free = await self._free_slots(size)
        except BridgeError:
            return DepositOutcome("failed", "bus_error")
        tried_jammed = False
        for slot in free:
            if slot in self._pending or slot in self.codes.slots():
                continue  # taken while we were reading the boards
            pending = _Deposit(
                waybill, purpose, courier, asyncio.get_running_loop().create_future()
            )
            failure = await self._open_for(slot, pending)
            if failure == "not_opened":
                tried_jammed = True
                continue  # a jammed lock: the next free slot of that size
            if failure is not None:
                return DepositOutcome("failed", failure, slot)
            if on_open is not None:
                on_open(slot)
            try:
                timeout = self.config.deposit_timeout_s
                return await asyncio.wait_for(asyncio.shield(pending.done), timeout)
            except TimeoutError:
                return DepositOutcome("timeout", None, slot)
        if tried_jammed:
            return DepositOutcome("failed", "not_opened")
        return DepositOutcome("refused", "no_slot")

    async def _free_slots(self, size: str) -> list[Slot]:
        """Slots of ``size`` with the door closed, no parcel seen, and no code or
        transaction on them, read fresh from the boards."""
        wanted = [slot for slot, slot_size in self._sizes.items() if slot_size == size]
        seen: dict[Slot, DoorBody] = {}
        for board in sorted({board for board, _ in wanted}):
            for body in await self._bus.all_status(board):
                seen[body.board, body.lock] = body
        held = self.codes.slots() | set(self._pending)
        return [
            slot
            for slot in wanted
            if slot in seen
            and seen[slot].door == "closed"
            and seen[slot].occupied is not True  # None: no sensor; trust the courier
            and slot not in held
        ]

    async def _open_for(self, slot: Slot, pending: _Deposit | _Pickup) -> str | None:
        """Open ``slot`` for ``pending``; the failure reason, or None once it stands open."""
        self._pending[slot] = pending
        self._commanded.add(slot)
        try:
            await self._bus.open(*slot)
        except LockNotOpened:
            self.stats.not_opened += 1
            del self._pending[slot]
            self._commanded.discard(slot)
            return "not_opened"
        except BridgeError:
            del self._pending[slot]  # still "commanded": the door may have opened after all
            return "bus_error"
        self._open_since[slot] = self._clock()
        self._alarmed.discard(slot)
        return None

    async def _learn_doors(self) -> None:
        """Doors already open at start are timed from now (not forced: we cannot know)."""
        for board in sorted({board for board, _ in self._sizes}):
            try:
                bodies = await self._bus.all_status(board)
            except BridgeError:
                continue  # the bus logged it; changes arrive once the board answers
            for body in bodies:
                if body.door == "open":
                    self._open_since.setdefault((body.board, body.lock), self._clock())

    async def _watch_doors(self) -> None:
        async for body in self._bus.events():
            self._emit(body)
            slot = (body.board, body.lock)
            if body.door == "open":
                self._open_since.setdefault(slot, self._clock())
                if slot not in self._commanded:
                    self._alarm(slot, "forced", 0.0)
            else:
                await self._closed(slot, body)

    async def _closed(self, slot: Slot, body: DoorBody) -> None:
        pending = self._pending.get(slot)
        if pending is not None:
            # The event may have waited in the queue since before our open: read the door.
            with contextlib.suppress(BridgeError):
                body = await self._bus.status(*slot)
            if body.door == "open":
                return
        self._open_since.pop(slot, None)
        self._alarmed.discard(slot)
        self._commanded.discard(slot)
        if pending is not None and self._pending.get(slot) is pending:
            del self._pending[slot]
            if isinstance(pending, _Deposit):
                self._finish_deposit(slot, pending, body)
            else:
                self._finish_pickup(slot, pending, body)

    def _finish_deposit(self, slot: Slot, pending: _Deposit, body: DoorBody) -> None:
        if body.occupied is False:
            self.stats.cancelled += 1
            outcome = DepositOutcome("cancelled", None, slot)
        else:
            envelope = self._emit(
                DepositBody(
                    waybill=pending.waybill,
                    purpose=pending.purpose,
                    board=slot[0],
                    lock=slot[1],
                    courier=pending.courier,
                )
            )
            self.stats.deposits += 1
            event = None if envelope is None else envelope.id
            outcome = DepositOutcome("deposited", None, slot, event)
        if not pending.done.done():
            pending.done.set_result(outcome)

    def _finish_pickup(self, slot: Slot, pending: _Pickup, body: DoorBody) -> None:
        waybill = pending.entry.waybill
        if body.occupied is True:
            self.stats.not_taken += 1  # the code stays good
            outcome = PickupOutcome("not_taken", None, slot, waybill)
        else:
            envelope = self._emit(PickupBody(waybill=waybill, board=slot[0], lock=slot[1]))
            self.codes.consume(pending.entry)
            self.stats.pickups += 1
            event = None if envelope is None else envelope.id
            outcome = PickupOutcome("collected", None, slot, waybill, event)
        if not pending.done.done():
            pending.done.set_result(outcome)

    def _alarm(self, slot: Slot, kind: Literal["left_open", "forced"], seconds: float) -> None:
        if kind == "forced":
            self.stats.forced += 1
        else:
            self.stats.left_open += 1
        log.warning("locker board %d lock %d: door %s", slot[0], slot[1], kind.replace("_", " "))
        if self._on_alarm is not None:
            self._on_alarm(DoorAlarm(slot[0], slot[1], kind, round(seconds, 1)))

    async def _watch_clock(self) -> None:
        interval = min(1.0, self.config.door_open_alarm_s / 4)
        while True:
            await asyncio.sleep(interval)  # the resolution of the left-open alarm
            await self.check_doors()

    async def _watch_scans(self, scanner: ScanSource) -> None:
        async for scan in scanner.scans():
            self._emit(scan)
            if not _valid(_WAYBILL, scan.code):
                continue
            if self._scans.full():
                self._scans.get_nowait()  # nobody at the panel took it: the newest counts
            self._scans.put_nowait(scan.code)


def _valid(adapter: TypeAdapter[Any], value: object) -> bool:
    try:
        adapter.validate_python(value)
    except ValidationError:
        return False
    return True
