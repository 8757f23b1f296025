"""Simulated parcel-locker lock boards on one RS-485 bus, over a pty.

Boards are data (:class:`SimBoard`): address, locks, which slots hold parcels, which doors
stand open, which locks are jammed, whether the board reports door changes. A
:class:`LockboardScenario` adds what people do (close a door some seconds after it opened,
take the parcel), timed actions (a door forced open, an item removed, the cable pulled)
and line faults. :class:`LockboardSim` answers the driver with the same codec it uses, and
only for its own addresses, as boards on a shared bus do.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from contracts.configfile import ConfigFileError, load_toml_model
from firmware_bridge.checks import check_int, check_seconds
from firmware_bridge.codec import FrameStream
from firmware_bridge.lockboard.codec import (
    MAX_LOCKS,
    XOR5,
    DoorReply,
    DoorReport,
    DoorsReply,
    ItemsReply,
    LockCodec,
    OpenLock,
    OpenReply,
    QueryDoor,
    QueryDoors,
    Reply,
    Request,
)
from firmware_bridge.sim.faults import NO_FAULTS, LineFaults, LineFaultsConfig
from firmware_bridge.sim.serial_device import SerialDeviceSim

SlotAction = Literal["close", "force_open", "remove_item", "insert_item"]
LineAction = Literal["unplug", "replug"]
Action = SlotAction | LineAction
SLOT_ACTIONS: tuple[SlotAction, ...] = get_args(SlotAction)
ACTIONS: tuple[str, ...] = (*SLOT_ACTIONS, *get_args(LineAction))


@dataclass(frozen=True)
class SimBoard:
    """One simulated board: its bus address and how its slots start out."""

    address: int
    locks: int = MAX_LOCKS
    occupied: frozenset[int] = frozenset()
    open_doors: frozenset[int] = frozenset()
    jammed: frozenset[int] = frozenset()
    """Locks that click but do not open."""
    reports: bool = False
    """Sends a report when a door changes other than by command."""
    item_sensors: bool = True

    def __post_init__(self) -> None:
        check_int("address", self.address, 0, 0xFF)
        check_int("locks", self.locks, 1, MAX_LOCKS)
        for name in ("occupied", "open_doors", "jammed"):
            slots = getattr(self, name)
            if not isinstance(slots, frozenset):
                raise TypeError(f"board {self.address}: {name} must be a frozenset")
            if not all(_is_lock(lock, self.locks) for lock in slots):
                raise ValueError(f"board {self.address}: {name} must be locks 1..{self.locks}")
        if not isinstance(self.reports, bool) or not isinstance(self.item_sensors, bool):
            raise TypeError(f"board {self.address}: reports and item_sensors must be bools")

    def describe(self) -> str:
        """One line for people."""
        parts = [f"board {self.address}: {self.locks} locks"]
        parts.append("item sensors" if self.item_sensors else "no item sensors")
        parts.append("reports door changes" if self.reports else "no reports")
        for name, slots in (
            ("occupied", self.occupied),
            ("open", self.open_doors),
            ("jammed", self.jammed),
        ):
            if slots:
                parts.append(f"{name} {','.join(map(str, sorted(slots)))}")
        return ", ".join(parts)


def _is_lock(lock: object, locks: int) -> bool:
    return isinstance(lock, int) and not isinstance(lock, bool) and 1 <= lock <= locks


@dataclass(frozen=True)
class SimAction:
    """Something that happens ``at_s`` seconds after the simulator starts."""

    at_s: float
    action: Action
    board: int | None = None
    lock: int | None = None

    def __post_init__(self) -> None:
        check_seconds("at_s", self.at_s)
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, not {self.action!r}")
        needs_slot = self.action in SLOT_ACTIONS
        if needs_slot != (self.board is not None and self.lock is not None):
            raise ValueError(f"{self.action}: board and lock are needed for slot actions only")


@dataclass(frozen=True)
class LockboardScenario:
    """The boards on the bus, what people and the line do, and when."""

    boards: tuple[SimBoard, ...]
    actions: tuple[SimAction, ...] = ()
    close_after_s: float | None = None
    """A person closes a door this long after it opened by command (None: never)."""
    take_item: bool = False
    """That person takes the parcel out before closing."""
    faults: LineFaults = field(default=NO_FAULTS)

    def __post_init__(self) -> None:
        if not self.boards or not all(isinstance(b, SimBoard) for b in self.boards):
            raise ValueError("a scenario needs at least one SimBoard")
        addresses = [board.address for board in self.boards]
        if len(set(addresses)) != len(addresses):
            raise ValueError(f"board addresses must be unique on a bus, got {addresses}")
        if self.close_after_s is not None:
            check_seconds("close_after_s", self.close_after_s)
        if not isinstance(self.faults, LineFaults):
            raise TypeError("faults must be LineFaults")
        for action in self.actions:
            if action.board is not None and not _is_lock(
                action.lock, self.board(action.board).locks
            ):
                raise ValueError(f"{action.action} at {action.at_s} s: no lock {action.lock}")

    def board(self, address: int) -> SimBoard:
        for board in self.boards:
            if board.address == address:
                return board
        raise ValueError(f"no board {address} in the scenario")


DEFAULT_SCENARIO = LockboardScenario(
    boards=(
        SimBoard(1, occupied=frozenset({1, 2, 3}), jammed=frozenset({24}), reports=True),
        SimBoard(2, occupied=frozenset({5})),
    ),
    close_after_s=10.0,
    take_item=True,
)
"""Two boards: one reporting with a jammed lock 24, one that must be polled."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BoardConfig(_Model):
    """One ``[[boards]]`` table."""

    address: int = Field(ge=0, le=255)
    locks: int = Field(default=MAX_LOCKS, ge=1, le=MAX_LOCKS)
    occupied: list[int] = []
    open: list[int] = []
    jammed: list[int] = []
    reports: bool = False
    item_sensors: bool = True


