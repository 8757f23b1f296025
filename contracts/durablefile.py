"""A small SQLite file that must not lose a committed row: the convention every
service's local queue or log follows (the edge's command log, the gateway's webhook
queue): WAL, ``synchronous = FULL`` (a commit is on disk before it returns), a busy
timeout for a second process, autocommit mode so callers write ``BEGIN IMMEDIATE``
themselves, usable from several threads under the caller's own lock."""

from __future__ import annotations

import sqlite3
from pathlib import Path

BUSY_TIMEOUT_MS = 5000


def connect_durable(path: Path, schema: str) -> sqlite3.Connection:
    """Open or create ``path`` and apply ``schema`` (idempotent DDL).

    Raises ``OSError`` if the directory or file cannot be made, ``sqlite3.Error`` if the
    file is not a usable database; callers translate both into their own error type.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        db.executescript(schema)
    except sqlite3.Error:
        db.close()
        raise
    return db
