"""The durable outbox: every message is on the box's disk before it is published.

A message is committed (WAL fsynced) by :meth:`Outbox.add` before the sender may publish
it, and deleted only by :meth:`Outbox.confirm`, when the gateway's receipt says it is
stored. Sequence numbers rise across reboots, so ``(device, seq)`` names a message and
adding it twice keeps one copy.

Table ``messages`` (``PRAGMA user_version = 1``), keyed ``(device, seq)`` WITHOUT ROWID::

    device, seq, kind, priority, ts_ms, size, retain, probe, celsius, topic, payload

``probe`` and ``celsius`` are copied from temperature bodies so that thinning needs no
JSON; ``size`` is ``len(payload)``. Table ``counters`` holds the totals that must survive
restarts (``thinned``, ``dropped``, ``enqueued:{kind}``), updated in the transaction
that changes the rows they count.

The quota (the issue's words: security, real-name, locker, sorter and scan events are
never dropped; when the outbox is full, temperature readings are thinned, keeping min,
max and last per window). Above ``max_bytes`` of payload after an add, the oldest health
readings go first, then temperature readings are thinned per (device, probe, window):
the minimum, the maximum and the last reading of each window stay. The window starts at
``thin_window_s`` and doubles until the outbox is under the low-water mark
(:data:`LOW_WATER` of ``max_bytes``, so thinning does not run on every add) or a window
covering everything pending removes nothing. Events are never removed: if they alone
fill the quota, adds are still accepted and :attr:`OutboxStats.over_quota` says so.

The file gives its space back (``PRAGMA auto_vacuum = INCREMENTAL``): once confirms have
freed 1,024 pages, they are returned to the disk, so the file a long outage's backlog
grew shrinks again as the backlog drains. An outbox made by an older agent, without that
mode, is rewritten once (``VACUUM``) when it is opened (used as it is while that fails,
for lack of disk space, say).

The running byte total and per-device depth live in memory (recomputed at ``open``), so
one process writes an outbox; others may open it to read (``edge check``, tests).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from contracts import AnyEnvelope, ContractError, TemperatureEnvelope, encode
from contracts.timestamps import to_epoch_ms
from edge.errors import EdgeError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
LOW_WATER = 0.9
"""Share of ``max_bytes`` that a quota run brings the outbox down to."""

_BUSY_TIMEOUT_S = 10.0
_JOURNAL_SIZE_LIMIT = 16 * 1024 * 1024  # the WAL shrinks back to this after a checkpoint
_RECLAIM_FREE_PAGES = 1024  # free pages (4 MiB at SQLite's 4 KiB) that a confirm gives back
_MAX_WINDOW_MS = 1 << 52  # far beyond any span of device timestamps; ends a runaway loop
_SEQ_MAX = (1 << 63) - 1
_INCREMENTAL = 2  # PRAGMA auto_vacuum: free pages stay until incremental_vacuum


class Priority(IntEnum):
    """What the quota may do to a message of this kind."""

    KEEP = 0  # events: scan, door, induction, divert, xray, command_result, status
    THIN = 1  # temperature readings: thinned when the outbox is over quota
    DROP = 2  # health: the oldest are dropped first when over quota


_PRIORITY = {"temperature": Priority.THIN, "health": Priority.DROP}


def priority_of(kind: str) -> Priority:
    """The quota class of a kind; anything not known to be expendable is kept."""
    return _PRIORITY.get(kind, Priority.KEEP)


@dataclass(frozen=True, slots=True)
class Pending:
    """One message waiting for its receipt, as the sender publishes it."""

    device: str
    seq: int
    topic: str
    payload: bytes
    retain: bool
    kind: str
    ts_ms: int


@dataclass(frozen=True)
class OutboxStats:
    """What the health report and ``postedge edge check`` say about the outbox."""

    depth: int  # rows pending (all devices)
    bytes: int  # sum of payload sizes pending
    max_bytes: int
    thinned: int  # temperature readings removed by thinning, since the file was made
    dropped: int  # health readings dropped over quota, since the file was made
    enqueued: dict[str, int]  # per kind, total ever added, since the file was made
    over_quota: bool  # still above max_bytes after thinning (only never-drop rows left)
    oldest_ts_ms: int | None  # device timestamp of the oldest pending row


_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS messages (
    device TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, priority INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL, size INTEGER NOT NULL, retain INTEGER NOT NULL,
    probe TEXT, celsius REAL,  -- temperature readings only
    topic TEXT NOT NULL, payload BLOB NOT NULL,
    PRIMARY KEY (device, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_droppable ON messages (ts_ms) WHERE priority = 2;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)
    WITHOUT ROWID;
PRAGMA user_version = {SCHEMA_VERSION};
COMMIT;
"""