class ActionConfig(_Model):
    """One ``[[actions]]`` table."""

    at_s: float = Field(ge=0)
    action: Action
    board: int | None = None
    lock: int | None = None


class ScenarioConfig(_Model):
    """A lock-board scenario file (TOML)."""

    boards: list[BoardConfig] = Field(min_length=1)
    actions: list[ActionConfig] = []
    close_after_s: float | None = Field(default=None, ge=0)
    take_item: bool = False
    faults: LineFaultsConfig = LineFaultsConfig()

    def to_scenario(self) -> LockboardScenario:
        boards = tuple(
            SimBoard(
                b.address,
                b.locks,
                frozenset(b.occupied),
                frozenset(b.open),
                frozenset(b.jammed),
                b.reports,
                b.item_sensors,
            )
            for b in self.boards
        )
        actions = tuple(SimAction(a.at_s, a.action, a.board, a.lock) for a in self.actions)
        return LockboardScenario(
            boards, actions, self.close_after_s, self.take_item, self.faults.to_faults()
        )


def load_scenario(path: Path) -> LockboardScenario:
    """Read a scenario file; raise :class:`ConfigFileError` naming the file."""
    config = load_toml_model(path, ScenarioConfig)
    try:
        return config.to_scenario()
    except (ValueError, TypeError) as exc:
        raise ConfigFileError(f"{path}: {exc}") from None


