"""Parcel-locker lock boards on one RS-485 line: open slots, read sensors, watch doors.

:class:`LockBus` owns the reading side of a :class:`~firmware_bridge.serial_link.SerialLink`:
one background task decodes everything the boards send, hands each reply to the request
waiting for it and each unsolicited report to :meth:`LockBus.events`. Requests are
serialised (RS-485 is half-duplex and the protocol has no request ids), and replies are
matched by kind, board and lock, so a report arriving mid-request is neither lost nor
taken for the answer. An open is only believed once the door sensor says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, fields
from types import TracebackType
from typing import Final, Literal, Self

from contracts import DoorBody
from firmware_bridge.checks import check_int
from firmware_bridge.codec import Decoded, FrameStream
from firmware_bridge.errors import (
    BridgeError,
    DeviceProtocolError,
    DeviceTimeout,
    DeviceUnavailable,
)
from firmware_bridge.faultlog import FaultLog
from firmware_bridge.lockboard.codec import (
    ERR_CHECKSUM,
    ERR_FIELD,
    MAX_LOCKS,
    XOR5,
    DoorReply,
    DoorReport,
    DoorsReply,
    ItemsReply,
    LockCodec,
    OpenLock,
    QueryDoor,
    QueryDoors,
    QueryItems,
    Reply,
    Request,
    answers,
)
from firmware_bridge.serial_link import SerialLink

log = logging.getLogger(__name__)

_IDLE_READ_S: Final = 1.0
_CLEAN_STREAK: Final = 8
"""Good frames in a row after which a fault counts as over, and is logged again if it recurs."""
_EVENT_QUEUE: Final = 1000


class LockNotOpened(DeviceProtocolError):
    """The board was told to open a lock, and its door sensor still said closed afterwards."""

    def __init__(self, board: int, lock: int, detail: str) -> None:
        super().__init__(f"board {board} lock {lock} did not open: {detail}")
        self.board = board
        self.lock = lock


@dataclass
class LockBusStats:
    """Counters of what the bus saw; faults also log one line when they start."""

    frames: int = 0
    """Valid frames from our boards."""
    bad_checksum: int = 0
    garbage: int = 0
    """Skips that were not a frame at all (noise, or the tail of a damaged frame)."""
    invalid: int = 0
    """Frames with a good check byte but impossible fields."""
    foreign: int = 0
    """Valid frames from a board that is not ours."""
    unexpected: int = 0
    """Replies nobody was waiting for: late or duplicated."""
    timeouts: int = 0
    unavailable: int = 0
    """Times the port vanished."""
    reconnects: int = 0
    """Times the port came back (or first appeared after start)."""
    reports: int = 0
    duplicate_reports: int = 0
    not_opened: int = 0
    events_dropped: int = 0

    def as_dict(self) -> dict[str, int]:
        return {item.name: getattr(self, item.name) for item in fields(self)}


_SKIP_KINDS: Final = {ERR_CHECKSUM: "bad_checksum", ERR_FIELD: "invalid"}


Cause = Literal["command", "report", "poll"]


class LockBus:
    """Lock boards ``boards`` on ``link``; use with ``async with`` inside the link's.

    The bus is the only reader of ``link``. A request is tried ``1 + retries`` times,
    ``answer_timeout_s`` each; an open is confirmed by a door query ``confirm_delay_s``
    after the board's answer. :meth:`events` polls every ``poll_interval_s`` (None: only
    reports). Without ``item_sensors``, ``occupied`` is always None.
    """

    def __init__(
        self,
        link: SerialLink,
        *,
        boards: Sequence[int],
        locks_per_board: int = MAX_LOCKS,
        item_sensors: bool = True,
        answer_timeout_s: float = 0.3,
        confirm_delay_s: float = 0.3,
        retries: int = 2,
        poll_interval_s: float | None = 1.0,
        codec: LockCodec = XOR5,
    ) -> None:
        self._boards = _valid_boards(boards)
        check_int("locks_per_board", locks_per_board, 1, MAX_LOCKS)
        check_int("retries", retries, 0, 10)
        if not answer_timeout_s > 0 or not confirm_delay_s >= 0:
            raise ValueError("need answer_timeout_s > 0 and confirm_delay_s >= 0")
        if poll_interval_s is not None and not poll_interval_s > 0:
            raise ValueError("poll_interval_s must be positive or None")
        self._link = link
        self._locks = locks_per_board
        self._items = item_sensors
        self._timeout = answer_timeout_s
        self._confirm_delay = confirm_delay_s
        self._retries = retries
        self._poll_interval = poll_interval_s
        self._codec = codec
        self.stats = LockBusStats()
        self._faults = FaultLog(log, f"lock bus {link.path}", clean_streak=_CLEAN_STREAK)
        self._stream = FrameStream(codec.decode_reply)
        self._lock = asyncio.Lock()
        self._pending: tuple[Request, asyncio.Future[Reply]] | None = None
        self._skipped_while_pending = False
        self._known: dict[tuple[int, int], DoorBody] = {}
        self._events: asyncio.Queue[DoorBody] = asyncio.Queue(_EVENT_QUEUE)
        self._reader: asyncio.Task[None] | None = None
        self._online = True

    async def __aenter__(self) -> Self:
        self._online = self._link.is_open
        self._reader = asyncio.create_task(self._read_loop(), name=f"lock bus {self._link.path}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    async def open(self, board: int, lock: int) -> DoorBody:
        """Open one slot and return its door as read afterwards (``cause="command"``).

        Raises :class:`LockNotOpened` when the door sensor still says closed after every
        try; other :class:`~firmware_bridge.errors.BridgeError` when the bus fails (the
        door may then be open: read it). The bus stays reserved for the whole open, so a
        poll never mistakes our own opening for a change.
        """
        self._check_slot(board, lock)
        async with self._lock:
            answered = False
            for _ in range(1 + self._retries):
                with contextlib.suppress(DeviceTimeout, DeviceProtocolError):
                    await self._exchange(OpenLock(board, lock))
                    answered = True
                await asyncio.sleep(self._confirm_delay)  # the door needs time to spring open
                body = self._slot_body(await self._ask(QueryDoor(board, lock)), "command")
                self._observe(body)
                if body.door == "open":
                    return body
            self.stats.not_opened += 1
            detail = "door still closed" if answered else "no answer to the open command"
            self._faults.fault("not_opened", f"board {board} lock {lock} did not open ({detail})")
            raise LockNotOpened(board, lock, f"{detail} after {1 + self._retries} tries")

    async def status(self, board: int, lock: int) -> DoorBody:
        """One slot's door and item sensor (``cause="poll"``)."""
        self._check_slot(board, lock)
        async with self._lock:
            body = self._slot_body(await self._ask(QueryDoor(board, lock)), "poll")
        self._observe(body)
        return body

    async def all_status(self, board: int) -> list[DoorBody]:
        """Every slot of ``board``, lock 1 first (``cause="poll"``): one or two requests."""
        self._check_slot(board, 1)
        async with self._lock:
            doors = await self._ask(QueryDoors(board))
            items = await self._ask(QueryItems(board)) if self._items else None
        assert isinstance(doors, DoorsReply)
        occupied = items.occupied if isinstance(items, ItemsReply) else frozenset[int]()
        bodies = [
            DoorBody(
                board=board,
                lock=lock,
                door="open" if lock in doors.open_locks else "closed",
                occupied=(lock in occupied) if self._items else None,
                cause="poll",
            )
            for lock in range(1, self._locks + 1)
        ]
        for body in bodies:
            self._observe(body)
        return bodies

    async def events(self) -> AsyncGenerator[DoorBody, None]:
        """Door changes: board reports (``cause="report"``) and polled changes (``"poll"``).

        The first poll only learns the doors; changes our own :meth:`open` made are not
        events. Bus faults are counted and logged, never raised. One consumer at a time.
        """
        loop = asyncio.get_running_loop()
        next_poll = loop.time()
        while True:
            if not self._events.empty():
                yield self._events.get_nowait()
                continue
            if self._poll_interval is not None and loop.time() >= next_poll:
                await self._poll()
                next_poll = loop.time() + self._poll_interval
                continue
            wait = None if self._poll_interval is None else next_poll - loop.time()
            try:
                body = await asyncio.wait_for(self._events.get(), wait)
            except TimeoutError:
                continue
            yield body

    async def _poll(self) -> None:
        for board in sorted(self._boards):
            # Failures are already counted and logged where they happened.
            with contextlib.suppress(BridgeError):
                await self.all_status(board)

    def _check_slot(self, board: int, lock: int) -> None:
        check_int("lock", lock, 1, self._locks)
        if isinstance(board, bool) or board not in self._boards:
            raise ValueError(f"board {board!r} is not on this bus (boards {sorted(self._boards)})")

    def _slot_body(self, reply: Reply, cause: Cause) -> DoorBody:
        assert isinstance(reply, DoorReply | DoorReport)
        return DoorBody(
            board=reply.board,
            lock=reply.lock,
            door="open" if reply.door_open else "closed",
            occupied=reply.occupied if self._items else None,
            cause=cause,
        )

    def _observe(self, body: DoorBody) -> None:
        """Remember the slot; queue an event if it changed (not by our command)."""
        key = (body.board, body.lock)
        before = self._known.get(key)
        self._known[key] = body
        changed = before is None or (before.door, before.occupied) != (body.door, body.occupied)
        if body.cause == "report" and not changed:
            self.stats.duplicate_reports += 1
        if body.cause == "command" or not changed or (before is None and body.cause == "poll"):
            return
        if self._events.full():
            self._events.get_nowait()
            self.stats.events_dropped += 1
            self._faults.fault("events_dropped", "door events not consumed; dropping the oldest")
        self._events.put_nowait(body)

    async def _ask(self, request: Request) -> Reply:
        """Send ``request`` until its reply comes, up to ``1 + retries`` times (lock held)."""
        for attempt in range(self._retries + 1):
            try:
                return await self._exchange(request)
            except (DeviceTimeout, DeviceProtocolError):
                if attempt == self._retries:
                    raise
        raise AssertionError("unreachable")

    async def _exchange(self, request: Request) -> Reply:
        if self._reader is None or self._reader.done():
            # Without the reader no answer can arrive; say so instead of timing out.
            raise RuntimeError("lock bus not running: use 'async with LockBus(...)'")
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending = (request, future)
        self._skipped_while_pending = False
        try:
            await self._link.write(self._codec.encode(request))
            return await asyncio.wait_for(future, self._timeout)
        except TimeoutError:
            self.stats.timeouts += 1
            what = f"board {request.board}: no valid answer to {type(request).__name__}"
            self._faults.fault("timeout", f"{what} within {self._timeout:g} s")
            if self._skipped_while_pending:
                raise DeviceProtocolError(f"{what} (bad checksum or garbled)") from None
            raise DeviceTimeout(f"{what} within {self._timeout:g} s") from None
        finally:
            self._pending = None

    async def _read_loop(self) -> None:
        while True:
            try:
                data = await self._link.read(_IDLE_READ_S)
            except DeviceTimeout:
                continue
            except DeviceUnavailable:
                self._lost()
                if await self._link.wait_open(_IDLE_READ_S):
                    self._back()
                continue
            self._back()
            for result in self._stream.feed(data):
                self._dispatch(result)

    def _lost(self) -> None:
        self._stream.clear()  # the rest of a partial frame will never come
        if self._pending is not None and not self._pending[1].done():
            self._pending[1].set_exception(DeviceUnavailable(f"{self._link.path} vanished"))
        if self._online:
            self._online = False
            self.stats.unavailable += 1

    def _back(self) -> None:
        if not self._online:
            self._online = True
            self.stats.reconnects += 1

    def _dispatch(self, result: Decoded[Reply]) -> None:
        frame = result.frame
        if frame is None:
            self._skip(result.error or "skipped")
        elif frame.board not in self._boards:
            self.stats.foreign += 1
            self._faults.fault("foreign", f"frame from board {frame.board}, not ours: skipped")
        elif getattr(frame, "lock", 1) > self._locks:
            self._skip(ERR_FIELD)
        else:
            self.stats.frames += 1
            if ended := self._faults.good():
                log.info("%s: clean again after %s", self._faults.where, ", ".join(ended))
            self._deliver(frame)

    def _skip(self, error: str) -> None:
        kind = _SKIP_KINDS.get(error, "garbage")
        setattr(self.stats, kind, getattr(self.stats, kind) + 1)
        if self._pending is not None:
            self._skipped_while_pending = True
        self._faults.fault(kind, f"{error}: bytes skipped")

    def _deliver(self, frame: Reply) -> None:
        if isinstance(frame, DoorReport):
            self.stats.reports += 1
            self._observe(self._slot_body(frame, "report"))
            return
        pending = self._pending
        if pending is not None and answers(pending[0], frame) and not pending[1].done():
            pending[1].set_result(frame)
            return
        self.stats.unexpected += 1
        self._faults.fault("unexpected", f"{type(frame).__name__} nobody waited for: skipped")


def _valid_boards(boards: Sequence[int]) -> frozenset[int]:
    for board in boards:
        check_int("board", board, 0, 0xFF)
    if not boards or len(set(boards)) != len(boards):
        raise ValueError(f"boards must be unique and at least one, got {list(boards)}")
    return frozenset(boards)