_INSERT = """
INSERT OR IGNORE INTO messages
    (device, seq, kind, priority, ts_ms, size, retain, probe, celsius, topic, payload)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

_BUMP = """
INSERT INTO counters (name, value) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET value = value + excluded.value
"""

# The oldest health rows whose removal brings the total down by at least :excess.
_DROP = """
DELETE FROM messages WHERE (device, seq) IN (
    SELECT device, seq FROM (
        SELECT device, seq,
               SUM(size) OVER (ORDER BY ts_ms, device, seq ROWS UNBOUNDED PRECEDING) - size
                   AS freed_before
        FROM messages WHERE priority = 2 -- Priority.DROP
    ) WHERE freed_before < :excess
)
RETURNING device, size
"""

# Every temperature row that is neither the min, the max nor the last of its window.
# Ties go to the latest row, so a window of equal readings keeps only one. The window
# number is floor(ts_ms / :w), also before 1970 (SQLite's / truncates towards zero).
_THIN = """
DELETE FROM messages WHERE (device, seq) IN (
    SELECT device, seq FROM (
        SELECT device, seq,
               ROW_NUMBER() OVER (grp ORDER BY celsius ASC, ts_ms DESC, seq DESC) AS by_low,
               ROW_NUMBER() OVER (grp ORDER BY celsius DESC, ts_ms DESC, seq DESC) AS by_high,
               ROW_NUMBER() OVER (grp ORDER BY ts_ms DESC, seq DESC) AS by_time
        FROM messages WHERE priority = 1 -- Priority.THIN
        WINDOW grp AS (PARTITION BY device, probe,
            CASE WHEN ts_ms >= 0 THEN ts_ms / :w ELSE (ts_ms + 1) / :w - 1 END)
    ) WHERE by_low > 1 AND by_high > 1 AND by_time > 1
)
RETURNING device, size
"""

_Row = tuple[str, int, str, int, int, int, int, str | None, float | None, str, bytes]


def _row(envelope: AnyEnvelope, topic: str, retain: bool) -> _Row:
    """The table row of one message; encoding happens here, outside the outbox's lock."""
    try:
        payload = encode(envelope)
    except ContractError as exc:
        raise EdgeError(f"cannot keep message {envelope.id}: {exc}") from None
    probe, celsius = None, None
    if isinstance(envelope, TemperatureEnvelope):
        probe, celsius = envelope.body.probe, envelope.body.celsius
    kind = envelope.kind
    key = (envelope.device, envelope.seq, kind, int(priority_of(kind)), to_epoch_ms(envelope.ts))
    return (*key, len(payload), int(retain), probe, celsius, topic, payload)


