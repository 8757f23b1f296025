"""The embedded telemetry store: one SQLite file, the default for the demo and one station.

Tables (``PRAGMA user_version = 1``)::

    series       (id INTEGER PRIMARY KEY, measurement TEXT, tags TEXT,
                  UNIQUE (measurement, tags))              tags: canonical JSON, keys sorted
    points       (series_id INTEGER, time_ns INTEGER, fields TEXT,
                  PRIMARY KEY (series_id, time_ns)) WITHOUT ROWID        fields: JSON object
    measurements (name TEXT PRIMARY KEY, tag_keys TEXT) WITHOUT ROWID    the fixed tag keys
    fields       (measurement TEXT, name TEXT, type TEXT,
                  PRIMARY KEY (measurement, name)) WITHOUT ROWID         each field's type

A rewrite of a point merges its fields into the stored ones with ``json_patch``, as
InfluxDB does. The last two tables hold the schema rules of :mod:`.model`, checked inside
each write transaction, so they hold across writer processes too.

Concurrency: the file is in WAL mode, so readers (the API) never block the writer and
several writer processes (gateway workers) take turns on the write lock, waiting up to
``busy_timeout_s``. ``synchronous=FULL`` makes each commit durable (fsync of the WAL)
before :meth:`SqliteTelemetryStore.write` returns. Threads take connections from a small
pool: a connection serves one thread at a time (hence ``check_same_thread=False`` is
safe), reads run in parallel, and nothing is tied to threads that come and go (the API's
thread pool retires idle threads, which would leak thread-local connections).
"""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from gateway.telemetry.model import (
    Bucket,
    LastValue,
    MeasurementSchema,
    SchemaGuard,
    SeriesValue,
    StoreError,
    StoreRejected,
    StoreUnavailable,
    TelemetryPoint,
    check_buckets,
    check_query,
    group_latest,
    sort_tag_sets,
)

SCHEMA_VERSION = 1

