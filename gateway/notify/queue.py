"""The delivery queue: one durable row per alert state and webhook, until delivered.

An alert is committed here before :meth:`gateway.notify.Notifier.notify` returns, so a
gateway that stops (or loses power) with deliveries pending sends them after it restarts.
The row's key is (alert id, alert state, alert severity, webhook): enqueueing the same
alert state again, as a restarted gateway replaying its alerts does, adds nothing, so
each state reaches each webhook once; an escalation (new severity) or a resolution (new
state) is a new row.

SQLite in WAL mode with ``synchronous=FULL`` (a commit is on disk when it returns), in a
file of its own so notifications never contend with the ledger. Finished rows (delivered
or given up) are kept ``keep_finished_s`` for deduplication, then pruned at open.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from contracts.alerts import AlertMessage
from contracts.durablefile import connect_durable
from gateway.notify.errors import NotifyError

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    alert_id TEXT NOT NULL,
    alert_state TEXT NOT NULL,
    alert_severity TEXT NOT NULL,
    webhook TEXT NOT NULL,
    station TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_error TEXT,
    delivered_at REAL,
    gave_up_at REAL,
    UNIQUE (alert_id, alert_state, alert_severity, webhook)
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (next_at, id)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;
"""


class QueueError(NotifyError):
    """The queue file cannot be opened, read or written (or the queue is not open)."""


@dataclass(frozen=True)
class Delivery:
    """A pending row: what to send (``payload``, the alert JSON) to which webhook."""

    id: int
    webhook: str
    station: str
    alert_id: str
    payload: str
    created_at: float
    attempts: int


class DeliveryQueue:
    """Pending and finished deliveries in one SQLite file; thread-safe."""

    def __init__(
        self,
        path: Path,
        *,
        keep_finished_s: float = 30 * 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._keep_finished_s = keep_finished_s
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        """Open (or create) the file; prune rows finished more than ``keep_finished_s`` ago."""
        try:
            db = connect_durable(self.path, _SCHEMA)
        except OSError as exc:
            raise QueueError(f"cannot open notify queue {self.path}: {exc}") from None
        except sqlite3.Error as exc:
            raise QueueError(f"notify queue {self.path} is unusable: {exc}") from None
        with self._lock:
            self._db = db
        cutoff = self._clock() - self._keep_finished_s
        with self._write() as db:
            db.execute(
                "DELETE FROM deliveries WHERE delivered_at < ? OR gave_up_at < ?", (cutoff, cutoff)
            )

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def add(self, alert: AlertMessage, webhooks: Iterable[str], now: float) -> int:
        """Queue ``alert`` for each webhook, due at once, in one commit; rows added.

        A (alert id, state, severity, webhook) already queued, delivered or given up is
        skipped: that is how a replayed alert is delivered once.
        """
        payload = alert.model_dump_json(by_alias=True)
        rows = [
            (alert.id, alert.state, alert.severity, name, alert.station, payload, now, now)
            for name in webhooks
        ]
        with self._write() as db:
            before = db.total_changes
            db.executemany(
                "INSERT INTO deliveries (alert_id, alert_state, alert_severity, webhook, "
                "station, payload, created_at, next_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                rows,
            )
            return db.total_changes - before

    def due(self, now: float, limit: int) -> list[Delivery]:
        """Pending rows whose time has come, oldest schedule first."""
        with self._read() as db:
            rows = db.execute(
                "SELECT id, webhook, station, alert_id, payload, created_at, attempts "
                "FROM deliveries WHERE delivered_at IS NULL AND gave_up_at IS NULL "
                "AND next_at <= ? "
                "ORDER BY next_at, id LIMIT ?",
                (now, limit),
            ).fetchall()
        return [Delivery(*row) for row in rows]

    def next_due(self) -> float | None:
        """When the earliest pending row is due, or None if nothing is pending."""
        with self._read() as db:
            row = db.execute(
                "SELECT MIN(next_at) FROM deliveries "
                "WHERE delivered_at IS NULL AND gave_up_at IS NULL"
            ).fetchone()
        return None if row[0] is None else float(row[0])

    def reschedule(self, now: float) -> None:
        """Make every pending row due at ``now`` (at start-up: a restart is often the fix,
        a corrected URL or secret, so nobody should wait out a long backoff)."""
        with self._write() as db:
            db.execute(
                "UPDATE deliveries SET next_at = ? "
                "WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_at > ?",
                (now, now),
            )

    def delivered(self, id: int, now: float) -> None:
        self._update(
            "UPDATE deliveries SET attempts = attempts + 1, delivered_at = ?, last_error = NULL "
            "WHERE id = ?",
            (now, id),
        )

    def retry(self, id: int, next_at: float, error: str) -> None:
        """A failed attempt: try again at ``next_at``."""
        self._update(
            "UPDATE deliveries SET attempts = attempts + 1, next_at = ?, last_error = ? "
            "WHERE id = ?",
            (next_at, error, id),
        )

    def defer(self, id: int, next_at: float) -> None:
        """Not now (rate limit): due again at ``next_at``; not an attempt, not an error."""
        self._update("UPDATE deliveries SET next_at = ? WHERE id = ?", (next_at, id))

    def give_up(self, id: int, now: float, error: str) -> None:
        """A failed last attempt: the row stays, finished, for deduplication."""
        self._update(
            "UPDATE deliveries SET attempts = attempts + 1, gave_up_at = ?, last_error = ? "
            "WHERE id = ?",
            (now, error, id),
        )

    def pending_count(self) -> int:
        with self._read() as db:
            row = db.execute(
                "SELECT COUNT(*) FROM deliveries WHERE delivered_at IS NULL AND gave_up_at IS NULL"
            ).fetchone()
        return int(row[0])

    def _update(self, sql: str, values: tuple[object, ...]) -> None:
        with self._write() as db:
            db.execute(sql, values)

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._connection()
            except sqlite3.Error as exc:
                raise QueueError(f"notify queue {self.path}: {exc}") from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction, committed (on disk) when the block ends."""
        with self._lock:
            db = self._connection()
            try:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise QueueError(f"notify queue {self.path}: {exc}") from None
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise QueueError(f"notify queue {self.path} is not open")
        return self._db