class Outbox:
    """Messages committed before publishing, deleted by receipts; safe from any thread."""

    def __init__(self, path: Path, *, max_bytes: int, thin_window_s: float = 300.0) -> None:
        if max_bytes <= 0 or thin_window_s <= 0:
            raise ValueError("max_bytes and thin_window_s must be positive")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._low_water = int(max_bytes * LOW_WATER)
        self._window_ms = max(1, round(thin_window_s * 1000))
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._depth: dict[str, int] = {}
        self._bytes = 0
        self._counters: dict[str, int] = {}
        self._over_quota = False
        self._run_above = max_bytes  # the byte total above which an add runs the quota

    # -- lifecycle ------------------------------------------------------------------

    def open(self) -> None:
        """Open or create the file, check it, and load the running totals."""
        with self._lock:
            if self._conn is not None:
                raise EdgeError(f"the outbox {self.path} is already open")
            self._conn = self._connect()
            self._over_quota, self._run_above = False, self.max_bytes

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Outbox:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            # One connection, used under self._lock only, by whichever thread holds it.
            conn = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise EdgeError(f"cannot open the outbox {self.path}: {exc}") from None
        try:
            self._prepare(conn)
            self._load(conn)
            if created:
                _fsync_dir(self.path.parent)
        except sqlite3.Error as exc:
            conn.close()
            raise EdgeError(
                f"the outbox {self.path} is damaged or not an outbox ({exc}); its unconfirmed "
                "messages cannot be read. Move it aside to start an empty outbox (what it "
                "held will then never be sent)."
            ) from None
        except OSError as exc:
            conn.close()
            raise EdgeError(f"cannot open the outbox {self.path}: {exc}") from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise EdgeError(
                f"the outbox {self.path} has schema version {version}, newer than this "
                f"agent's {SCHEMA_VERSION}: run the newer agent to drain it"
            )
        check = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(check)
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != _INCREMENTAL:
            # Before anything writes a new file's first page, where the mode is kept.
            conn.execute(f"PRAGMA auto_vacuum = {_INCREMENTAL}")
            if version > 0:  # an outbox from an older agent: rewritten once to take it
                self._rewrite(conn)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"cannot use WAL mode (journal mode is {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}")
        if version < SCHEMA_VERSION:
            conn.executescript(_SCHEMA)

    def _rewrite(self, conn: sqlite3.Connection) -> None:
        """``VACUUM`` an older outbox into the shrinking mode. It needs free space about
        the file's size, which a box after a long outage may lack: then the outbox is
        used as it is (it does not shrink yet) and the next open tries again."""
        log.info("outbox %s: rewriting it once so that it can shrink", self.path)
        try:
            conn.execute("VACUUM")
        except sqlite3.Error as exc:
            log.warning("outbox %s: not rewritten (%s); it will shrink once it is", self.path, exc)

    def _load(self, conn: sqlite3.Connection) -> None:
        rows = conn.execute(
            "SELECT device, COUNT(*), TOTAL(size) FROM messages GROUP BY device"
        ).fetchall()
        self._depth = {device: count for device, count, _ in rows}
        self._bytes = int(sum(size for _, _, size in rows))
        self._counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())

    # -- adding ---------------------------------------------------------------------

    def add(self, envelope: AnyEnvelope, topic: str, *, retain: bool = False) -> None:
        """Keep one message; it is durable when this returns. A known (device, seq) is
        ignored. Then applies the quota, which never removes this message unless it is
        a reading that thinning or dropping makes redundant."""
        row = _row(envelope, topic, retain)
        with self._lock, self._translated():
            conn = self._connection()
            with _transaction(conn):
                inserted = conn.execute(_INSERT, row).rowcount == 1
                if inserted:
                    conn.execute(_BUMP, (f"enqueued:{row[2]}", 1))
            if inserted:
                self._added([row])
                self._apply_quota(conn)

    def add_many(self, items: Iterable[tuple[AnyEnvelope, str]]) -> None:
        """Keep many messages in one transaction (one fsync), then apply the quota once."""
        rows = [_row(envelope, topic, False) for envelope, topic in items]
        with self._lock, self._translated():
            conn = self._connection()
            added: list[_Row] = []
            with _transaction(conn):
                for row in rows:
                    if conn.execute(_INSERT, row).rowcount == 1:
                        added.append(row)
                per_kind: dict[str, int] = {}
                for row in added:
                    per_kind[row[2]] = per_kind.get(row[2], 0) + 1
                conn.executemany(_BUMP, [(f"enqueued:{kind}", n) for kind, n in per_kind.items()])
            self._added(added)
            self._apply_quota(conn)

    def _added(self, rows: Sequence[_Row]) -> None:
        """Count committed rows into the in-memory totals."""
        for device, _seq, kind, _p, _ts, size, *_rest in rows:
            self._depth[device] = self._depth.get(device, 0) + 1
            self._bytes += size
            key = f"enqueued:{kind}"
            self._counters[key] = self._counters.get(key, 0) + 1

    # -- reading and confirming -----------------------------------------------------

    def pending(self, device: str, *, after_seq: int = -1, limit: int = 1000) -> list[Pending]:
        """Up to ``limit`` unconfirmed messages of ``device`` after ``after_seq``, in order."""
        with self._lock, self._translated():
            rows = (
                self._connection()
                .execute(
                    "SELECT seq, topic, payload, retain, kind, ts_ms FROM messages "
                    "WHERE device = ? AND seq > ? ORDER BY seq LIMIT ?",
                    (device, _clamp(after_seq), max(limit, 0)),
                )
                .fetchall()
            )
        return [
            Pending(device, seq, topic, bytes(payload), bool(retain), kind, ts_ms)
            for seq, topic, payload, retain, kind, ts_ms in rows
        ]

    def confirm(self, device: str, ranges: Sequence[tuple[int, int]]) -> int:
        """Delete what a receipt names (inclusive ``[first, last]`` ranges, in any order,
        overlapping or naming unknown numbers) in one transaction; return rows deleted."""
        with self._lock, self._translated():
            conn = self._connection()
            if not self._depth.get(device):
                return 0
            deleted: list[tuple[str, int]] = []
            with _transaction(conn):
                for first, last in ranges:
                    deleted += conn.execute(
                        "DELETE FROM messages WHERE device = ? AND seq BETWEEN ? AND ? "
                        "RETURNING device, size",
                        (device, _clamp(first), _clamp(last)),
                    ).fetchall()
            if deleted:
                self._removed(deleted)
                self._after_shrinking()
                self._reclaim(conn)
            return len(deleted)

    def depth(self, device: str | None = None) -> int:
        """Unconfirmed messages of ``device``, or of all devices."""
        with self._lock:
            self._connection()
            if device is None:
                return sum(self._depth.values())
            return self._depth.get(device, 0)

    def oldest_ts_ms(self, device: str | None = None) -> int | None:
        """Device timestamp of the oldest (first added, lowest seq) unconfirmed message."""
        with self._lock, self._translated():
            return self._oldest_ts_ms(self._connection(), device)

    def stats(self) -> OutboxStats:
        with self._lock, self._translated():
            conn = self._connection()
            return OutboxStats(
                depth=sum(self._depth.values()),
                bytes=self._bytes,
                max_bytes=self.max_bytes,
                thinned=self._counters.get("thinned", 0),
                dropped=self._counters.get("dropped", 0),
                enqueued={
                    name.removeprefix("enqueued:"): value
                    for name, value in self._counters.items()
                    if name.startswith("enqueued:")
                },
                over_quota=self._over_quota,
                oldest_ts_ms=self._oldest_ts_ms(conn, None),
            )

    def _oldest_ts_ms(self, conn: sqlite3.Connection, device: str | None) -> int | None:
        # Seq rises with time, so each device's first row is found on the primary key.
        devices = list(self._depth) if device is None else [device]
        oldest: int | None = None
        for name in devices:
            row = conn.execute(
                "SELECT ts_ms FROM messages WHERE device = ? ORDER BY seq LIMIT 1", (name,)
            ).fetchone()
            if row is not None and (oldest is None or row[0] < oldest):
                oldest = row[0]
        return oldest

    # -- the quota ------------------------------------------------------------------

    def _apply_quota(self, conn: sqlite3.Connection) -> None:
        """Drop health and thin temperature readings when over quota (under the lock).

        The message just added is already durable, so a failed run is logged, not raised:
        the add succeeded. After a run that could not get under the quota (events only),
        the next waits until another ``max_bytes - low water`` has come, so adds stay cheap.
        """
        if self._bytes <= self._run_above:
            return
        try:
            self._run_quota(conn)
        except sqlite3.Error as exc:
            log.error("outbox %s: could not apply the quota: %s", self.path, exc)

    def _run_quota(self, conn: sqlite3.Connection) -> None:
        """One run; logs the start and the end of an over-quota episode, not every add."""
        was_over, depth = self._over_quota, sum(self._depth.values())
        if not was_over:
            log.warning(
                "outbox over quota: %d of %d bytes in %d messages; dropping health readings "
                "and thinning temperature readings",
                self._bytes,
                self.max_bytes,
                depth,
            )
        dropped, thinned, window_ms = self._shrink(conn)
        self._over_quota = self._bytes > self.max_bytes
        if not self._over_quota:
            self._run_above = self.max_bytes
            log.info(
                "outbox under quota again: %d of %d bytes; dropped %d health, thinned %d "
                "temperature readings (window %g s)",
                self._bytes,
                self.max_bytes,
                dropped,
                thinned,
                window_ms / 1000,
            )
            return
        self._run_above = self._bytes + (self.max_bytes - self._low_water)
        if not was_over:
            log.warning(
                "outbox still over quota: %d of %d bytes with only events left, which are "
                "never dropped; accepting new messages anyway",
                self._bytes,
                self.max_bytes,
            )

    def _shrink(self, conn: sqlite3.Connection) -> tuple[int, int, int]:
        """One transaction: drop the oldest health rows, then thin with doubling windows
        until under the low-water mark. Returns (dropped, thinned, last window in ms)."""
        target = self._low_water
        window = self._window_ms
        with _transaction(conn):
            dropped = conn.execute(_DROP, {"excess": self._bytes - target}).fetchall()
            remaining = self._bytes - sum(size for _, size in dropped)
            thinned: list[tuple[str, int]] = []
            low, high = conn.execute(
                "SELECT MIN(ts_ms), MAX(ts_ms) FROM messages WHERE priority = 1"  # THIN
            ).fetchone()
            while remaining > target and low is not None and window <= _MAX_WINDOW_MS:
                removed = conn.execute(_THIN, {"w": window}).fetchall()
                thinned += removed
                remaining -= sum(size for _, size in removed)
                if remaining <= target or (not removed and window > high - low):
                    break
                window *= 2
            conn.executemany(_BUMP, [("dropped", len(dropped)), ("thinned", len(thinned))])
        self._counters["dropped"] = self._counters.get("dropped", 0) + len(dropped)
        self._counters["thinned"] = self._counters.get("thinned", 0) + len(thinned)
        self._removed(dropped + thinned)
        return len(dropped), len(thinned), window

    def _after_shrinking(self) -> None:
        """After a confirm: end an over-quota episode, or let the next run come sooner."""
        if not self._over_quota:
            return
        if self._bytes <= self.max_bytes:
            self._over_quota = False
            self._run_above = self.max_bytes
            log.info("outbox back under quota: %d bytes (limit %d)", self._bytes, self.max_bytes)
        else:
            slack = self.max_bytes - self._low_water
            self._run_above = min(self._run_above, self._bytes + slack)

    def _reclaim(self, conn: sqlite3.Connection) -> None:
        """Give the file's free pages back to the disk once there are enough of them, so
        an outbox that held a long outage's backlog does not keep its size for ever. The
        file itself shrinks at the next WAL checkpoint. A failure is logged: the confirm
        it follows has committed."""
        try:
            if conn.execute("PRAGMA freelist_count").fetchone()[0] >= _RECLAIM_FREE_PAGES:
                # executescript: execute() would take one SQLite step, one page
                conn.executescript("PRAGMA incremental_vacuum;")
        except sqlite3.Error as exc:
            log.error("outbox %s: could not give free space back: %s", self.path, exc)

    def _removed(self, rows: Iterable[tuple[str, int]]) -> None:
        """Take committed deletions, as (device, size), out of the in-memory totals."""
        for device, size in rows:
            self._bytes -= size
            if self._depth[device] > 1:
                self._depth[device] -= 1
            else:
                del self._depth[device]

    # -- plumbing -------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise EdgeError(f"the outbox {self.path} is not open")
        return self._conn

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """SQLite errors (disk full, I/O, damage found late) become EdgeError."""
        try:
            yield
        except sqlite3.Error as exc:
            raise EdgeError(f"outbox {self.path}: {exc}") from None


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT (durable: synchronous=FULL), or ROLLBACK on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _clamp(seq: int) -> int:
    """A sequence number bound for SQLite's 64-bit integers (real ones are below 10**18)."""
    return max(-1, min(seq, _SEQ_MAX))


def _fsync_dir(directory: Path) -> None:
    """Make a new file's directory entry durable, as a power cut could otherwise lose it."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
