"""The XOR frame family of Chinese parcel-locker control boards (``8A 01 01 11 9B``).

Every frame starts with a command byte, names a board and a lock, and ends with the XOR of
all bytes before it. Requests (host to board) and replies (board to host) share command
bytes, so each direction has its own decoder; both are pure, never raise on input, and
return :class:`~firmware_bridge.codec.Decoded`. The byte layout, with examples, is in
``docs/devices/lockboard.md``.

Frames are semantic (:data:`Request`, :data:`Reply`), not byte-shaped, so a vendor variant
is one more object satisfying :class:`LockCodec` and the driver and simulator stay as they
are.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from typing import Final, Protocol

from firmware_bridge.checks import check_int
from firmware_bridge.codec import Decoded

MAX_LOCKS: Final = 24
"""Locks one board drives: three bitmap bytes."""

OPEN: Final = 0x8A
DOOR: Final = 0x80
ITEMS: Final = 0x90
REPORT: Final = 0x81
OPEN_FUNCTION: Final = 0x11
QUERY_FUNCTION: Final = 0x33
SHORT: Final = 5
LONG: Final = 8

ERR_GARBAGE: Final = "garbage: no frame starts here"
ERR_CHECKSUM: Final = "bad XOR checksum"
ERR_FIELD: Final = "impossible field value"
"""The ``Decoded.error`` texts; a vendor codec uses the same ones, so drivers can count them."""

_STATES: Final = (0x00, 0x01, 0x10, 0x11)
_REQUEST_STARTS: Final = frozenset((OPEN, DOOR, ITEMS))
_REPLY_STARTS: Final = frozenset((OPEN, DOOR, ITEMS, REPORT))


def _check_locks(name: str, locks: object) -> None:
    if not isinstance(locks, frozenset):
        raise TypeError(f"{name} must be a frozenset of lock numbers, not {locks!r}")
    for lock in locks:
        check_int(f"{name} member", lock, 1, MAX_LOCKS)


@dataclass(frozen=True)
class _Board:
    board: int

    def __post_init__(self) -> None:
        check_int("board", self.board, 0, 0xFF)


@dataclass(frozen=True)
class _Lock(_Board):
    lock: int

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("lock", self.lock, 1, MAX_LOCKS)


@dataclass(frozen=True)
class _Slot(_Lock):
    door_open: bool
    occupied: bool

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.door_open, bool) or not isinstance(self.occupied, bool):
            raise TypeError("door_open and occupied must be bools")


@dataclass(frozen=True)
class OpenLock(_Lock):
    """Pulse one lock open."""


@dataclass(frozen=True)
class QueryDoor(_Lock):
    """Ask for one slot's door and item sensors."""


@dataclass(frozen=True)
class QueryDoors(_Board):
    """Ask for every door sensor of a board."""


@dataclass(frozen=True)
class QueryItems(_Board):
    """Ask for every item sensor of a board."""


@dataclass(frozen=True)
class OpenReply(_Slot):
    """The board pulsed the lock; the sensors as it read them right after."""


@dataclass(frozen=True)
class DoorReply(_Slot):
    """One slot's sensors, answering :class:`QueryDoor`."""


@dataclass(frozen=True)
class DoorReport(_Slot):
    """Sent unprompted by a board when a door changes (only boards set to report)."""


@dataclass(frozen=True)
class DoorsReply(_Board):
    """Locks whose door is open, answering :class:`QueryDoors`."""

    open_locks: frozenset[int]

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_locks("open_locks", self.open_locks)


@dataclass(frozen=True)
class ItemsReply(_Board):
    """Slots whose item sensor sees a parcel, answering :class:`QueryItems`."""

    occupied: frozenset[int]

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_locks("occupied", self.occupied)


Request = OpenLock | QueryDoor | QueryDoors | QueryItems
Reply = OpenReply | DoorReply | DoorReport | DoorsReply | ItemsReply
Frame = Request | Reply
SlotReply = OpenReply | DoorReply | DoorReport


class LockCodec(Protocol):
    """What the driver and the simulator need of a lock-board protocol.

    ``decode_*`` are pure, never raise, and skip with the ``ERR_*`` texts of this module.
    """

    def encode(self, frame: Frame) -> bytes: ...

    def decode_request(self, buffer: bytes) -> Decoded[Request]: ...

    def decode_reply(self, buffer: bytes) -> Decoded[Reply]: ...


def xor(data: bytes) -> int:
    """The check byte of this family: every byte XORed together."""
    return reduce(lambda acc, byte: acc ^ byte, data, 0)


def _sealed(body: bytes) -> bytes:
    return body + bytes([xor(body)])


def _state(slot: SlotReply) -> int:
    # High nibble door (1 = closed), low nibble item (1 = occupied): 0x11 and 0x00 are
    # what boards without item sensors send for closed and open.
    return (0x00 if slot.door_open else 0x10) | (0x01 if slot.occupied else 0x00)


def _bitmap(locks: frozenset[int]) -> bytes:
    mask = sum(1 << (lock - 1) for lock in locks)
    return mask.to_bytes(3, "little")  # first byte: locks 1..8, bit 0 = lock 1


def _locks(bitmap: bytes) -> frozenset[int]:
    mask = int.from_bytes(bitmap, "little")
    return frozenset(lock for lock in range(1, MAX_LOCKS + 1) if mask >> (lock - 1) & 1)


_SLOT_REPLY: Final[dict[int, type[SlotReply]]] = {
    OPEN: OpenReply,
    DOOR: DoorReply,
    REPORT: DoorReport,
}
_SLOT_COMMAND: Final = {kind: command for command, kind in _SLOT_REPLY.items()}


