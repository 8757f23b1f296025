"""The X-ray security machine's line protocol (``XR1``), as a pure codec.

One line per frame, ASCII, fields separated by ``|``, a CRC-16 in hex and CR LF::

    XR1|<boot>|<seq>|<waybill>|<verdict>|<operator>|<image>|<time>|<crc>\\r\\n   record
    XR1|<boot>|HB|<crc>\\r\\n                                                    heartbeat
    XR1|<boot>|ACK|<seq>|<crc>\\r\\n                                             host's ack

The CRC is CRC-16/CCITT-FALSE over every byte from ``X`` up to and including the ``|``
before it, as four hex digits. ``boot`` changes each time the machine starts, ``seq``
counts records from 1 within a boot, so ``(boot, seq)`` names the record an ack is for,
and an ack from before a restart is not taken for a new record's. See
``docs/devices/xray.md``.

:func:`decode` resynchronises on ``XR1|``: bytes before it are garbage, and a bad line
holding another ``XR1|`` is a frame cut short by lost bytes, followed by a whole one.
Skip reasons start with one of :data:`FAULT_KINDS` and a colon, so a driver can count
them by kind.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from contracts import XrayBody
from firmware_bridge.codec import Decoded

MAGIC = b"XR1|"
MAX_LINE = 1024
"""Longer than any valid frame (about 430 bytes): a line past this without an end is noise."""
FAULT_KINDS = ("garbage", "truncated", "bad_checksum", "malformed", "invalid")

_MAX_U32 = 0xFFFFFFFF
_TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{3})Z$")
_NUMBER = re.compile(r"^[0-9]{1,10}$")
_CRC = re.compile(rb"^[0-9A-Fa-f]{4}$")


@dataclass(frozen=True)
class XrayRecord:
    """One parcel's screening result, the ``seq``-th record of the machine's ``boot``."""

    boot: int
    seq: int
    body: XrayBody

    def __post_init__(self) -> None:
        _check_u32("boot", self.boot, 0)
        _check_u32("seq", self.seq, 1)
        if "|" in self.body.image:
            raise ValueError("an image reference in XR1 cannot contain '|'")


@dataclass(frozen=True)
class Heartbeat:
    """Sent on connect and when idle, so a silent machine is told from a quiet one."""

    boot: int

    def __post_init__(self) -> None:
        _check_u32("boot", self.boot, 0)


@dataclass(frozen=True)
class Ack:
    """The host took record ``seq`` of ``boot``; the machine need not send it again."""

    boot: int
    seq: int

    def __post_init__(self) -> None:
        _check_u32("boot", self.boot, 0)
        _check_u32("seq", self.seq, 1)


XrayFrame = XrayRecord | Heartbeat | Ack
_NEED_MORE: Decoded[XrayFrame] = Decoded(None, 0)


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF; check value 0x29B1 for "123456789")."""
    return binascii.crc_hqx(data, 0xFFFF)


def format_time(value: datetime) -> str:
    """``2026-11-25T08:00:00.000Z``, always four year digits (``strftime`` may not pad)."""
    utc = value.astimezone(UTC)
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T"
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}.{utc.microsecond // 1000:03d}Z"
    )


def encode(frame: XrayFrame) -> bytes:
    if isinstance(frame, XrayRecord):
        body = frame.body
        fields = [
            str(frame.boot), str(frame.seq), body.waybill, body.verdict, body.operator,
            body.image, format_time(body.scanned_at),
        ]  # fmt: skip
    elif isinstance(frame, Heartbeat):
        fields = [str(frame.boot), "HB"]
    else:
        fields = [str(frame.boot), "ACK", str(frame.seq)]
    head = MAGIC + "|".join(fields).encode("ascii") + b"|"
    return head + b"%04X\r\n" % crc16(head)


def decode(buffer: bytes) -> Decoded[XrayFrame]:
    """The frame at the start of ``buffer``; never raises (see the module docstring)."""
    start = buffer.find(MAGIC)
    if start < 0:
        skip = len(buffer) - _partial_magic(buffer)
        return Decoded(None, skip, f"garbage: {skip} bytes between frames") if skip else _NEED_MORE
    if start > 0:
        return Decoded(None, start, f"garbage: {start} bytes between frames")
    end = buffer.find(b"\n")
    if end < 0:
        if len(buffer) > MAX_LINE:
            return Decoded(None, len(buffer), f"malformed: no line end in {MAX_LINE} bytes")
        return _NEED_MORE
    frame, error = _parse_line(buffer[: end + 1])
    if frame is None:
        # A bad line holding another XR1| is most likely a frame cut short by lost bytes,
        # then a whole one: keep the second. (Only for bad lines: a field may end in XR1.)
        restart = buffer.find(MAGIC, len(MAGIC), end)
        if restart >= 0:
            return Decoded(None, restart, "truncated: a frame cut short by the next one")
    return Decoded(frame, end + 1, error)


def _partial_magic(buffer: bytes) -> int:
    """How many trailing bytes of ``buffer`` could be the start of ``XR1|``."""
    for size in range(min(len(MAGIC) - 1, len(buffer)), 0, -1):
        if buffer.endswith(MAGIC[:size]):
            return size
    return 0


def _parse_line(line: bytes) -> tuple[XrayFrame | None, str | None]:
    if not line.endswith(b"\r\n"):
        return None, "malformed: line does not end in CR LF"
    head, _, crc = line[:-2].rpartition(b"|")
    if not _CRC.match(crc):
        return None, "malformed: no CRC field"
    if int(crc, 16) != crc16(head + b"|"):
        return None, "bad_checksum: CRC mismatch"
    try:
        fields = head.decode("ascii").split("|")[1:]
    except UnicodeDecodeError:
        return None, "malformed: not ASCII"
    try:
        return _frame(fields), None
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        return None, f"invalid: {where}: {error['msg']}"
    except ValueError as exc:
        return None, f"invalid: {exc}"


def _frame(fields: list[str]) -> XrayFrame:
    """The frame the fields spell; ValueError (or pydantic's) if they do not."""
    if len(fields) == 2 and fields[1] == "HB":
        return Heartbeat(_number("boot", fields[0]))
    if len(fields) == 3 and fields[1] == "ACK":
        return Ack(_number("boot", fields[0]), _number("seq", fields[2]))
    if len(fields) != 7:
        raise ValueError(f"{len(fields) + 2} fields, a record has 9")
    boot, seq, waybill, verdict, operator, image, scanned_at = fields
    body = XrayBody(
        waybill=waybill,
        verdict=verdict,  # the model checks it is a known verdict
        operator=operator,
        image=image,
        scanned_at=_time(scanned_at),
    )
    return XrayRecord(_number("boot", boot), _number("seq", seq), body)


def _number(name: str, text: str) -> int:
    if not _NUMBER.match(text):
        raise ValueError(f"{name} is not a decimal number")
    return int(text)


def _time(text: str) -> datetime:
    match = _TIME.match(text)
    if match is None:
        raise ValueError("time is not YYYY-MM-DDTHH:MM:SS.mmmZ")
    year, month, day, hour, minute, second, ms = (int(part) for part in match.groups())
    return datetime(year, month, day, hour, minute, second, ms * 1000, tzinfo=UTC)


def _check_u32(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int")
    if not low <= value <= _MAX_U32:
        raise ValueError(f"{name} must be in {low}..{_MAX_U32}")
