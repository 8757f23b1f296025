"""The telemetry store contract: points, query results, the store protocol, its errors.

The schema rules are InfluxDB 3's, the strictest of the InfluxDB versions the gateway
writes to, applied by every store so that data written today can move to any of them:

- names (measurement, tag keys, field keys) are identifiers: a letter, then letters,
  digits or ``_``; ``time`` is reserved by InfluxDB, and 2.x reserves names starting
  with ``_``, so neither may be used;
- a measurement's tag keys are fixed by the first point written to it, and a name is
  either a tag or a field of a measurement, never both (InfluxDB 1.x would accept
  both, and a ``WHERE`` on that name then silently compares the field): a point may
  not use a name for both, and with fixed tag sets no two points can either;
- a field keeps the type it was first written with.

Tag values are non-empty printable text without a backslash: InfluxDB stores no empty
tags, and line protocol cannot carry a tag value ending in a backslash or holding a
control character unchanged. Error messages name measurements, tags and fields, never
values: one day a value may be personal data.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from gateway.errors import GatewayError

FieldValue = float | int | str | bool
FieldType = Literal["float", "integer", "string", "boolean"]

#: InfluxDB's time range: int64 without its two extreme values, which it reserves.
MIN_TIME_NS = -(2**63) + 2
MAX_TIME_NS = 2**63 - 2
#: InfluxDB 1.x limits a string field to 64 KiB.
MAX_STRING_BYTES = 65_535

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")
_RESERVED = frozenset({"time"})
_TAG_VALUE_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")
_FIELD_TYPES: dict[type, FieldType] = {
    float: "float",
    int: "integer",
    str: "string",
    bool: "boolean",
}


class StoreError(GatewayError):
    """The telemetry store could not do what was asked (also: misconfiguration)."""


class StoreUnavailable(StoreError):
    """The store is down, busy, full or too slow: retry the same call later, with backoff."""


class StoreRejected(StoreError):
    """The store refused the data itself: retrying the same batch will not help.

    The caller splits the batch and dead-letters the points that are still refused.
    """


class InvalidQuery(StoreError, ValueError):
    """A query's arguments are wrong (a bad name, period or range): asking again will not help.

    Also a ``ValueError``, so that an API answers it as bad input (422) like any other.
    """


@functools.lru_cache(maxsize=4096)
def check_name(name: str, what: str = "name") -> str:
    """``name`` if it is a valid measurement, tag or field name, else :class:`ValueError`.

    Cached: the same few names arrive with every point.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in _RESERVED:
        raise ValueError(
            f"invalid {what} {name!r}: use a letter followed by up to 127 letters, digits "
            "or '_' (and not 'time')"
        )
    return name


def field_type(value: object) -> FieldType:
    """The InfluxDB type of a field value; subclasses (``StrEnum``...) count as their base."""
    found = _FIELD_TYPES.get(type(value))
    if found is not None:
        return found
    for base in (bool, int, float, str):  # bool before int: it is a subclass of int
        if isinstance(value, base):
            return _FIELD_TYPES[base]
    raise ValueError(f"unsupported field value type {type(value).__name__}")


def _check_tag_value(key: str, value: object) -> None:
    if not isinstance(value, str) or not value or _TAG_VALUE_FORBIDDEN.search(value):
        raise ValueError(
            f"tag {key!r}: the value must be non-empty text without control characters "
            "or backslashes"
        )


