"""The ID-card reader's serial protocol: this project's adapter boundary for real readers.

Certified resident ID-card readers are driven through their vendors' SDKs (the card is
read through a security module, SAM); an adapter speaks this small protocol on one side
and the SDK on the other, so the edge agent needs one driver for every reader.

Frame (both directions)::

    STX | LEN (2, big-endian) | PAYLOAD (LEN bytes) | CRC (2, big-endian) | ETX
    0x02                                              CRC-16/CCITT-FALSE    0x03
                                                      over LEN and PAYLOAD

    PAYLOAD = TYPE (1 ASCII byte) | SEQ (1 byte) | BODY

``R`` read request (empty body); answers, with the request's ``SEQ``: ``C`` card (six
UTF-8 fields separated by 0x1F), ``N`` no card (empty body), ``E`` error (one code
byte). Every byte layout, with hex examples, is in ``docs/devices/idcard.md``.

Card fields are personal data: :class:`CardRecord` hides them from its repr, and no
error message here ever quotes a payload.
"""

from __future__ import annotations

import binascii
import datetime as dt
import re
from dataclasses import dataclass, field

from pydantic import ValidationError

from contracts import IdentityRead
from firmware_bridge.codec import Decoded

STX = 0x02
ETX = 0x03
FIELD_SEPARATOR = "\x1f"
LONG_TERM = "长期"
"""``valid_until`` of a long-term document, as the card itself says it."""
MAX_PAYLOAD = 1024
BAD_CHECKSUM = "bad checksum or framing"
"""How the reason of every length, CRC or ETX failure starts."""
_HEADER = 3  # STX + LEN
_TRAILER = 3  # CRC + ETX
_MIN_PAYLOAD = 2  # TYPE + SEQ
_DATE = re.compile(r"[0-9]{8}")

ERROR_CODES: dict[int, str] = {
    1: "security module (SAM) fault",
    2: "card read failed (card moved or bad contact)",
    3: "card not authenticated or not supported",
    4: "reader busy",
}


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF): ``crc16(b"123456789") == 0x29B1``."""
    return binascii.crc_hqx(data, 0xFFFF)


def _check_seq(seq: int) -> None:
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= 0xFF:
        raise ValueError("seq must be an int in 0..255")


@dataclass(frozen=True)
class ReadRequest:
    """Host → reader: read the card on the reader now."""

    seq: int

    def __post_init__(self) -> None:
        _check_seq(self.seq)


@dataclass(frozen=True)
class NoCard:
    """Reader → host: there is no card on the reader."""

    seq: int

    def __post_init__(self) -> None:
        _check_seq(self.seq)


@dataclass(frozen=True)
class ReaderFault:
    """Reader → host: the read failed; ``code`` is one of :data:`ERROR_CODES` or a vendor's."""

    seq: int
    code: int

    def __post_init__(self) -> None:
        _check_seq(self.seq)
        if isinstance(self.code, bool) or not isinstance(self.code, int):
            raise ValueError("code must be an int")
        if not 0 <= self.code <= 0xFF:
            raise ValueError("code must be in 0..255")

    @property
    def meaning(self) -> str:
        return ERROR_CODES.get(self.code, "vendor-specific error")


@dataclass(frozen=True)
class CardRecord:
    """Reader → host: the card's fields as text, not yet validated (see :func:`identity_from`)."""

    seq: int
    name: str = field(repr=False)
    id_type: str
    id_number: str = field(repr=False)
    authority: str = field(repr=False)
    valid_from: str
    valid_until: str

    def __post_init__(self) -> None:
        _check_seq(self.seq)
        for value in self.fields:
            if not isinstance(value, str) or FIELD_SEPARATOR in value:
                raise ValueError("card fields are text without the 0x1F separator")

    @property
    def fields(self) -> tuple[str, str, str, str, str, str]:
        return (
            self.name,
            self.id_type,
            self.id_number,
            self.authority,
            self.valid_from,
            self.valid_until,
        )


IdFrame = ReadRequest | NoCard | ReaderFault | CardRecord


def encode(frame: IdFrame) -> bytes:
    """The bytes of one frame; raises ValueError if its payload is over :data:`MAX_PAYLOAD`."""
    payload = bytes([_type_of(frame), frame.seq]) + _body_of(frame)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload over {MAX_PAYLOAD} bytes")
    covered = len(payload).to_bytes(2, "big") + payload
    return bytes([STX]) + covered + crc16(covered).to_bytes(2, "big") + bytes([ETX])


def _type_of(frame: IdFrame) -> int:
    if isinstance(frame, ReadRequest):
        return ord("R")
    if isinstance(frame, NoCard):
        return ord("N")
    if isinstance(frame, ReaderFault):
        return ord("E")
    return ord("C")


def _body_of(frame: IdFrame) -> bytes:
    if isinstance(frame, ReaderFault):
        return bytes([frame.code])
    if isinstance(frame, CardRecord):
        return FIELD_SEPARATOR.join(frame.fields).encode("utf-8")
    return b""