class LockboardSim(SerialDeviceSim):
    """Serves the scenario's boards on a pty; use with ``async with``.

    Tests and scenario actions change the world with :meth:`close_door`,
    :meth:`force_open`, :meth:`remove_item` and :meth:`insert_item`; :attr:`open_commands`
    counts the open requests each slot received.
    """

    def __init__(
        self,
        scenario: LockboardScenario = DEFAULT_SCENARIO,
        *,
        link: Path | None = None,
        codec: LockCodec = XOR5,
    ) -> None:
        super().__init__(link=link, faults=scenario.faults)
        self.scenario = scenario
        self._codec = codec
        self._boards = {board.address: board for board in scenario.boards}
        self._open = {board.address: set(board.open_doors) for board in scenario.boards}
        self._items = {board.address: set(board.occupied) for board in scenario.boards}
        self._requests = FrameStream(codec.decode_request)
        self._tasks: set[asyncio.Task[None]] = set()
        self.open_commands: Counter[tuple[int, int]] = Counter()

    async def start(self) -> None:
        await super().start()
        if self.scenario.actions:
            self._spawn(self._run_actions())

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await super().stop()

    async def replug(self) -> None:
        self._requests.clear()  # half a request from before the unplug never completes
        await super().replug()

    def is_open(self, board: int, lock: int) -> bool:
        return lock in self._open[board]

    def is_occupied(self, board: int, lock: int) -> bool:
        return lock in self._items[board]

    def close_door(self, board: int, lock: int) -> None:
        """A person shuts the door."""
        self._set_door(board, lock, is_open=False, by_command=False)

    def force_open(self, board: int, lock: int) -> None:
        """The door is pried or key-opened without a command."""
        self._set_door(board, lock, is_open=True, by_command=False)

    def remove_item(self, board: int, lock: int) -> None:
        self._items[board].discard(lock)

    def insert_item(self, board: int, lock: int) -> None:
        self._items[board].add(lock)

    def on_bytes(self, data: bytes) -> None:
        for result in self._requests.feed(data):
            if result.frame is not None:
                reply = self._answer(result.frame)
                if reply is not None:
                    self._emit(reply)

    def _answer(self, request: Request) -> Reply | None:
        board = self._boards.get(request.board)
        if board is None:
            return None  # another board's address: stay off the bus
        if isinstance(request, OpenLock | QueryDoor):
            if request.lock > board.locks:
                return None
            if isinstance(request, OpenLock):
                self._pulse(board, request.lock)
                return OpenReply(board.address, request.lock, *self._slot(board, request.lock))
            return DoorReply(board.address, request.lock, *self._slot(board, request.lock))
        if isinstance(request, QueryDoors):
            return DoorsReply(board.address, frozenset(self._open[board.address]))
        if not board.item_sensors:
            return None  # a board without item sensors does not know the command
        return ItemsReply(board.address, frozenset(self._items[board.address]))

    def _slot(self, board: SimBoard, lock: int) -> tuple[bool, bool]:
        door_open = lock in self._open[board.address]
        if not board.item_sensors:
            return door_open, not door_open  # such boards send 0x11 and 0x00 only
        return door_open, lock in self._items[board.address]

    def _pulse(self, board: SimBoard, lock: int) -> None:
        self.open_commands[board.address, lock] += 1
        if lock in board.jammed or lock in self._open[board.address]:
            return
        self._set_door(board.address, lock, is_open=True, by_command=True)
        if self.scenario.close_after_s is not None:
            self._spawn(self._person(board.address, lock, self.scenario.close_after_s))

    async def _person(self, board: int, lock: int, after_s: float) -> None:
        await asyncio.sleep(after_s)  # the person at the locker takes their time
        if self.scenario.take_item:
            self.remove_item(board, lock)
        self.close_door(board, lock)

    def _set_door(self, board: int, lock: int, *, is_open: bool, by_command: bool) -> None:
        doors = self._open[board]
        if (lock in doors) == is_open:
            return
        if is_open:
            doors.add(lock)
        else:
            doors.discard(lock)
        if not by_command and self._boards[board].reports:
            door_open, occupied = self._slot(self._boards[board], lock)
            self._emit(DoorReport(board, lock, door_open, occupied))

    def _emit(self, frame: Reply) -> None:
        # One task per frame: a stalled frame is late on its own, and the frames behind it
        # still leave in order (a task that does not stall runs to its write at once).
        self._spawn(self.send(self._codec.encode(frame)))

    async def _run_actions(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for action in sorted(self.scenario.actions, key=lambda a: a.at_s):
            await asyncio.sleep(max(0.0, started + action.at_s - loop.time()))  # the timeline
            await self._apply(action)

    async def _apply(self, action: SimAction) -> None:
        if action.action == "unplug":
            if not self.unplugged:
                await self.unplug()
            return
        if action.action == "replug":
            if self.unplugged:
                await self.replug()
            return
        assert action.board is not None
        assert action.lock is not None
        slot_actions: dict[str, Callable[[int, int], None]] = {
            "close": self.close_door,
            "force_open": self.force_open,
            "remove_item": self.remove_item,
            "insert_item": self.insert_item,
        }
        slot_actions[action.action](action.board, action.lock)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
