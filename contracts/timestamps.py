"""Device timestamps: UTC, millisecond precision, ISO 8601 with a ``Z`` on the wire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import AfterValidator, PlainSerializer


def to_utc_ms(value: datetime) -> datetime:
    """Normalise an aware UTC datetime to whole milliseconds; reject naive or non-UTC times."""
    offset = value.utcoffset()
    if offset is None:
        raise ValueError("timestamp must carry a time zone (UTC, 'Z')")
    if offset != timedelta(0):
        raise ValueError("timestamp must be in UTC ('Z' or +00:00)")
    return value.replace(microsecond=value.microsecond // 1000 * 1000, tzinfo=UTC)


def format_utc_ms(value: datetime) -> str:
    """``2026-11-25T07:08:09.123Z``."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def utc_now() -> datetime:
    return to_utc_ms(datetime.now(UTC))


def to_epoch_ms(value: datetime) -> int:
    """Milliseconds since the Unix epoch, rounded down; ``value`` must be aware."""
    return (value - _EPOCH) // timedelta(milliseconds=1)


def from_epoch_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def to_epoch_ns(value: datetime) -> int:
    """Nanoseconds since the Unix epoch, exact to the microsecond (a datetime holds no
    finer); ``value`` must be aware. Not ``timestamp()``: a float is too coarse for ns."""
    return (value - _EPOCH) // timedelta(microseconds=1) * 1000


def from_epoch_ns(ns: int) -> datetime:
    """The aware UTC datetime of ``ns`` since the epoch, rounded down to the microsecond."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

UtcTimestamp = Annotated[
    datetime,
    AfterValidator(to_utc_ms),
    PlainSerializer(format_utc_ms, return_type=str),
]
"""A device timestamp: aware UTC, whole milliseconds, serialised as ISO 8601 with ``Z``."""