_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    measurement TEXT NOT NULL,
    tags TEXT NOT NULL,
    UNIQUE (measurement, tags)
);
CREATE TABLE IF NOT EXISTS points (
    series_id INTEGER NOT NULL,
    time_ns INTEGER NOT NULL,
    fields TEXT NOT NULL,
    PRIMARY KEY (series_id, time_ns)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS measurements (
    name TEXT PRIMARY KEY,
    tag_keys TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fields (
    measurement TEXT NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('float', 'integer', 'string', 'boolean')),
    PRIMARY KEY (measurement, name)
) WITHOUT ROWID;
PRAGMA user_version = {SCHEMA_VERSION};
COMMIT;
"""

_UPSERT_POINT = """
INSERT INTO points (series_id, time_ns, fields) VALUES (?, ?, ?)
ON CONFLICT (series_id, time_ns) DO UPDATE SET fields = json_patch(points.fields, excluded.fields)
"""

_LATEST_PER_SERIES = """
SELECT s.tags, p.time_ns, p.fields -> :path
FROM series AS s JOIN points AS p ON p.series_id = s.id AND p.time_ns = (
    SELECT q.time_ns FROM points AS q
    WHERE q.series_id = s.id AND q.fields -> :path IS NOT NULL
    ORDER BY q.time_ns DESC LIMIT 1
)
WHERE s.measurement = :measurement
"""

# Errors that say "not now" rather than "never": busy or locked by another writer, disk
# full, I/O errors, out of memory. Everything else is a bug or a broken file.
_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_NOMEM")

_SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


def canonical_tags(tags: Mapping[str, str]) -> str:
    """The tag set as stored in ``series.tags``: JSON with sorted keys, no spaces."""
    return json.dumps(dict(tags), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _json_fields(fields: Mapping[str, object]) -> str:
    return json.dumps(dict(fields), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _path(name: str) -> str:
    """A JSON path to a key; names are validated identifiers, quoting is belt and braces."""
    return f'$."{name}"'


class _Pool:
    """Connections handed to one thread at a time; idle ones are kept for the next caller."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise StoreError("the SQLite store is closed")
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        finally:
            self._release(conn)

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            # A connection left inside a transaction (a failed rollback) is not handed on.
            if not self._closed and not conn.in_transaction:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close idle connections now and busy ones when they come back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class SqliteTelemetryStore:
    """The telemetry store contract on one SQLite file (see the module docstring)."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._pool: _Pool | None = None
        self._guard = SchemaGuard()
        self._series_ids: dict[_SeriesKey, int] = {}

    def __repr__(self) -> str:
        return f"SqliteTelemetryStore({str(self.path)!r})"

    # --- lifecycle ------------------------------------------------------------------

    def open(self) -> None:
        """Create the file's schema (idempotent; safe when several processes race)."""
        if self._pool is not None:
            return
        pool = _Pool(self._connect)
        try:
            with pool.connection() as conn, self._errors():
                self._create_schema_waiting(conn)
        except BaseException:
            pool.close()
            raise
        self._pool = pool

    def _create_schema_waiting(self, conn: sqlite3.Connection) -> None:
        """Create the schema, waiting out other processes doing the same.

        Switching a new file to WAL and creating tables can fail with "database is
        locked" at once, without SQLite's busy handler, when two processes (gateway
        workers) open a new file together; so retry until ``busy_timeout_s`` is spent.
        """
        deadline = time.monotonic() + max(self.busy_timeout_s, 1.0)
        pause = 0.005
        while True:
            try:
                self._create_schema(conn)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(random.uniform(pause, 2 * pause))  # backoff between attempts
            pause = min(pause * 2, 0.1)

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"SQLite store {self.path}: cannot use WAL mode (got {mode})")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"SQLite store {self.path} has schema version {version}; this postedge "
                f"knows up to {SCHEMA_VERSION}: upgrade postedge"
            )
        if version < SCHEMA_VERSION:
            try:
                conn.executescript(_SCHEMA)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _connect(self) -> sqlite3.Connection:
        with self._errors():
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_s,
                isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE ... COMMIT
                check_same_thread=False,  # the pool hands a connection to one thread at a time
            )
            try:
                conn.execute("PRAGMA synchronous = FULL")
            except BaseException:
                conn.close()
                raise
        return conn

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if self._pool is None:
            raise StoreError("the SQLite store is not open: call open() first")
        with self._pool.connection() as conn, self._errors():
            yield conn

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate sqlite3 errors at the boundary: callers see only store errors."""
        try:
            yield
        except sqlite3.Error as exc:
            raise self._translate(exc) from None

    def _translate(self, exc: sqlite3.Error) -> StoreError:
        name = getattr(exc, "sqlite_errorname", "") or ""
        text = f"SQLite store {self.path}: {exc}"
        if name.startswith(_TRANSIENT) or "locked" in str(exc):
            return StoreUnavailable(text)
        if isinstance(exc, sqlite3.DataError | sqlite3.IntegrityError):
            return StoreRejected(text)
        return StoreError(text)

    # --- writing --------------------------------------------------------------------

    def write(self, points: Sequence[TelemetryPoint]) -> None:
        """Upsert the batch in one transaction; committed (and fsynced) on return."""
        if not points:
            return
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                delta = self._guard.check(points, lambda name: _load_schema(conn, name))
                _persist_schema(conn, delta.new_measurements, delta.new_fields)
                new_ids = self._upsert_points(conn, points)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        # Only now are new series ids and schema facts sure to exist for everyone.
        self._guard.confirm(delta)
        self._series_ids.update(new_ids)

    def _upsert_points(
        self, conn: sqlite3.Connection, points: Sequence[TelemetryPoint]
    ) -> dict[_SeriesKey, int]:
        new_ids: dict[_SeriesKey, int] = {}
        rows = []
        for point in points:
            key = (point.measurement, tuple(point.tags.items()))
            series_id = self._series_ids.get(key) or new_ids.get(key)
            if series_id is None:
                series_id = new_ids[key] = _series_id(conn, point.measurement, point.tags)
            rows.append((series_id, point.time_ns, _json_fields(point.fields)))
        conn.executemany(_UPSERT_POINT, rows)
        return new_ids

    # --- reading --------------------------------------------------------------------

    def query_series(
        self,
        measurement: str,
        field: str,
        tags: Mapping[str, str],
        start_ns: int | None = None,
        end_ns: int | None = None,
        limit: int | None = None,
    ) -> list[SeriesValue]:
        check_query(measurement, field, list(tags), limit)
        if limit == 0:
            return []
        with self._connection() as conn:
            ids = _matching_series(conn, measurement, tags)
            if not ids:
                return []
            sql, params = _range_query(ids, _path(field), start_ns, end_ns, limit)
            rows = conn.execute(sql, params).fetchall()
        return [SeriesValue(time_ns, json.loads(value)) for time_ns, value in rows]

    def query_buckets(
        self,
        measurement: str,
        field: str,
        tags: Mapping[str, str],
        start_ns: int,
        end_ns: int,
        every_ns: int,
    ) -> list[Bucket]:
        check_query(measurement, field, list(tags), None)
        start, end = check_buckets(start_ns, end_ns, every_ns)
        with self._connection() as conn:
            ids = _matching_series(conn, measurement, tags)
            if not ids:
                return []
            # Periods are numbered floor(time / every), also before 1970 (SQLite's / and %
            # truncate toward zero), and multiplied out in Python, where nothing overflows.
            # Only JSON numbers count: ->> reads true and false as 1 and 0, and InfluxDB
            # has no mean() of booleans or text.
            sql = (
                "SELECT period, AVG(value), MIN(value), MAX(value), COUNT(value) FROM ("  # noqa: S608
                "SELECT time_ns / ? - (time_ns % ? < 0) AS period, fields ->> ? AS value "
                f"FROM points WHERE series_id IN ({','.join('?' * len(ids))}) "
                "AND time_ns >= ? AND time_ns < ? AND json_type(fields, ?) IN ('integer', 'real')"
                ") GROUP BY period ORDER BY period"
            )
            path = _path(field)
            params = [every_ns, every_ns, path, *ids, start, end, path]
            rows = conn.execute(sql, params).fetchall()
        return [
            Bucket(period * every_ns, float(mean), float(low), float(high), int(count))
            for period, mean, low, high, count in rows
        ]

    def series(self, measurement: str) -> list[dict[str, str]]:
        check_query(measurement, None, (), None)
        with self._connection() as conn:
            return sort_tag_sets([tag_set for _, tag_set in _series_of(conn, measurement)])

    def last(self, measurement: str, field: str, group_by: Sequence[str]) -> list[LastValue]:
        check_query(measurement, field, group_by, None)
        params = {"path": _path(field), "measurement": measurement}
        with self._connection() as conn:
            rows = conn.execute(_LATEST_PER_SERIES, params).fetchall()
        candidates = []
        for tags_json, time_ns, value in rows:
            tag_set = json.loads(tags_json)
            group = {key: tag_set.get(key, "") for key in group_by}
            candidates.append(LastValue(group, time_ns, json.loads(value)))
        return group_latest(candidates)


def _series_id(conn: sqlite3.Connection, measurement: str, tags: Mapping[str, str]) -> int:
    canonical = canonical_tags(tags)
    conn.execute(
        "INSERT INTO series (measurement, tags) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (measurement, canonical),
    )
    row = conn.execute(
        "SELECT id FROM series WHERE measurement = ? AND tags = ?", (measurement, canonical)
    ).fetchone()
    return int(row[0])


def _series_of(conn: sqlite3.Connection, measurement: str) -> list[tuple[int, dict[str, str]]]:
    rows = conn.execute("SELECT id, tags FROM series WHERE measurement = ?", (measurement,))
    return [(series_id, json.loads(tags)) for series_id, tags in rows]


def _matching_series(
    conn: sqlite3.Connection, measurement: str, tags: Mapping[str, str]
) -> list[int]:
    """The ids of the measurement's series whose tags include ``tags``."""
    return [
        series_id
        for series_id, tag_set in _series_of(conn, measurement)
        if all(tag_set.get(key) == value for key, value in tags.items())
    ]


