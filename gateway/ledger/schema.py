"""The ledger's tables, version by version, as SQLAlchemy Core metadata.

Schema v1 (what each table is for; timestamps are aware UTC, see :class:`UtcDateTime`)::

    stations          id PK, name, division (12 digits), tier, active
    devices           id PK, station -> stations, role, exception_chute (sorters), active
    routes            (sorter -> devices, prefix) PK, chute        a sorter's routing table
    parcels           waybill PK, station -> stations, device (the counter), destination,
                      accepted_at, clerk, request (message id)    one row per acceptance
    realname_records  waybill PK -> parcels, id_type, key_id, nonce, ciphertext,
                      lookup (keyed HMAC, indexed), masked_number, masked_name, masked_phone
    inspections       waybill PK -> parcels, inspected, declared_contents, refused_items JSON
    xray_verdicts     id PK, waybill (indexed; no FK: a parcel may be X-rayed before its
                      acceptance reaches this ledger), verdict, operator, image, scanned_at,
                      station, device, request
    holds             id PK, waybill, reason, since, released_at, released_by
                      at most one open hold (released_at IS NULL) per waybill
    alerts            id PK, station, kind, waybill, severity, details JSON, raised_at,
                      state (open|acknowledged|resolved), state_by, state_at
    decisions         id PK, station, device, request, waybill, kind, outcome, reason,
                      facts JSON (what was looked up), body JSON (the published body, if
                      any), decided_at
    inductions        request PK, sorter, waybill, transaction_no, chute, routed,
                      inducted_at; at most one routed induction per (sorter, waybill)
    pickup_codes      id PK, waybill, station, device (the locker), board, lock, salt,
                      code_hash, issued_at, expires_at, used_at, closed (pickup|superseded)
    locker_code_lists device PK, version                the version of a locker's code list
    locations         waybill PK, station, device, board, lock, purpose, since
                      where a parcel lies in a locker now
    processed_messages request PK, kind, handled_at, decision_id -> decisions
                      the exactly-once record of every event applied

No table holds personal data in clear: identities only encrypted, keyed-hashed or masked.
Derived state (is a parcel held? cleared? the day's coverage) is queried, not stored, so
it cannot disagree with the facts it comes from.

How versions are kept: ``define_v1`` builds the v1 tables on a given ``MetaData``.
Migration 1 runs it on a fresh ``MetaData`` and creates what it built, so later versions
never change what migration 1 creates. A later version adds ``define_v2(metadata)`` which
changes the tables in place (``append_column``, new tables) and a migration that issues the
matching DDL; :data:`METADATA` applies every ``define_vN`` in turn and is what queries use.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    TypeDecorator,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

NAMING = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Constraint names are given, not left to each database, so later migrations can name them."""


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so the value is stored as
    naive UTC text (which sorts in time order) and given back its UTC zone when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError("ledger timestamps must be aware (UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


Json = JSON().with_variant(JSONB(), "postgresql")
"""JSON documents (JSONB on PostgreSQL, text on SQLite)."""

WAYBILL = 40
IDENT = 64
MESSAGE_ID = 160


def _ts(name: str, *, nullable: bool = False) -> Column[Any]:
    return Column(name, UtcDateTime(), nullable=nullable)


def define_v1(metadata: MetaData) -> MetaData:
    """Build the version-1 tables on ``metadata`` and return it."""
    _registry_tables(metadata)
    _parcel_tables(metadata)
    _decision_tables(metadata)
    _locker_tables(metadata)
    return metadata


def _registry_tables(metadata: MetaData) -> None:
    Table(
        "stations",
        metadata,
        Column("id", String(IDENT), primary_key=True),
        Column("name", String(200), nullable=False),
        Column("division", String(12), nullable=False),
        Column("tier", String(16), nullable=False),
        Column("active", Boolean, nullable=False),
    )
    Table(
        "devices",
        metadata,
        Column("id", String(IDENT), primary_key=True),
        Column("station", String(IDENT), ForeignKey("stations.id"), nullable=False),
        Column("role", String(16), nullable=False),
        Column("exception_chute", Integer),
        Column("active", Boolean, nullable=False),
    )
    Table(
        "routes",
        metadata,
        Column("sorter", String(IDENT), ForeignKey("devices.id"), primary_key=True),
        Column("prefix", String(12), primary_key=True),
        Column("chute", Integer, nullable=False),
    )


def _parcel_tables(metadata: MetaData) -> None:
    Table(
        "parcels",
        metadata,
        Column("waybill", String(WAYBILL), primary_key=True),
        Column("station", String(IDENT), ForeignKey("stations.id"), nullable=False),
        Column("device", String(IDENT), ForeignKey("devices.id"), nullable=False),
        Column("destination", String(12), nullable=False),
        _ts("accepted_at"),
        Column("clerk", String(IDENT), nullable=False),
        Column("request", String(MESSAGE_ID), nullable=False),
        Index(None, "station", "accepted_at"),
    )
    Table(
        "realname_records",
        metadata,
        Column("waybill", String(WAYBILL), ForeignKey("parcels.waybill"), primary_key=True),
        Column("id_type", String(32), nullable=False),
        Column("key_id", String(IDENT), nullable=False),
        Column("nonce", LargeBinary, nullable=False),
        Column("ciphertext", LargeBinary, nullable=False),
        Column("lookup", String(128), nullable=False, index=True),
        Column("masked_number", String(IDENT), nullable=False),
        Column("masked_name", String(IDENT), nullable=False),
        Column("masked_phone", String(32)),
    )
    Table(
        "inspections",
        metadata,
        Column("waybill", String(WAYBILL), ForeignKey("parcels.waybill"), primary_key=True),
        Column("inspected", Boolean, nullable=False),
        Column("declared_contents", String(200), nullable=False),
        Column("refused_items", Json, nullable=False),
    )
    Table(
        "xray_verdicts",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("waybill", String(WAYBILL), nullable=False),
        Column("verdict", String(8), nullable=False),
        Column("operator", String(IDENT), nullable=False),
        Column("image", String(256), nullable=False),
        _ts("scanned_at"),
        Column("station", String(IDENT), ForeignKey("stations.id"), nullable=False),
        Column("device", String(IDENT), ForeignKey("devices.id"), nullable=False),
        Column("request", String(MESSAGE_ID), nullable=False),
        Index(None, "waybill", "scanned_at"),
    )
    holds = Table(
        "holds",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("waybill", String(WAYBILL), nullable=False, index=True),
        Column("reason", String(32), nullable=False),
        _ts("since"),
        _ts("released_at", nullable=True),
        Column("released_by", String(IDENT)),
    )
    _one_open_per(holds, "uq_holds_open_waybill", ["waybill"], "released_at IS NULL")


def _decision_tables(metadata: MetaData) -> None:
    Table(
        "alerts",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("station", String(IDENT), ForeignKey("stations.id"), nullable=False),
        Column("kind", String(32), nullable=False),
        Column("waybill", String(WAYBILL)),
        Column("severity", String(16), nullable=False),
        Column("details", Json, nullable=False),
        _ts("raised_at"),
        Column("state", String(16), nullable=False),
        Column("state_by", String(IDENT)),
        _ts("state_at", nullable=True),
        Index(None, "station", "raised_at"),
        Index(None, "state"),
    )
    Table(
        "decisions",
        metadata,
        Column("id", String(MESSAGE_ID + 10), primary_key=True),
        Column("station", String(IDENT), ForeignKey("stations.id"), nullable=False),
        Column("device", String(IDENT), ForeignKey("devices.id"), nullable=False),
        Column("request", String(MESSAGE_ID)),
        Column("waybill", String(WAYBILL), index=True),
        Column("kind", String(16), nullable=False),
        Column("outcome", String(32), nullable=False),
        Column("reason", String(32)),
        Column("facts", Json, nullable=False),
        Column("body", Json),
        _ts("decided_at"),
        Index(None, "station", "decided_at"),
    )
    inductions = Table(
        "inductions",
        metadata,
        Column("request", String(MESSAGE_ID), primary_key=True),
        Column("sorter", String(IDENT), ForeignKey("devices.id"), nullable=False),
        Column("waybill", String(WAYBILL)),
        Column("transaction_no", BigInteger, nullable=False),
        Column("chute", Integer, nullable=False),
        Column("routed", Boolean, nullable=False),
        _ts("inducted_at"),
        Index(None, "sorter", "waybill"),
    )
    _one_open_per(inductions, "uq_inductions_routed", ["sorter", "waybill"], "routed")
    Table(
        "processed_messages",
        metadata,
        Column("request", String(MESSAGE_ID), primary_key=True),
        Column("kind", String(32), nullable=False),
        _ts("handled_at"),
        Column("decision_id", String(MESSAGE_ID + 10), ForeignKey("decisions.id")),
    )


def _locker_tables(metadata: MetaData) -> None:
    Table(
        "pickup_codes",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("waybill", String(WAYBILL), nullable=False, index=True),
        Column("station", String(IDENT), ForeignKey("stations.id"), nullable=False),
        Column("device", String(IDENT), ForeignKey("devices.id"), nullable=False),
        Column("board", Integer, nullable=False),
        Column("lock", Integer, nullable=False),
        Column("salt", String(32), nullable=False),
        Column("code_hash", String(64), nullable=False),
        _ts("issued_at"),
        _ts("expires_at", nullable=True),
        _ts("used_at", nullable=True),
        Column("closed", String(16)),
        Index(None, "device", "used_at"),
    )
    Table(
        "locker_code_lists",
        metadata,
        Column("device", String(IDENT), ForeignKey("devices.id"), primary_key=True),
        Column("version", Integer, nullable=False),
    )
    Table(
        "locations",
        metadata,
        Column("waybill", String(WAYBILL), primary_key=True),
        Column("station", String(IDENT), ForeignKey("stations.id"), nullable=False),
        Column("device", String(IDENT), ForeignKey("devices.id"), nullable=False),
        Column("board", Integer, nullable=False),
        Column("lock", Integer, nullable=False),
        Column("purpose", String(16), nullable=False),
        _ts("since"),
    )


def _one_open_per(table: Table, name: str, columns: list[str], where: str) -> None:
    """A partial unique index: at most one row per ``columns`` among rows where ``where``.

    It turns a race between two gateway processes (two holds, two routed inductions) into
    a unique-key conflict, which the losing transaction retries.
    """
    condition = text(where)
    Index(
        name,
        *(table.c[column] for column in columns),
        unique=True,
        sqlite_where=condition,
        postgresql_where=condition,
    )


INDUCTIONS_BY_TRANSACTION = "ix_inductions_sorter_transaction_no"


def add_v2(metadata: MetaData) -> MetaData:
    """Version 2 on top of :func:`define_v1`: inductions found by sorter and PLC
    transaction number, which is all a divert confirmation names."""
    inductions = metadata.tables["inductions"]
    Index(INDUCTIONS_BY_TRANSACTION, inductions.c.sorter, inductions.c.transaction_no)
    return metadata


def add_v3(metadata: MetaData) -> MetaData:
    """Version 3 on top of :func:`add_v2`: the cold-chain engine.

    ``alerts`` gains what an alert's lifecycle needs beyond the security holds of v1:
    its subject (a probe ``device/probe`` or a door ``device/board/lock``), the device,
    who acknowledged and resolved it and when, and when it escalated. New tables::

        coldchain_probes  (station, device, probe) PK, profile, low_c, high_c (custom
                          limits), profile_set_at, state JSON (the state machine),
                          reported_day (the last local day whose metrics are written)
        coldchain_doors   (station, device, board, lock) PK, state JSON
        coldchain_stays   id PK, station, device (locker), board, lock, waybill,
                          probe_device, probe, since, until, reported_at
                          a parcel's time in a cold compartment
    """
    alerts = metadata.tables["alerts"]
    for column in v3_alert_columns():
        alerts.append_column(column)
    Table(
        "coldchain_probes",
        metadata,
        Column("station", String(IDENT), primary_key=True),
        Column("device", String(IDENT), primary_key=True),
        Column("probe", String(IDENT), primary_key=True),
        Column("profile", String(32)),
        Column("low_c", Float),
        Column("high_c", Float),
        _ts("profile_set_at", nullable=True),
        Column("state", Json, nullable=False),
        Column("reported_day", String(10)),
    )
    Table(
        "coldchain_doors",
        metadata,
        Column("station", String(IDENT), primary_key=True),
        Column("device", String(IDENT), primary_key=True),
        Column("board", Integer, primary_key=True, autoincrement=False),
        Column("lock", Integer, primary_key=True, autoincrement=False),
        Column("state", Json, nullable=False),
    )
    Table(
        "coldchain_stays",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("station", String(IDENT), nullable=False),
        Column("device", String(IDENT), nullable=False),
        Column("board", Integer, nullable=False),
        Column("lock", Integer, nullable=False),
        Column("waybill", String(WAYBILL), nullable=False, index=True),
        Column("probe_device", String(IDENT), nullable=False),
        Column("probe", String(IDENT), nullable=False),
        _ts("since"),
        _ts("until", nullable=True),
        _ts("reported_at", nullable=True),
        Index(None, "device", "board", "lock", "until"),
    )
    return metadata


def v3_alert_columns() -> list[Column[Any]]:
    """The columns v3 adds to ``alerts``: new objects on every call (a Column belongs
    to one table)."""
    return [
        Column("subject", String(128)),
        Column("device", String(IDENT)),
        Column("acknowledged_by", String(IDENT)),
        _ts("acknowledged_at", nullable=True),
        Column("resolved_by", String(IDENT)),
        _ts("resolved_at", nullable=True),
        _ts("escalated_at", nullable=True),
    ]


V3_TABLES = ("coldchain_probes", "coldchain_doors", "coldchain_stays")


def add_v4(metadata: MetaData) -> MetaData:
    """Version 4 on top of :func:`add_v3`: the supervisor API's users and audit trail::

    api_users   name PK, password_hash (scrypt, salted), role (supervisor|operator|
                auditor|admin), scopes JSON (["*"], "station:ID", "division:PREFIX"),
                active, created_at
    api_tokens  id PK, token_hash (SHA-256 of a random token, unique), user ->
                api_users, kind (session|api), label, created_at, expires_at,
                revoked_at, last_used_at            the token itself is never stored
    api_audit   id PK, at, user, action, station, target, details JSON
                commands sent, real-name records revealed, alerts acted on, users
                and tokens changed; no personal data in clear
    """
    Table(
        "api_users",
        metadata,
        Column("name", String(IDENT), primary_key=True),
        Column("password_hash", String(200), nullable=False),
        Column("role", String(16), nullable=False),
        Column("scopes", Json, nullable=False),
        Column("active", Boolean, nullable=False),
        _ts("created_at"),
    )
    Table(
        "api_tokens",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("token_hash", String(64), nullable=False, unique=True),
        Column("user", String(IDENT), ForeignKey("api_users.name"), nullable=False),
        Column("kind", String(16), nullable=False),
        Column("label", String(200), nullable=False),
        _ts("created_at"),
        _ts("expires_at", nullable=True),
        _ts("revoked_at", nullable=True),
        _ts("last_used_at", nullable=True),
    )
    Table(
        "api_audit",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        _ts("at"),
        Column("user", String(IDENT), nullable=False),
        Column("action", String(32), nullable=False),
        Column("station", String(IDENT)),
        Column("target", String(200), nullable=False),
        Column("details", Json, nullable=False),
        Index(None, "at"),
    )
    return metadata


V4_TABLES = ("api_users", "api_tokens", "api_audit")


def add_v5(metadata: MetaData) -> MetaData:
    """Version 5 on top of :func:`add_v4`: telemetry points committed with the ledger
    change they record, until the telemetry store has them::

    store_outbox  id PK, created_at, point JSON (measurement, tags, fields, time_ns)
                  the cold-chain engine's alert changes; deleted once stored
    """
    Table(
        "store_outbox",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        _ts("created_at"),
        Column("point", Json, nullable=False),
    )
    return metadata


V5_TABLES = ("store_outbox",)


def add_v6(metadata: MetaData) -> MetaData:
    """Version 6 on top of :func:`add_v5`: who runs a one-per-ledger engine::

    leases  name PK (e.g. ``coldchain``), holder (the session's client id), renewed_at,
            expires_at     taken at start, renewed while running, freed at stop
    """
    Table(
        "leases",
        metadata,
        Column("name", String(IDENT), primary_key=True),
        Column("holder", String(200), nullable=False),
        _ts("renewed_at"),
        _ts("expires_at"),
    )
    return metadata


V6_TABLES = ("leases",)


def latest(metadata: MetaData) -> MetaData:
    """Every version's tables on ``metadata``."""
    return add_v6(add_v5(add_v4(add_v3(add_v2(define_v1(metadata))))))


METADATA = latest(MetaData(naming_convention=NAMING))
"""The tables as of the latest version: what the repository's queries use."""

_T = METADATA.tables
stations = _T["stations"]
devices = _T["devices"]
routes = _T["routes"]
parcels = _T["parcels"]
realname_records = _T["realname_records"]
inspections = _T["inspections"]
xray_verdicts = _T["xray_verdicts"]
holds = _T["holds"]
alerts = _T["alerts"]
decisions = _T["decisions"]
inductions = _T["inductions"]
processed_messages = _T["processed_messages"]
pickup_codes = _T["pickup_codes"]
locker_code_lists = _T["locker_code_lists"]
locations = _T["locations"]
coldchain_probes = _T["coldchain_probes"]
coldchain_doors = _T["coldchain_doors"]
coldchain_stays = _T["coldchain_stays"]
api_users = _T["api_users"]
api_tokens = _T["api_tokens"]
api_audit = _T["api_audit"]
store_outbox = _T["store_outbox"]
leases = _T["leases"]
