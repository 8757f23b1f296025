"""The record of commands seen, so a command id is carried out at most once.

Commands come at least once: the gateway or the API may send the same command again after
a reconnect, and MQTT redelivers what was not acknowledged. A slot opened twice is a
parcel handed to the wrong person, so every command id is written down, durably, *before*
it is carried out, and its outcome after. A repeat of the id gets the first outcome back;
an id whose outcome was never written (the agent stopped half-way) gets an "interrupted"
error and is not tried again, because nobody can know whether the slot opened.

The same file keeps the few settings commands change (the probes' product profiles), so
they survive a restart. SQLite in WAL mode with ``synchronous=FULL``: a row is on disk
when :meth:`CommandLog.begin` returns.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from contracts.commands import CommandResultBody
from contracts.durablefile import connect_durable
from edge.errors import EdgeError

log = logging.getLogger(__name__)

INTERRUPTED_MESSAGE: Final = (
    "outcome unknown: the agent stopped while carrying it out; not repeated"
)
_PRUNE_EVERY: Final = 1000
"""Begins between two prunings; pruning also runs at open."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS commands (
    device TEXT NOT NULL,
    command_id TEXT NOT NULL,
    command TEXT NOT NULL,
    started REAL NOT NULL,
    result TEXT,
    PRIMARY KEY (device, command_id)
);
CREATE INDEX IF NOT EXISTS commands_started ON commands (started);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class CommandLogError(EdgeError):
    """The command log cannot be read or written (disk full, file damaged, not open)."""


class CommandLog:
    """Command ids per device with their outcomes, and persisted settings; thread-safe.

    Rows older than ``keep_days`` or beyond the newest ``max_rows`` are pruned: a repeat
    that late is not a redelivery any more. ``clock`` (wall seconds) dates the rows.
    """

    def __init__(
        self,
        path: Path,
        *,
        keep_days: float = 30,
        max_rows: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not keep_days > 0 or max_rows < 1:
            raise ValueError("need keep_days > 0 and max_rows >= 1")
        self.path = Path(path)
        self._keep_s = keep_days * 86_400
        self._max_rows = max_rows
        self._clock = clock
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._begins = 0

    def open(self) -> None:
        """Open (or create) the file and prune old rows."""
        try:
            db = connect_durable(self.path, _SCHEMA)
        except OSError as exc:
            raise CommandLogError(f"cannot open command log {self.path}: {exc}") from None
        except sqlite3.Error as exc:
            raise CommandLogError(f"command log {self.path} is unusable: {exc}") from None
        with self._lock:
            self._db = db
            self._prune()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def begin(self, device: str, command_id: str, command: str) -> CommandResultBody | None:
        """Record ``command_id`` as started and return None: the caller carries it out.

        If the id was seen before on ``device``, return the first outcome again (with
        ``replayed=True``) instead; if that run never finished, an ``interrupted`` error,
        which is then kept as the id's outcome.
        """
        with self._lock:
            db = self._connection()
            try:
                inserted = db.execute(
                    "INSERT INTO commands (device, command_id, command, started) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (device, command_id, command, self._clock()),
                ).rowcount
                if inserted:
                    self._begins += 1
                    if self._begins % _PRUNE_EVERY == 0:
                        self._prune()
                    return None
                row = db.execute(
                    "SELECT command, result FROM commands WHERE device = ? AND command_id = ?",
                    (device, command_id),
                ).fetchone()
            except sqlite3.Error as exc:
                raise self._error("record", exc) from None
            first_command, stored = row
            if stored is not None:
                result = CommandResultBody.model_validate_json(stored)
            else:
                result = CommandResultBody(
                    command_id=command_id,
                    command=first_command,
                    ok=False,
                    error=INTERRUPTED_MESSAGE,
                    reason="interrupted",
                )
                self._store(device, command_id, result)
            return result.model_copy(update={"replayed": True})

    def finish(self, device: str, command_id: str, result: CommandResultBody) -> None:
        """Record the outcome of a command :meth:`begin` let through."""
        with self._lock:
            self._store(device, command_id, result.model_copy(update={"replayed": False}))

    def get_setting(self, key: str) -> str | None:
        with self._lock:
            try:
                row = (
                    self._connection()
                    .execute("SELECT value FROM settings WHERE key = ?", (key,))
                    .fetchone()
                )
            except sqlite3.Error as exc:
                raise self._error("read a setting from", exc) from None
        return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str) -> None:
        with self._lock:
            try:
                self._connection().execute(
                    "INSERT INTO settings (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )
            except sqlite3.Error as exc:
                raise self._error("write a setting to", exc) from None

    def settings(self, prefix: str) -> dict[str, str]:
        """Every setting whose key starts with ``prefix``."""
        with self._lock:
            try:
                rows = (
                    self._connection()
                    .execute(
                        "SELECT key, value FROM settings WHERE substr(key, 1, ?) = ? ORDER BY key",
                        (len(prefix), prefix),
                    )
                    .fetchall()
                )
            except sqlite3.Error as exc:
                raise self._error("read settings from", exc) from None
        return {str(key): str(value) for key, value in rows}

    def count(self) -> int:
        """How many command ids are remembered (for tests and health)."""
        with self._lock:
            return int(self._connection().execute("SELECT count(*) FROM commands").fetchone()[0])

    def _store(self, device: str, command_id: str, result: CommandResultBody) -> None:
        try:
            self._connection().execute(
                "UPDATE commands SET result = ? WHERE device = ? AND command_id = ?",
                (result.model_dump_json(), device, command_id),
            )
        except sqlite3.Error as exc:
            raise self._error("record an outcome in", exc) from None

    def _prune(self) -> None:
        db = self._connection()
        try:
            with_age = db.execute(
                "DELETE FROM commands WHERE started < ?", (self._clock() - self._keep_s,)
            ).rowcount
            beyond = db.execute(
                "DELETE FROM commands WHERE rowid NOT IN "
                "(SELECT rowid FROM commands ORDER BY started DESC, rowid DESC LIMIT ?)",
                (self._max_rows,),
            ).rowcount
        except sqlite3.Error as exc:
            raise self._error("prune", exc) from None
        if with_age or beyond:
            log.info("command log: pruned %d old and %d surplus ids", with_age, beyond)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise CommandLogError(f"command log {self.path} is not open")
        return self._db

    def _error(self, what: str, exc: sqlite3.Error) -> CommandLogError:
        return CommandLogError(f"cannot {what} command log {self.path}: {exc}")
