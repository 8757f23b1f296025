"""Receipts: the gateway's word that it has durably stored a device's messages.

Published by the gateway on ``postedge/v1/{station}/{device}/receipt`` after its store's
durable write, naming the stored sequence numbers as inclusive ``[first, last]`` ranges.
Sequence numbers rise across a device's boots, so ranges alone name messages uniquely.
Several gateway workers on one shared subscription each confirm what they wrote, so a
device may get several receipts for one stream, in any order, and the same number twice.

The edge deletes a message from its outbox only when a receipt names it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from contracts.errors import MalformedPayload, PayloadTooLarge, SchemaViolation
from contracts.ids import Identifier
from contracts.models import MESSAGE

MAX_RANGES = 5_000  # 5,000 ranges of 18-digit numbers stay under MAX_RECEIPT_BYTES
MAX_RECEIPT_BYTES = 256 * 1024

SeqRange = tuple[int, int]


class Receipt(BaseModel):
    model_config = MESSAGE

    schema_version: Literal[1] = Field(default=1, alias="schema")
    device: Identifier
    ranges: list[tuple[int, int]] = Field(min_length=1, max_length=MAX_RANGES)
    by: Identifier | None = Field(default=None, description="the gateway worker that stored them")

    @model_validator(mode="after")
    def _ranges_ordered(self) -> Receipt:
        previous = -1
        for first, last in self.ranges:
            if first < 0 or last < first or first <= previous:
                raise ValueError("ranges must be [first, last] pairs, ascending, not overlapping")
            previous = last
        return self

    def covers(self, seq: int) -> bool:
        return any(first <= seq <= last for first, last in self.ranges)

    def count(self) -> int:
        return sum(last - first + 1 for first, last in self.ranges)


def seq_ranges(seqs: Iterable[int]) -> list[SeqRange]:
    """Sorted, merged inclusive ranges of the given sequence numbers (duplicates allowed)."""
    ranges: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1][1] = seq
        else:
            ranges.append([seq, seq])
    return [(first, last) for first, last in ranges]


def receipts_for(device: str, seqs: Iterable[int], *, by: str | None = None) -> list[Receipt]:
    """One or more receipts naming ``seqs`` (split when there are over MAX_RANGES ranges)."""
    ranges = seq_ranges(seqs)
    return [
        Receipt(device=device, ranges=ranges[start : start + MAX_RANGES], by=by)
        for start in range(0, len(ranges), MAX_RANGES)
    ]


def encode_receipt(receipt: Receipt) -> bytes:
    return receipt.model_dump_json(by_alias=True, exclude_none=True).encode()


def decode_receipt(payload: bytes) -> Receipt:
    """Parse a receipt; raise a :class:`~contracts.errors.ContractError` subclass."""
    if len(payload) > MAX_RECEIPT_BYTES:
        raise PayloadTooLarge(f"receipt is {len(payload)} bytes, limit {MAX_RECEIPT_BYTES}")
    try:
        return Receipt.model_validate_json(payload)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        if any(error["type"] in ("json_invalid", "json_type") for error in errors):
            raise MalformedPayload("receipt is not a UTF-8 JSON object") from None
        first = errors[0]
        where = ".".join(str(part) for part in first["loc"]) or "(receipt)"
        raise SchemaViolation(f"receipt {where}: {first['msg']}") from None
