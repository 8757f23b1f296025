"""The ledger database: one SQLAlchemy engine, its connection rules, and transactions.

SQLite (the default, ``sqlite:///path``) is tuned on every new connection: a busy
timeout first (so the next pragmas wait for a lock rather than fail), WAL so readers never
block the writer, ``synchronous=FULL`` so a commit is on disk when it returns, and
foreign keys on. Every transaction begins ``IMMEDIATE``: the decision engine reads and
then writes, and a deferred transaction that finds the database changed under it when
it first writes fails at once instead of waiting for the lock. Transactions opened with
``write=False`` begin deferred (reports that only read).

PostgreSQL (``postgresql+psycopg://user:pass@host:port/db``; plain ``postgresql://`` means
psycopg 3 as well) runs at its default READ COMMITTED isolation. Races between gateway
processes are settled by unique keys: the transaction that loses raises
:class:`LedgerConflict`, which the decision engine retries.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import UTC, date, tzinfo
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from gateway.ledger.errors import LedgerError, translated
from gateway.ledger.migrations import MIGRATIONS, Migration, applied, migrate
from gateway.ledger.repository import Coverage, LedgerTx
from gateway.ledger.sync import sync_registry
from gateway.registry import Registry

_BEGIN_OPTION = "postedge_sqlite_begin"


class Ledger:
    """The parcel ledger; ``open()`` connects and migrates, ``close()`` lets go."""

    def __init__(
        self,
        url: str,
        *,
        busy_timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self._url = _parse_url(url)
        self._busy_timeout_s = busy_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._migrations = tuple(migrations)
        self._engine: Engine | None = None
        self.registry_version = 0
        """Counts this object's :meth:`sync_registry` calls, so that callers caching what
        was synced (the decision engine's sorter routings) know when to forget it."""
        self.where = self._url.render_as_string(hide_password=True)
        """The database, for messages (password hidden)."""

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._url.get_backend_name()

    def open(self) -> None:
        """Connect and apply the missing migrations; a second call does nothing."""
        if self._engine is not None:
            return
        engine = self._create_engine()
        try:
            with translated(self.where):
                migrate(engine, self._migrations)
        except BaseException:
            engine.dispose()
            raise
        self._engine = engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> Ledger:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[LedgerTx]:
        """One transaction: committed when the block ends, rolled back if it raises.

        Database errors inside come out as :class:`LedgerError` subclasses; other
        exceptions pass through unchanged (after the rollback).
        """
        engine = self._require_engine()
        with translated(self.where), engine.connect() as connection:
            if not write:
                connection = connection.execution_options(**{_BEGIN_OPTION: "DEFERRED"})
            with connection.begin():
                yield LedgerTx(connection)

    def sync_registry(self, registry: Registry) -> None:
        """Upsert stations, devices and sorter routes from ``registry`` (see
        :mod:`gateway.ledger.sync`)."""
        with self.transaction() as tx:
            sync_registry(tx.connection, registry)
        self.registry_version += 1

    def coverage(self, station: str, day: date, tz: tzinfo = UTC) -> Coverage:
        """Acceptance coverage of ``station`` on ``day`` (see :meth:`LedgerTx.coverage`)."""
        with self.transaction(write=False) as tx:
            return tx.coverage(station, day, tz)

    def schema_versions(self) -> list[tuple[int, str]]:
        """(version, description) of every migration applied, oldest first."""
        engine = self._require_engine()
        with translated(self.where):
            return applied(engine)

    def _require_engine(self) -> Engine:
        if self._engine is None:
            raise LedgerError(f"ledger {self.where} is not open")
        return self._engine

    def _create_engine(self) -> Engine:
        with translated(self.where):
            if self.backend == "sqlite":
                return self._sqlite_engine()
            return create_engine(
                self._url,
                pool_pre_ping=True,
                connect_args={
                    "connect_timeout": max(1, round(self._connect_timeout_s)),
                    "application_name": "postedge-gateway",
                },
            )

    def _sqlite_engine(self) -> Engine:
        engine = create_engine(
            self._url,
            connect_args={"timeout": self._busy_timeout_s, "check_same_thread": False},
        )
        busy_ms = round(self._busy_timeout_s * 1000)

        @event.listens_for(engine, "connect")
        def _tune(dbapi_connection: Any, _record: Any) -> None:
            # Transactions are begun by _begin below, not by the sqlite3 module.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = FULL")
                cursor.execute("PRAGMA foreign_keys = ON")
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection: Connection) -> None:
            mode = connection.get_execution_options().get(_BEGIN_OPTION, "IMMEDIATE")
            connection.exec_driver_sql(f"BEGIN {mode}")

        return engine


def _parse_url(url: str) -> URL:
    """Check the URL names a supported backend, without connecting."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise LedgerError("ledger url is not a database URL") from None
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "sqlite" and driver == "pysqlite":
        if parsed.database in (None, "", ":memory:"):
            raise LedgerError("ledger url must name a SQLite file (sqlite:///path)")
        return parsed
    if backend == "postgresql" and driver in ("psycopg", "psycopg2"):
        return parsed.set(drivername="postgresql+psycopg")
    raise LedgerError(
        f"ledger url {parsed.render_as_string(hide_password=True)!r}: "
        "use sqlite:///path or postgresql+psycopg://user@host/db"
    )