def decode(buffer: bytes) -> Decoded[IdFrame]:
    """The frame at the start of ``buffer``, a skip, or need-more; never raises.

    A frame that fails its length, ETX or CRC check skips only its STX, so a real frame
    hidden behind a false start is found on the next call.
    """
    if not buffer:
        return Decoded(None, 0)
    if buffer[0] != STX:
        start = buffer.find(STX)
        skip = len(buffer) if start < 0 else start
        return Decoded(None, skip, f"noise before STX ({skip} B)")
    if len(buffer) < _HEADER:
        return Decoded(None, 0)
    length = int.from_bytes(buffer[1:3], "big")
    if not _MIN_PAYLOAD <= length <= MAX_PAYLOAD:
        return Decoded(None, 1, f"{BAD_CHECKSUM}: impossible length")
    end = _HEADER + length + _TRAILER
    if len(buffer) < end:
        return _hunt(buffer)
    if not _intact(buffer, length):
        return Decoded(None, 1, f"{BAD_CHECKSUM}: CRC or ETX wrong")
    frame, error = _parse(buffer[_HEADER : _HEADER + length])
    return Decoded(frame, end, error)


def _intact(buffer: bytes, length: int) -> bool:
    """Whether the ``length``-byte frame at the start of ``buffer`` has its ETX and CRC."""
    end = _HEADER + length + _TRAILER
    crc = int.from_bytes(buffer[_HEADER + length : end - 1], "big")
    return buffer[end - 1] == ETX and crc == crc16(buffer[1 : _HEADER + length])


def _hunt(buffer: bytes) -> Decoded[IdFrame]:
    """Need more, unless a whole intact frame already follows a false start.

    Noise ending in 0x02 reads as an STX with a plausible length, which would hold back
    every frame behind it until that many bytes came. An intact frame further on (CRC
    and ETX right) shows the start was false, so skip to it.
    """
    at = buffer.find(STX, 1)
    while at > 0:
        length = int.from_bytes(buffer[at + 1 : at + _HEADER], "big")
        fits = _MIN_PAYLOAD <= length <= MAX_PAYLOAD and at + _HEADER + length + _TRAILER <= len(
            buffer
        )
        if fits and _intact(buffer[at:], length):
            return Decoded(None, at, f"{BAD_CHECKSUM}: false start before a whole frame")
        at = buffer.find(STX, at + 1)
    return Decoded(None, 0)


def _parse(payload: bytes) -> tuple[IdFrame | None, str | None]:
    kind, seq, body = chr(payload[0]), payload[1], payload[2:]
    if kind in "RN" and body:
        return None, f"'{kind}' frame with a body"
    if kind == "R":
        return ReadRequest(seq), None
    if kind == "N":
        return NoCard(seq), None
    if kind == "E":
        if len(body) != 1:
            return None, "'E' frame without exactly one code byte"
        return ReaderFault(seq, body[0]), None
    if kind == "C":
        return _parse_card(seq, body)
    return None, f"unknown frame type 0x{payload[0]:02x}"


def _parse_card(seq: int, body: bytes) -> tuple[IdFrame | None, str | None]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None, "card record is not UTF-8"
    fields = text.split(FIELD_SEPARATOR)
    if len(fields) != 6:
        return None, f"card record with {len(fields)} fields, not 6"
    return CardRecord(seq, *fields), None


def identity_from(record: CardRecord) -> IdentityRead:
    """The validated identity in ``record``; ValueError naming only the fields that failed."""
    bad = [
        name
        for name, value in (("name", record.name), ("authority", record.authority))
        if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value)
    ]
    valid_from = _date(record.valid_from)
    long_term = record.valid_until == LONG_TERM
    valid_until = None if long_term else _date(record.valid_until)
    if valid_from is None:
        bad.append("valid_from")
    if valid_until is None and not long_term:
        bad.append("valid_until")
    if not bad:
        try:
            return IdentityRead.model_validate(
                {
                    "name": record.name,
                    "id_type": record.id_type,
                    "id_number": record.id_number,
                    "authority": record.authority,
                    "valid_from": valid_from,
                    "valid_until": valid_until,
                }
            )
        except ValidationError as exc:
            bad = sorted({".".join(map(str, e["loc"])) or "record" for e in exc.errors()})
    raise ValueError(f"card record fields fail validation: {', '.join(bad)}")


def _date(text: str) -> dt.date | None:
    """``YYYYMMDD`` as a date, or None (never an error quoting the text)."""
    if not _DATE.fullmatch(text):
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _yyyymmdd(date: dt.date) -> str:
    return f"{date.year:04d}{date.month:02d}{date.day:02d}"  # strftime drops zeros of year 1


def record_from(identity: IdentityRead, seq: int) -> CardRecord:
    """What a reader sends for ``identity`` (the inverse of :func:`identity_from`)."""
    until = LONG_TERM if identity.valid_until is None else _yyyymmdd(identity.valid_until)
    return CardRecord(
        seq,
        identity.name,
        identity.id_type,
        identity.id_number,
        identity.authority,
        _yyyymmdd(identity.valid_from),
        until,
    )