def _range_query(
    ids: list[int], path: str, start_ns: int | None, end_ns: int | None, limit: int | None
) -> tuple[str, list[object]]:
    """SQL and parameters for one field's values over some series, time ascending."""
    where = [f"series_id IN ({','.join('?' * len(ids))})", "fields -> ? IS NOT NULL"]
    params: list[object] = [*ids, path]
    if start_ns is not None:
        where.append("time_ns >= ?")
        params.append(start_ns)
    if end_ns is not None:
        where.append("time_ns < ?")
        params.append(end_ns)
    sql = f"SELECT time_ns, fields -> ? FROM points WHERE {' AND '.join(where)}"  # noqa: S608
    sql += " ORDER BY time_ns, series_id"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return sql, [path, *params]


def _load_schema(conn: sqlite3.Connection, measurement: str) -> MeasurementSchema | None:
    row = conn.execute(
        "SELECT tag_keys FROM measurements WHERE name = ?", (measurement,)
    ).fetchone()
    if row is None:
        return None
    fields = conn.execute(
        "SELECT name, type FROM fields WHERE measurement = ?", (measurement,)
    ).fetchall()
    return MeasurementSchema(frozenset(json.loads(row[0])), dict(fields))


def _persist_schema(
    conn: sqlite3.Connection,
    measurements: Mapping[str, frozenset[str]],
    fields: Sequence[tuple[str, str, str]],
) -> None:
    conn.executemany(
        "INSERT INTO measurements (name, tag_keys) VALUES (?, ?)",
        [(name, json.dumps(sorted(keys))) for name, keys in measurements.items()],
    )
    conn.executemany("INSERT INTO fields (measurement, name, type) VALUES (?, ?, ?)", fields)