def _check_field_value(key: str, value: object) -> None:
    field_type(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"field {key!r}: NaN and infinity cannot be stored")
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise ValueError(f"field {key!r}: integer out of the 64-bit range")
    if (
        isinstance(value, str)
        and len(value) > MAX_STRING_BYTES // 4
        and len(value.encode()) > MAX_STRING_BYTES
    ):
        raise ValueError(f"field {key!r}: string longer than {MAX_STRING_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class TelemetryPoint:
    """One point of one series, validated at construction.

    ``tags`` is the full tag set of the series; ``time_ns`` is nanoseconds since the
    epoch (the device timestamp for readings, so a redelivered reading rewrites itself).
    The mappings are not copied: treat them as immutable once the point is made.
    """

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time_ns: int

    def __post_init__(self) -> None:
        check_name(self.measurement, "measurement")
        if not self.fields:
            raise ValueError(f"a point of {self.measurement!r} needs at least one field")
        for key, tag_value in self.tags.items():
            check_name(key, "tag key")
            _check_tag_value(key, tag_value)
        for key, value in self.fields.items():
            check_name(key, "field key")
            if key in self.tags:
                raise ValueError(f"{key!r} is both a tag and a field of {self.measurement!r}")
            _check_field_value(key, value)
        if type(self.time_ns) is not int or not MIN_TIME_NS <= self.time_ns <= MAX_TIME_NS:
            raise ValueError("time_ns must be an int within InfluxDB's time range")

    def to_json(self) -> dict[str, Any]:
        """The point as a JSON object, for keeping it elsewhere until it is stored."""
        return {"measurement": self.measurement, "tags": dict(self.tags),
                "fields": dict(self.fields), "time_ns": self.time_ns}  # fmt: skip

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TelemetryPoint:
        """The point :meth:`to_json` gave (validated again; ``ValueError`` if not one)."""
        try:
            return cls(obj["measurement"], obj["tags"], obj["fields"], obj["time_ns"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a telemetry point: {exc}") from None


@dataclass(frozen=True, slots=True)
class SeriesValue:
    """One value of one field at one time."""

    time_ns: int
    value: FieldValue


@dataclass(frozen=True, slots=True)
class LastValue:
    """The latest value of a field in one group; ``tags`` holds the group-by tags."""

    tags: Mapping[str, str]
    time_ns: int
    value: FieldValue


@dataclass(frozen=True)
class Bucket:
    """One period of a downsampled series: the numeric values from ``time_ns`` (the
    period's start, a multiple of the period since the Unix epoch, as InfluxQL's
    ``GROUP BY time`` aligns) to the next period."""

    time_ns: int
    mean: float
    min: float
    max: float
    count: int


MAX_BUCKETS = 100_000
"""The most periods one downsampled query may span (InfluxDB's ``max-select-buckets``, on
every store): it bounds the answer whatever the data holds."""


def check_buckets(start_ns: int, end_ns: int, every_ns: int) -> tuple[int, int]:
    """Validate a downsampled query's range and period (:class:`InvalidQuery` saying why);
    the range, clamped to InfluxDB's time range.

    The period is at most :data:`MAX_TIME_NS`, so that it is an int64 on both stores.
    """
    for name, value in (("start_ns", start_ns), ("end_ns", end_ns), ("every_ns", every_ns)):
        if type(value) is not int:
            raise InvalidQuery(f"{name} must be an int (nanoseconds)")
    if not 10**9 <= every_ns <= MAX_TIME_NS or every_ns % 10**9:
        raise InvalidQuery("the period must be a whole number of seconds, at least 1 s")
    if start_ns >= end_ns:
        raise InvalidQuery("the range must start before it ends")
    start, end = max(start_ns, MIN_TIME_NS), min(end_ns, MAX_TIME_NS + 1)
    if start < end and (end - 1) // every_ns - start // every_ns >= MAX_BUCKETS:
        raise InvalidQuery(
            f"the range spans more than {MAX_BUCKETS} periods of {every_ns // 10**9} s: "
            "use a shorter range or a longer period"
        )
    return start, end


class TelemetryStore(Protocol):
    """Where telemetry points are kept: InfluxDB in production, SQLite for one station."""

    def open(self) -> None:
        """Connect and create the schema; constructors do no I/O."""

    def close(self) -> None:
        """Release connections; the store may be opened again."""

    def write(self, points: Sequence[TelemetryPoint]) -> None:
        """Store ``points`` durably before returning.

        Rewriting the same measurement, tags and time overwrites: fields merge (a field
        missing from the rewrite keeps its value), so redelivery is harmless.
        """

    def query_series(
        self,
        measurement: str,
        field: str,
        tags: Mapping[str, str],
        start_ns: int | None = None,
        end_ns: int | None = None,
        limit: int | None = None,
    ) -> list[SeriesValue]:
        """Values of ``field`` in the series matching ``tags``, oldest first.

        ``start_ns`` is inclusive and ``end_ns`` exclusive; points without the field are
        skipped (before ``limit`` applies).
        """
        ...

    def query_buckets(
        self,
        measurement: str,
        field: str,
        tags: Mapping[str, str],
        start_ns: int,
        end_ns: int,
        every_ns: int,
    ) -> list[Bucket]:
        """Numeric values of ``field`` in the series matching ``tags`` (all of them
        together) in ``[start_ns, end_ns)``, as mean, min, max and count per period of
        ``every_ns``; periods without values are left out; oldest first.

        Only float and integer values count: a string or boolean field has no buckets.
        Raises :class:`InvalidQuery` for a bad name, range or period (:func:`check_buckets`).
        """
        ...

    def series(self, measurement: str) -> list[dict[str, str]]:
        """The distinct tag sets of ``measurement``, sorted."""
        ...

    def last(self, measurement: str, field: str, group_by: Sequence[str]) -> list[LastValue]:
        """The latest value of ``field`` per distinct value of the ``group_by`` tags.

        A ``group_by`` key that is not a tag of the measurement groups as ``""`` (as
        InfluxQL does).
        """
        ...


def check_query(
    measurement: str, field: str | None, names: Sequence[str], limit: int | None
) -> None:
    """Validate query arguments so stores can put them in queries without surprises.

    Raises :class:`InvalidQuery` (a ``ValueError``, as it was before that class existed).
    """
    try:
        check_name(measurement, "measurement")
        if field is not None:
            check_name(field, "field")
        for name in names:
            check_name(name, "tag key")
    except ValueError as exc:
        raise InvalidQuery(str(exc)) from None
    if limit is not None and limit < 0:
        raise InvalidQuery("limit must not be negative")


def sort_tag_sets(tag_sets: list[dict[str, str]]) -> list[dict[str, str]]:
    """Tag sets in a stable order, the same for every store."""
    return sorted(tag_sets, key=lambda tags: sorted(tags.items()))


def group_latest(candidates: list[LastValue]) -> list[LastValue]:
    """Keep the latest candidate of each group (ties: the first seen), sorted by group."""
    best: dict[tuple[tuple[str, str], ...], LastValue] = {}
    for candidate in candidates:
        key = tuple(sorted(candidate.tags.items()))
        held = best.get(key)
        if held is None or candidate.time_ns > held.time_ns:
            best[key] = candidate
    return [best[key] for key in sorted(best)]


# --- schema rules -------------------------------------------------------------------


@dataclass(slots=True)
class MeasurementSchema:
    """What a store knows of one measurement: its tag keys and its fields' types."""

    tags: frozenset[str]
    fields: dict[str, FieldType] = field(default_factory=dict)

    def copy(self) -> MeasurementSchema:
        return MeasurementSchema(self.tags, dict(self.fields))


_Signature = tuple[str, tuple[str, ...], tuple[tuple[str, type], ...]]
SchemaLoader = Callable[[str], MeasurementSchema | None]


@dataclass(slots=True)
class SchemaDelta:
    """The schema facts a batch adds; the store persists them with the batch (SQLite)."""

    schemas: dict[str, MeasurementSchema] = field(default_factory=dict)
    new_measurements: dict[str, frozenset[str]] = field(default_factory=dict)
    new_fields: list[tuple[str, str, FieldType]] = field(default_factory=list)
    signatures: set[_Signature] = field(default_factory=set)


class SchemaGuard:
    """Applies the schema rules to batches, with a cache of what the store already holds.

    Schema facts never change once written (tag sets are fixed, field types too), so
    cached facts stay true; anything not known yet is loaded from the store with the
    ``load`` callback, which for SQLite runs inside the write transaction and so is
    authoritative even with several writer processes. Points shaped like ones already
    accepted (same measurement, tag keys, field names and types) cost one set lookup.
    """

    _MAX_SIGNATURES = 10_000

    def __init__(self) -> None:
        self._known: dict[str, MeasurementSchema] = {}
        self._verified: set[_Signature] = set()
        self._lock = threading.RLock()  # load() may call forget()

    def check(self, points: Sequence[TelemetryPoint], load: SchemaLoader) -> SchemaDelta:
        """Raise :class:`StoreRejected` if a point breaks a rule; else what the batch adds."""
        with self._lock:
            todo: dict[_Signature, TelemetryPoint] = {}
            for point in points:
                signature = _signature(point)
                if signature not in self._verified:
                    todo.setdefault(signature, point)
            if not todo:
                return SchemaDelta()
            self._refresh(todo.values(), load)
            try:
                return self._admit_all(todo)
            except StoreRejected:
                # Perhaps a stale or torn snapshot (another writer was adding to the
                # measurement as we looked): judge again on a fresh one before refusing.
                self._refresh(todo.values(), load, force=True)
                return self._admit_all(todo)

    def _admit_all(self, todo: Mapping[_Signature, TelemetryPoint]) -> SchemaDelta:
        delta = SchemaDelta()
        for signature, point in todo.items():
            self._admit(point, delta)
            delta.signatures.add(signature)
        return delta

    def confirm(self, delta: SchemaDelta) -> None:
        """The batch is stored: its schema facts are now facts."""
        with self._lock:
            self._known.update(delta.schemas)
            if len(self._verified) > self._MAX_SIGNATURES:
                self._verified.clear()
            self._verified |= delta.signatures

    def schema(
        self,
        measurement: str,
        load: SchemaLoader,
        need: str | None = None,
        need_tags: Iterable[str] = (),
    ) -> MeasurementSchema | None:
        """The measurement's schema, loaded if unknown or if it lacks the field ``need``
        or a tag key of ``need_tags``.

        A cached schema can be incomplete but never wrong: InfluxDB may answer ``SHOW TAG
        KEYS`` and ``SHOW FIELD KEYS`` from different moments of a concurrent write.
        """
        with self._lock:
            known = self._known.get(measurement)
            if (
                known is None
                or (need is not None and need not in known.fields)
                or not set(need_tags) <= known.tags
            ):
                loaded = load(measurement)
                if loaded is not None:
                    self._known[measurement] = known = loaded
            return known

    def forget(self) -> None:
        """Drop the cache (the store was replaced underneath us, e.g. database recreated)."""
        with self._lock:
            self._known.clear()
            self._verified.clear()

    def _refresh(
        self, points: Iterable[TelemetryPoint], load: SchemaLoader, *, force: bool = False
    ) -> None:
        """Load each measurement the cache cannot vouch for (or all, ``force``d), once."""
        stale: set[str] = set()
        for point in points:
            known = self._known.get(point.measurement)
            if force or known is None or not point.fields.keys() <= known.fields.keys():
                stale.add(point.measurement)
        for measurement in stale:
            loaded = load(measurement)
            if loaded is not None:
                self._known[measurement] = loaded

    def _admit(self, point: TelemetryPoint, delta: SchemaDelta) -> None:
        name = point.measurement
        schema = delta.schemas.get(name)
        if schema is None:
            known = self._known.get(name)
            if known is None:
                schema = MeasurementSchema(frozenset(point.tags))
                delta.new_measurements[name] = schema.tags
            else:
                schema = known.copy()
            delta.schemas[name] = schema
        if point.tags.keys() != schema.tags:
            raise StoreRejected(
                f"measurement {name!r} has tag keys {sorted(schema.tags)}, a point has "
                f"{sorted(point.tags)}: a measurement's tag set is fixed once written"
            )
        for key, value in point.fields.items():
            self._admit_field(name, schema, key, field_type(value), delta)

    @staticmethod
    def _admit_field(
        name: str, schema: MeasurementSchema, key: str, kind: FieldType, delta: SchemaDelta
    ) -> None:
        held = schema.fields.get(key)
        if held is None:
            schema.fields[key] = kind
            delta.new_fields.append((name, key, kind))
        elif held != kind:
            raise StoreRejected(
                f"field type conflict: field {key!r} of measurement {name!r} is {held}, "
                f"a point has {kind}"
            )


def _signature(point: TelemetryPoint) -> _Signature:
    return (
        point.measurement,
        tuple(point.tags),
        tuple((key, value.__class__) for key, value in point.fields.items()),
    )
