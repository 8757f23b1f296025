"""The belt sorter PLC's holding-register map, as pure functions between registers and frames.

The PLC and the host talk through mailboxes in holding registers (see
``docs/devices/sorter.md`` for the table). Each block one side writes for the other ends
with a CRC-16/MODBUS register, so a host never acts on a block the PLC was halfway through
updating (many PLCs copy a block over several scan cycles) or on bytes a line fault
damaged. A sequence register of 0 means "empty": a PLC boots with zeros everywhere.

Nothing here does I/O; a vendor with another layout gets another module like this one.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from pydantic import ValidationError

from contracts import DivertBody, InductionBody
from firmware_bridge.checks import check_int

# Offsets from the map's base address. One read of 0..CONFIRMATION_ACK gets every event.
INDUCTION = 0
"""Induction mailbox (PLC writes): seq, transaction, flags, scan slot, length, barcode, CRC."""
BARCODE_REGISTERS = 20
BARCODE_MAX = 2 * BARCODE_REGISTERS
INDUCTION_SIZE = 6 + BARCODE_REGISTERS + 1
INDUCTION_ACK = INDUCTION + INDUCTION_SIZE
"""Host writes the induction seq it has taken; the PLC posts the next one only then."""
CONFIRMATION = INDUCTION_ACK + 1
"""Confirmation mailbox (PLC writes): seq, transaction hi/lo, chute, outcome, CRC."""
CONFIRMATION_SIZE = 6
CONFIRMATION_ACK = CONFIRMATION + CONFIRMATION_SIZE
"""Host writes the confirmation seq it has taken."""
COMMAND = CONFIRMATION_ACK + 1
"""Divert command block (host writes, in one request): seq, transaction hi/lo, chute, CRC."""
COMMAND_SIZE = 5
COMMAND_STATUS = COMMAND + COMMAND_SIZE
"""Command status block (PLC writes): the command seq it processed, its result, CRC."""
COMMAND_STATUS_SIZE = 3
MAP_SIZE = COMMAND_STATUS + COMMAND_STATUS_SIZE
EVENTS_SIZE = CONFIRMATION_ACK + 1
"""Registers the host reads on every poll: both mailboxes and both acknowledgements."""

FLAG_BARCODE = 0x0001
FLAG_SCAN_SLOT = 0x0002

Outcome = Literal["diverted", "missed", "recirculated"]
OUTCOME_CODES: dict[Outcome, int] = {"diverted": 1, "missed": 2, "recirculated": 3}
_OUTCOMES = {code: outcome for outcome, code in OUTCOME_CODES.items()}


class CommandResult(enum.IntEnum):
    """What the PLC did with a divert command (the status block's second register)."""

    NONE = 0
    ACCEPTED = 1
    BAD_CHECKSUM = 2
    UNKNOWN_TRANSACTION = 3
    TOO_LATE = 4
    INVALID_CHUTE = 5


FaultKind = Literal["bad_checksum", "invalid"]


class MailboxError(ValueError):
    """A block that cannot be used: a bad CRC (re-read it) or invalid content (skip it)."""

    def __init__(self, kind: FaultKind, message: str) -> None:
        super().__init__(message)
        self.kind: FaultKind = kind


@dataclass(frozen=True)
class InductionMailbox:
    """One posting of the induction mailbox."""

    seq: int
    body: InductionBody

    def __post_init__(self) -> None:
        _check_seq(self.seq)
        if self.body.barcode is not None:
            _barcode_bytes(self.body.barcode)


@dataclass(frozen=True)
class ConfirmationMailbox:
    """One posting of the confirmation mailbox."""

    seq: int
    body: DivertBody

    def __post_init__(self) -> None:
        _check_seq(self.seq)


@dataclass(frozen=True)
class DivertCommand:
    """The host's divert command: send parcel ``transaction`` to ``chute``."""

    seq: int
    transaction: int
    chute: int

    def __post_init__(self) -> None:
        _check_seq(self.seq)
        check_int("transaction", self.transaction, 0, 0xFFFFFFFF)
        check_int("chute", self.chute, 0, 0xFFFF)


@dataclass(frozen=True)
class CommandStatus:
    """The PLC's answer to the command with seq ``ack`` (0: none processed since boot)."""

    ack: int
    result: CommandResult

    def __post_init__(self) -> None:
        check_int("ack", self.ack, 0, 0xFFFF)
        if not isinstance(self.result, CommandResult):
            raise TypeError("result must be a CommandResult")


def next_seq(seq: int) -> int:
    """The sequence number after ``seq``: 1..65535, wrapping past 0, which means "empty"."""
    return seq % 0xFFFF + 1


def crc16_modbus(registers: Sequence[int]) -> int:
    """CRC-16/MODBUS of the registers as big-endian bytes (check value 0x4B37 for "123456789")."""
    crc = 0xFFFF
    for register in registers:
        for byte in (register >> 8, register & 0xFF):
            crc ^= byte
            for _ in range(8):
                crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def encode_induction(mailbox: InductionMailbox) -> list[int]:
    body = mailbox.body
    flags, length, text = 0, 0, b""
    if body.barcode is not None:
        flags |= FLAG_BARCODE
        text = _barcode_bytes(body.barcode)
        length = len(text)
    slot = 0
    if body.scan_slot is not None:
        flags |= FLAG_SCAN_SLOT
        slot = body.scan_slot
    padded = text.ljust(BARCODE_MAX, b"\0")
    barcode = [int.from_bytes(padded[i : i + 2], "big") for i in range(0, BARCODE_MAX, 2)]
    return _sealed([mailbox.seq, *_split32(body.transaction), flags, slot, length, *barcode])


def decode_induction(registers: Sequence[int]) -> InductionMailbox | None:
    """The posting in the mailbox, or None if it is empty; raises :class:`MailboxError`."""
    values = _unsealed(registers, INDUCTION_SIZE, "induction")
    if values is None:
        return None
    seq, hi, lo, flags, slot, length = values[:6]
    if flags & ~(FLAG_BARCODE | FLAG_SCAN_SLOT):
        raise MailboxError("invalid", f"induction: unknown flags 0x{flags:04x}")
    barcode = None
    if flags & FLAG_BARCODE:
        if not 1 <= length <= BARCODE_MAX:
            raise MailboxError("invalid", f"induction: barcode length {length} not in 1..40")
        raw = b"".join(register.to_bytes(2, "big") for register in values[6:])[:length]
        barcode = raw.decode("latin-1")  # any byte decodes; the body then checks printable
    try:
        body = InductionBody(
            transaction=hi << 16 | lo,
            barcode=barcode,
            scan_slot=slot if flags & FLAG_SCAN_SLOT else None,
        )
    except ValidationError as exc:
        raise MailboxError("invalid", f"induction: {_first_problem(exc)}") from None
    return InductionMailbox(seq, body)


def encode_confirmation(mailbox: ConfirmationMailbox) -> list[int]:
    body = mailbox.body
    outcome = OUTCOME_CODES[body.outcome]
    return _sealed([mailbox.seq, *_split32(body.transaction), body.chute, outcome])


def decode_confirmation(registers: Sequence[int]) -> ConfirmationMailbox | None:
    """The posting in the mailbox, or None if it is empty; raises :class:`MailboxError`."""
    values = _unsealed(registers, CONFIRMATION_SIZE, "confirmation")
    if values is None:
        return None
    seq, hi, lo, chute, code = values
    outcome = _OUTCOMES.get(code)
    if outcome is None:
        raise MailboxError("invalid", f"confirmation: unknown outcome code {code}")
    body = DivertBody(transaction=hi << 16 | lo, chute=chute, outcome=outcome)
    return ConfirmationMailbox(seq, body)


def encode_command(command: DivertCommand) -> list[int]:
    return _sealed([command.seq, *_split32(command.transaction), command.chute])


def decode_command(registers: Sequence[int]) -> DivertCommand | None:
    """The command block as last written, or None before the first; raises :class:`MailboxError`."""
    values = _unsealed(registers, COMMAND_SIZE, "command")
    if values is None:
        return None
    seq, hi, lo, chute = values
    return DivertCommand(seq, hi << 16 | lo, chute)


def encode_status(status: CommandStatus) -> list[int]:
    return _sealed([status.ack, status.result])


def decode_status(registers: Sequence[int]) -> CommandStatus:
    """The status block; a PLC that has processed no command yet shows ack 0, result NONE."""
    values = _unsealed(registers, COMMAND_STATUS_SIZE, "command status")
    if values is None:
        return CommandStatus(0, CommandResult.NONE)
    ack, code = values
    try:
        return CommandStatus(ack, CommandResult(code))
    except ValueError:
        raise MailboxError("invalid", f"command status: unknown result code {code}") from None


class MailboxLayout(NamedTuple):
    """A mailbox the PLC writes: where it is, how to read it, where the host takes it."""

    kind: Literal["induction", "confirmation"]
    start: int
    size: int
    ack_at: int
    decode: Callable[[Sequence[int]], InductionMailbox | ConfirmationMailbox | None]


MAILBOXES = (
    MailboxLayout("induction", INDUCTION, INDUCTION_SIZE, INDUCTION_ACK, decode_induction),
    MailboxLayout(
        "confirmation", CONFIRMATION, CONFIRMATION_SIZE, CONFIRMATION_ACK, decode_confirmation
    ),
)
"""The mailboxes a host polls, in the order it takes their postings."""


def _sealed(values: list[int]) -> list[int]:
    return [*values, crc16_modbus(values)]


def _unsealed(registers: Sequence[int], size: int, what: str) -> list[int] | None:
    """The block's registers without the CRC, None if empty (seq 0); checks length and CRC."""
    values = list(registers)
    if len(values) != size:
        raise MailboxError("invalid", f"{what}: {len(values)} registers, expected {size}")
    if any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0xFFFF for v in values):
        raise MailboxError("invalid", f"{what}: a register holds 0..65535")
    if values[0] == 0:
        return None  # not checked: a freshly booted PLC has all zeros, CRC included
    *payload, crc = values
    if crc16_modbus(payload) != crc:
        raise MailboxError("bad_checksum", f"{what}: CRC mismatch")
    return payload


def _split32(value: int) -> tuple[int, int]:
    return value >> 16, value & 0xFFFF


def _barcode_bytes(barcode: str) -> bytes:
    data = barcode.encode("ascii")  # PrintableText is ASCII already
    if len(data) > BARCODE_MAX:
        raise ValueError(f"a barcode in the register map holds at most {BARCODE_MAX} characters")
    return data


def _check_seq(seq: int) -> None:
    check_int("seq", seq, 1, 0xFFFF)


def _first_problem(exc: ValidationError) -> str:
    """Where validation failed, without the value (a barcode may be anything)."""
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "body"
    return f"{where}: {error['msg']}"