def encode(frame: Frame) -> bytes:
    """The bytes of ``frame``, check byte included."""
    if isinstance(frame, OpenLock):
        return _sealed(bytes([OPEN, frame.board, frame.lock, OPEN_FUNCTION]))
    if isinstance(frame, QueryDoor):
        return _sealed(bytes([DOOR, frame.board, frame.lock, QUERY_FUNCTION]))
    if isinstance(frame, QueryDoors | QueryItems):
        command = DOOR if isinstance(frame, QueryDoors) else ITEMS
        return _sealed(bytes([command, frame.board, 0, QUERY_FUNCTION]))
    if isinstance(frame, DoorsReply):
        bitmap = _bitmap(frame.open_locks)
        return _sealed(bytes([DOOR, frame.board, 0]) + bitmap + bytes([QUERY_FUNCTION]))
    if isinstance(frame, ItemsReply):
        bitmap = _bitmap(frame.occupied)
        return _sealed(bytes([ITEMS, frame.board, 0]) + bitmap + bytes([QUERY_FUNCTION]))
    command = _SLOT_COMMAND[type(frame)]
    return _sealed(bytes([command, frame.board, frame.lock, _state(frame)]))


def _garbage(buffer: bytes, starts: frozenset[int]) -> int:
    """How many bytes to skip to reach the next byte that could start a frame."""
    return next((i for i, byte in enumerate(buffer) if i and byte in starts), len(buffer))


def _bad_check(frame: bytes) -> bool:
    return xor(frame[:-1]) != frame[-1]


def decode_request(buffer: bytes) -> Decoded[Request]:
    """The request at the start of ``buffer``, as a board sees the bus."""
    if not buffer:
        return Decoded(None, 0)
    if buffer[0] not in _REQUEST_STARTS:
        return Decoded(None, _garbage(buffer, _REQUEST_STARTS), ERR_GARBAGE)
    if len(buffer) < SHORT:
        return Decoded(None, 0)
    # A bad frame skips one byte only: a real frame may start inside it.
    if _bad_check(buffer[:SHORT]):
        return Decoded(None, 1, ERR_CHECKSUM)
    command, board, lock, function = buffer[:4]
    request: Request | None = None
    if command == OPEN and function == OPEN_FUNCTION and 1 <= lock <= MAX_LOCKS:
        request = OpenLock(board, lock)
    elif command == DOOR and function == QUERY_FUNCTION and lock <= MAX_LOCKS:
        request = QueryDoor(board, lock) if lock else QueryDoors(board)
    elif command == ITEMS and function == QUERY_FUNCTION and lock == 0:
        request = QueryItems(board)
    if request is None:
        return Decoded(None, 1, ERR_FIELD)
    return Decoded(request, SHORT)


def decode_reply(buffer: bytes) -> Decoded[Reply]:
    """The reply or report at the start of ``buffer``, as the host sees the bus.

    A door or item reply with lock byte 0 is a bitmap reply (8 bytes), any other is a slot
    reply (5 bytes): the third byte says which, so replies decode without knowing the request.
    """
    if not buffer:
        return Decoded(None, 0)
    command = buffer[0]
    if command not in _REPLY_STARTS:
        return Decoded(None, _garbage(buffer, _REPLY_STARTS), ERR_GARBAGE)
    if len(buffer) < 3:
        return Decoded(None, 0)
    bitmap = command in (DOOR, ITEMS) and buffer[2] == 0
    length = LONG if bitmap else SHORT
    if len(buffer) < length:
        return Decoded(None, 0)
    frame = buffer[:length]
    if _bad_check(frame):
        return Decoded(None, 1, ERR_CHECKSUM)
    reply = _bitmap_reply(frame) if bitmap else _slot_reply(frame)
    if reply is None:
        return Decoded(None, 1, ERR_FIELD)
    return Decoded(reply, length)


def _bitmap_reply(frame: bytes) -> Reply | None:
    if frame[6] != QUERY_FUNCTION:
        return None
    locks = _locks(frame[3:6])
    return DoorsReply(frame[1], locks) if frame[0] == DOOR else ItemsReply(frame[1], locks)


def _slot_reply(frame: bytes) -> Reply | None:
    command, board, lock, state = frame[:4]
    if command not in _SLOT_REPLY or not 1 <= lock <= MAX_LOCKS or state not in _STATES:
        return None
    kind = _SLOT_REPLY[command]
    return kind(board, lock, door_open=not state & 0x10, occupied=bool(state & 0x01))


def answers(request: Request, reply: Reply) -> bool:
    """Whether ``reply`` is the answer to ``request``: same kind, board and lock.

    The protocol has no request ids, so this is all that ties the two together.
    """
    kind = {OpenLock: OpenReply, QueryDoor: DoorReply, QueryDoors: DoorsReply}.get(
        type(request), ItemsReply
    )
    return (
        type(reply) is kind
        and reply.board == request.board
        and getattr(reply, "lock", None) == getattr(request, "lock", None)
    )


class XorFrameCodec:
    """The common family as a :class:`LockCodec` (the default of driver and simulator)."""

    def encode(self, frame: Frame) -> bytes:
        return encode(frame)

    def decode_request(self, buffer: bytes) -> Decoded[Request]:
        return decode_request(buffer)

    def decode_reply(self, buffer: bytes) -> Decoded[Reply]:
        return decode_reply(buffer)


XOR5: Final = XorFrameCodec()
