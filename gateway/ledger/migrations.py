"""Versioned schema migrations, applied by :meth:`gateway.ledger.Ledger.open`.

``schema_migrations`` (version PK, applied_at, description) records every version applied.
:data:`MIGRATIONS` is the ordered list; version N is ``MIGRATIONS[N - 1]``. Each migration
runs in a transaction of its own together with its ``schema_migrations`` row, so a
database is always at exactly one version.

Two gateway processes opening one database at once must not both migrate. Every step
takes the database's migration lock first, inside its transaction: PostgreSQL a
transaction-level advisory lock, SQLite the write lock (``BEGIN IMMEDIATE``, which the
engine issues for every transaction). The step then reads the current version again, so
whoever waited finds the work done and applies nothing. A database newer than this code
is refused rather than used: its meaning may have changed under us.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Column, Connection, Engine, Integer, MetaData, String, Table, func, select

from gateway.ledger.errors import LedgerError
from gateway.ledger.schema import (
    INDUCTIONS_BY_TRANSACTION,
    NAMING,
    V3_TABLES,
    V4_TABLES,
    V5_TABLES,
    V6_TABLES,
    UtcDateTime,
    add_v2,
    add_v3,
    add_v4,
    add_v5,
    add_v6,
    define_v1,
    v3_alert_columns,
)

MIGRATION_LOCK_KEY = 0x706F73746564_01
"""The PostgreSQL advisory lock key of the migration lock (``posted`` + 1)."""


@dataclass(frozen=True)
class Migration:
    """One schema version: what it does, and the function that does it on a connection."""

    description: str
    apply: Callable[[Connection], None]


def _create_v1(connection: Connection) -> None:
    define_v1(MetaData(naming_convention=NAMING)).create_all(connection)


def _index_inductions_by_transaction(connection: Connection) -> None:
    inductions = add_v2(define_v1(MetaData(naming_convention=NAMING))).tables["inductions"]
    index = next(i for i in inductions.indexes if i.name == INDUCTIONS_BY_TRANSACTION)
    index.create(connection)


def _cold_chain(connection: Connection) -> None:
    """New columns of ``alerts`` (ALTER TABLE, one per column: SQLite adds no more at
    once) and the cold-chain tables, as :func:`add_v3` defines them."""
    metadata = add_v3(add_v2(define_v1(MetaData(naming_convention=NAMING))))
    preparer = connection.dialect.identifier_preparer
    for column in v3_alert_columns():
        kind = column.type.compile(dialect=connection.dialect)
        connection.exec_driver_sql(
            f"ALTER TABLE alerts ADD COLUMN {preparer.quote(column.name)} {kind}"
        )
    metadata.create_all(connection, tables=[metadata.tables[name] for name in V3_TABLES])


def _api_access(connection: Connection) -> None:
    """The supervisor API's users, tokens and audit trail, as :func:`add_v4` defines them."""
    metadata = add_v4(add_v3(add_v2(define_v1(MetaData(naming_convention=NAMING)))))
    metadata.create_all(connection, tables=[metadata.tables[name] for name in V4_TABLES])


def _store_outbox(connection: Connection) -> None:
    """Points kept for the telemetry store with the change they record (:func:`add_v5`)."""
    metadata = add_v5(add_v4(add_v3(add_v2(define_v1(MetaData(naming_convention=NAMING))))))
    metadata.create_all(connection, tables=[metadata.tables[name] for name in V5_TABLES])


def _leases(connection: Connection) -> None:
    """Leases of one-per-ledger engines (:func:`gateway.ledger.schema.add_v6`); built
    exactly to version 6, so that a later version's change to these tables cannot
    change what this step creates."""
    metadata = add_v6(add_v5(add_v4(add_v3(add_v2(define_v1(MetaData(naming_convention=NAMING)))))))
    metadata.create_all(connection, tables=[metadata.tables[name] for name in V6_TABLES])


MIGRATIONS: tuple[Migration, ...] = (
    Migration("stations, devices, routes, parcels, real-name, X-ray, decisions, codes", _create_v1),
    Migration("inductions indexed by sorter and transaction (divert confirmations)",
              _index_inductions_by_transaction),
    Migration("cold chain: alert lifecycle columns, probe and door states, cold stays",
              _cold_chain),
    Migration("supervisor API: users, hashed tokens, audit trail", _api_access),
    Migration("telemetry points kept with their ledger change until stored", _store_outbox),
    Migration("leases: one cold-chain engine per ledger", _leases),
)  # fmt: skip
"""Every version in order. Append only: a released migration is never edited."""

_VERSIONS = Table(
    "schema_migrations",
    MetaData(naming_convention=NAMING),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", UtcDateTime(), nullable=False),
    Column("description", String(200), nullable=False),
)


def lock(connection: Connection, key: int) -> None:
    """Take a transaction-scoped lock named ``key`` (PostgreSQL; SQLite's ``BEGIN
    IMMEDIATE`` already holds the database's only write lock)."""
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(key)))


def current_version(connection: Connection) -> int:
    """The highest version applied; 0 for an empty database."""
    _VERSIONS.create(connection, checkfirst=True)
    version = connection.execute(select(func.max(_VERSIONS.c.version))).scalar_one()
    return int(version or 0)


def migrate(engine: Engine, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Apply the missing migrations one transaction each; return the version reached."""
    latest = len(migrations)
    while True:
        with engine.begin() as connection:
            lock(connection, MIGRATION_LOCK_KEY)
            version = current_version(connection)
            if version > latest:
                raise LedgerError(
                    f"database schema version {version} is newer than this gateway ({latest})"
                )
            if version == latest:
                return version
            step = migrations[version]
            step.apply(connection)
            connection.execute(
                _VERSIONS.insert().values(
                    version=version + 1,
                    applied_at=datetime.now(UTC),
                    description=step.description,
                )
            )


def applied(engine: Engine) -> list[tuple[int, str]]:
    """(version, description) of every migration applied, oldest first."""
    with engine.begin() as connection:
        rows = connection.execute(
            select(_VERSIONS.c.version, _VERSIONS.c.description).order_by(_VERSIONS.c.version)
        )
        return [(int(row.version), str(row.description)) for row in rows]
