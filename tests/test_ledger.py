"""The ledger database on SQLite and PostgreSQL: migrations, locking, errors, registry
sync and coverage. Every test that takes ``ledger_url`` runs on both backends."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine, inspect, select, text

from gateway.errors import GatewayError
from gateway.ledger import (
    MIGRATIONS,
    Lease,
    Ledger,
    LedgerConflict,
    LedgerError,
    LedgerUnavailable,
    Migration,
)
from gateway.ledger import schema as t
from gateway.ledger.schema import INDUCTIONS_BY_TRANSACTION
from gateway.registry import DeviceEntry, Registry, Routing, StationEntry
from postedge.localservers import free_port
from tests.helpers import wait_until
from tests.pg import PostgresServer

TABLES = {
    "schema_migrations", "stations", "devices", "routes", "parcels", "realname_records",
    "inspections", "xray_verdicts", "holds", "alerts", "decisions", "inductions",
    "processed_messages", "pickup_codes", "locker_code_lists", "locations",
    "coldchain_probes", "coldchain_doors", "coldchain_stays",
    "api_users", "api_tokens", "api_audit", "store_outbox", "leases",
}  # fmt: skip

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def registry(*, with_locker: bool = True, routes: dict[str, int] | None = None) -> Registry:
    devices = [
        DeviceEntry(id="counter-1", station="county-1", role="counter"),
        DeviceEntry(
            id="sorter-1",
            station="county-1",
            role="sorter",
            routing=Routing(exception_chute=99, routes=routes or {"41": 3, "4105": 1}),
        ),
    ]
    if with_locker:
        devices.append(DeviceEntry(id="locker-1", station="town-1", role="locker"))
    return Registry(
        stations=[
            StationEntry(id="county-1", name="County", division="410523000000", tier="county"),
            StationEntry(id="town-1", name="Town", division="410523100000", tier="township"),
        ],
        devices=devices,
    )


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    with Ledger(ledger_url) as opened:
        opened.sync_registry(registry())
        yield opened


def _table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _index_names(url: str, table: str) -> set[str]:
    engine = create_engine(url)
    try:
        return {str(index["name"]) for index in inspect(engine).get_indexes(table)}
    finally:
        engine.dispose()


def _add_parcel(conn: Connection, waybill: str, *, station: str = "county-1",
                at: datetime = T0) -> None:  # fmt: skip
    conn.execute(
        t.parcels.insert().values(
            waybill=waybill, station=station, device="counter-1", destination="410523100000",
            accepted_at=at, clerk="clerk-1", request=f"counter-1:1:{waybill}",
        )
    )  # fmt: skip


# -- migrations ------------------------------------------------------------------------


def test_open_migrates_an_empty_database_to_the_latest_version(ledger_url: str) -> None:
    with Ledger(ledger_url) as ledger:
        versions = ledger.schema_versions()
    assert [version for version, _ in versions] == list(range(1, len(MIGRATIONS) + 1))
    assert _table_names(ledger_url) == TABLES


def test_reopening_applies_nothing_and_keeps_the_data(ledger_url: str) -> None:
    with Ledger(ledger_url) as ledger:
        ledger.sync_registry(registry())
        with ledger.transaction() as tx:
            _add_parcel(tx.connection, "WB0001")
    with Ledger(ledger_url) as again:
        assert again.schema_versions() == [
            (version, migration.description) for version, migration in enumerate(MIGRATIONS, 1)
        ]
        with again.transaction(write=False) as tx:
            assert tx.parcel("WB0001") is not None


def test_a_version_1_database_gains_the_transaction_index_and_keeps_its_data(
    ledger_url: str,
) -> None:
    with Ledger(ledger_url, migrations=MIGRATIONS[:1]) as ledger:
        ledger.sync_registry(registry())
        with ledger.transaction() as tx:
            _add_parcel(tx.connection, "WB0001")
    assert INDUCTIONS_BY_TRANSACTION not in _index_names(ledger_url, "inductions")
    with Ledger(ledger_url) as ledger:
        assert [v for v, _ in ledger.schema_versions()] == list(range(1, len(MIGRATIONS) + 1))
        with ledger.transaction(write=False) as tx:
            assert tx.parcel("WB0001") is not None
    assert INDUCTIONS_BY_TRANSACTION in _index_names(ledger_url, "inductions")


def test_a_version_2_database_gains_the_cold_chain_and_keeps_its_alerts(ledger_url: str) -> None:
    """Migration 3 adds columns to ``alerts`` in place: an X-ray alert raised under v2 is
    still there, and its lifecycle can now be recorded."""
    with Ledger(ledger_url, migrations=MIGRATIONS[:2]) as ledger:
        ledger.sync_registry(registry())
        with ledger.transaction() as tx:
            tx.connection.execute(
                text(
                    "INSERT INTO alerts (station, kind, waybill, severity, details, raised_at, "
                    "state) VALUES ('county-1', 'xray_hold', 'WB0001', 'warning', '{}', "
                    ":at, 'open')"
                ),
                {"at": T0.replace(tzinfo=None)},
            )
    with Ledger(ledger_url) as ledger:
        assert len(ledger.schema_versions()) == len(MIGRATIONS)
        with ledger.transaction() as tx:
            [alert] = tx.alerts()
            assert (alert.kind, alert.waybill, alert.subject) == ("xray_hold", "WB0001", None)
            assert tx.acknowledge_alert(alert.id, by="qa-1", at=T0)
            assert not tx.acknowledge_alert(alert.id, by="qa-2", at=T0)
            assert tx.resolve_alert(alert.id, by="qa-1", at=T0)
            row = tx.alert(alert.id)
        assert row is not None
        assert (row.state, row.acknowledged_by, row.resolved_by) == ("resolved", "qa-1", "qa-1")
        assert row.resolved_at == T0
    assert {"coldchain_probes", "coldchain_stays"} <= _table_names(ledger_url)


def test_a_database_newer_than_the_code_is_refused(ledger_url: str) -> None:
    def add_notes(connection: Connection) -> None:
        connection.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY)"))

    newer = (*MIGRATIONS, Migration("notes", add_notes))
    latest = len(MIGRATIONS)
    with Ledger(ledger_url, migrations=newer) as ledger:
        assert [v for v, _ in ledger.schema_versions()] == list(range(1, latest + 2))
    message = rf"schema version {latest + 1} is newer than this gateway \({latest}\)"
    with pytest.raises(LedgerError, match=message):
        Ledger(ledger_url).open()


def test_migrations_apply_in_order_one_transaction_each(ledger_url: str) -> None:
    """A failing migration leaves the database at the version before it, intact."""

    def broken(connection: Connection) -> None:
        connection.execute(text("CREATE TABLE half_done (id INTEGER PRIMARY KEY)"))
        raise RuntimeError("migration bug")

    with pytest.raises(RuntimeError, match="migration bug"):
        Ledger(ledger_url, migrations=(*MIGRATIONS, Migration("broken", broken))).open()
    assert "half_done" not in _table_names(ledger_url)
    with Ledger(ledger_url) as ledger:
        assert [v for v, _ in ledger.schema_versions()] == list(range(1, len(MIGRATIONS) + 1))


def test_two_processes_opening_at_once_migrate_once(ledger_url: str) -> None:
    """While one opener runs a migration, the other waits for the lock and then finds the
    work done: the migration runs exactly once and both openers succeed."""
    entered, proceed = threading.Event(), threading.Event()
    runs: list[str] = []

    def slow(connection: Connection) -> None:
        runs.append(threading.current_thread().name)
        entered.set()
        assert proceed.wait(10)
        connection.execute(text("CREATE TABLE slow_done (id INTEGER PRIMARY KEY)"))

    migrations = (*MIGRATIONS, Migration("slow", slow))
    errors: list[BaseException] = []
    opened: list[Ledger] = []

    def open_one() -> None:
        ledger = Ledger(ledger_url, migrations=migrations)
        try:
            ledger.open()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        opened.append(ledger)

    first = threading.Thread(target=open_one, name="first")
    first.start()
    assert entered.wait(10), "the first opener never reached the migration"
    second = threading.Thread(target=open_one, name="second")
    second.start()
    _wait_for_migration_lock_waiter(ledger_url)
    proceed.set()
    first.join(10)
    second.join(10)
    for ledger in opened:
        ledger.close()
    assert errors == []
    assert runs == ["first"]
    with Ledger(ledger_url, migrations=migrations) as ledger:
        assert [v for v, _ in ledger.schema_versions()] == list(range(1, len(migrations) + 1))


def _wait_for_migration_lock_waiter(url: str) -> None:
    """Prove the lock is held while migrating. PostgreSQL shows the second opener waiting
    for the advisory lock; SQLite shows the write lock taken (a probe cannot begin)."""
    if url.startswith("sqlite"):
        probe = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                probe.execute("BEGIN IMMEDIATE")
        finally:
            probe.close()
        return
    engine = create_engine(url)

    def waiting() -> bool:
        with engine.connect() as conn:
            query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            return bool(conn.execute(text(query)).scalar_one())

    try:
        wait_until(waiting, 10, "the second opener waiting for the migration lock")
    finally:
        engine.dispose()


# -- connections and errors ------------------------------------------------------------


def test_sqlite_connections_are_durable_and_check_foreign_keys(tmp_path: Path) -> None:
    with Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}", busy_timeout_s=3) as ledger:
        with ledger.transaction() as tx:
            pragmas = {
                name: tx.connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
        assert pragmas == {
            "journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 3000,
        }  # fmt: skip
        with pytest.raises(LedgerError, match="FOREIGN KEY"), ledger.transaction() as tx:
            _add_parcel(tx.connection, "WB0001", station="nowhere")


def test_a_unique_key_taken_is_a_conflict_not_a_driver_error(ledger: Ledger) -> None:
    with ledger.transaction() as tx:
        _add_parcel(tx.connection, "WB0001")
    with pytest.raises(LedgerConflict) as caught, ledger.transaction() as tx:
        _add_parcel(tx.connection, "WB0001")
    assert isinstance(caught.value, GatewayError)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_at_most_one_open_hold_and_one_routed_induction(ledger: Ledger) -> None:
    """The partial unique indexes that turn races between gateways into conflicts."""
    with ledger.transaction() as tx:
        hold = tx.add_hold("WB0001", "xray_suspect", T0)
    with pytest.raises(LedgerConflict), ledger.transaction() as tx:
        tx.add_hold("WB0001", "xray_fail", T0)
    with ledger.transaction() as tx:
        assert tx.release_hold(hold, by="supervisor", at=T0)
        assert not tx.release_hold(hold, by="supervisor", at=T0)
        tx.add_hold("WB0001", "xray_fail", T0)  # a new hold after the release
    induction = {"sorter": "sorter-1", "waybill": "WB0001", "transaction_no": 1, "chute": 3,
                 "inducted_at": T0}  # fmt: skip
    with ledger.transaction() as tx:
        tx.add_induction(request="sorter-1:1:1", routed=False, **induction)
        tx.add_induction(request="sorter-1:1:2", routed=False, **induction)
        tx.add_induction(request="sorter-1:1:3", routed=True, **induction)
    with pytest.raises(LedgerConflict), ledger.transaction() as tx:
        tx.add_induction(request="sorter-1:1:4", routed=True, **induction)


def test_a_failing_block_rolls_back(ledger: Ledger) -> None:
    def fail_midway() -> None:
        with ledger.transaction() as tx:
            _add_parcel(tx.connection, "WB0001")
            raise KeyError("caller bug")

    with pytest.raises(KeyError):
        fail_midway()
    with ledger.transaction(write=False) as tx:
        assert tx.parcel("WB0001") is None


def test_a_database_locked_too_long_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger(f"sqlite:///{path}", busy_timeout_s=0.05) as ledger:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(LedgerUnavailable, match="locked"), ledger.transaction():
                pass
        finally:
            holder.rollback()
            holder.close()
        with ledger.transaction():
            pass  # usable again once the lock is gone


def test_an_unreachable_postgresql_is_unavailable() -> None:
    ledger = Ledger(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x", connect_timeout_s=2)
    with pytest.raises(LedgerUnavailable, match=r"127\.0\.0\.1"):
        ledger.open()


def test_connections_the_server_killed_are_replaced(postgres: PostgresServer) -> None:
    url = postgres.create_database()
    database = url.rsplit("/", 1)[1]
    with Ledger(url) as ledger:
        ledger.sync_registry(registry())
        with postgres.connect() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )
        # pool_pre_ping notices the dead connections and opens new ones.
        with ledger.transaction(write=False) as tx:
            assert tx.sorter_routing("sorter-1") is not None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "not a database URL"),
        ("mysql://u@h/db", "use sqlite:///path or postgresql"),
        ("sqlite://", "must name a SQLite file"),
        ("postgresql://u:secret@h/db", None),
    ],
)
def test_urls_are_checked_without_connecting(url: str, message: str | None) -> None:
    if message is None:
        ledger = Ledger(url)
        assert ledger.backend == "postgresql"
        assert "secret" not in ledger.where
        with pytest.raises(LedgerError, match="not open"), ledger.transaction():
            pass
    else:
        with pytest.raises(LedgerError, match=message):
            Ledger(url)


# -- registry sync ---------------------------------------------------------------------


def test_sync_registry_upserts_and_deactivates_instead_of_deleting(ledger: Ledger) -> None:
    ledger.sync_registry(registry(with_locker=False, routes={"41": 5, "410523": 6}))
    with ledger.transaction(write=False) as tx:
        conn = tx.connection
        devices = {row.id: row.active for row in conn.execute(select(t.devices))}
        routing = tx.sorter_routing("sorter-1")
    assert devices == {"counter-1": True, "sorter-1": True, "locker-1": False}
    assert routing is not None
    assert (routing.exception_chute, routing.routes) == (99, {"41": 5, "410523": 6})
    ledger.sync_registry(registry())
    with ledger.transaction(write=False) as tx:
        devices = {row.id: row.active for row in tx.connection.execute(select(t.devices))}
        routing = tx.sorter_routing("sorter-1")
    assert all(devices.values())
    assert len(devices) == 3
    assert routing is not None
    assert routing.routes == {"41": 3, "4105": 1}


def test_concurrent_registry_syncs_do_not_conflict(ledger_url: str) -> None:
    ledgers = [Ledger(ledger_url), Ledger(ledger_url)]
    for each in ledgers:
        each.open()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def sync(each: Ledger) -> None:
        barrier.wait(10)
        try:
            for _ in range(5):
                each.sync_registry(registry())
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=sync, args=(each,)) for each in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for each in ledgers:
        each.close()
    assert errors == []


# -- coverage --------------------------------------------------------------------------


def test_coverage_counts_one_station_and_one_day(ledger: Ledger) -> None:
    with ledger.transaction() as tx:
        conn = tx.connection
        for index, (station, at, realname, inspected) in enumerate(
            [
                ("county-1", T0, True, True),
                ("county-1", T0 + timedelta(hours=1), True, False),
                ("county-1", T0 + timedelta(hours=2), False, None),
                ("county-1", T0 - timedelta(days=1), True, True),  # the day before
                ("town-1", T0, True, True),  # another station
            ]
        ):
            waybill = f"WB{index:04d}"
            _add_parcel(conn, waybill, station=station, at=at)
            if realname:
                conn.execute(
                    t.realname_records.insert().values(
                        waybill=waybill, id_type="resident", key_id="k1", nonce=b"n" * 12,
                        ciphertext=b"c", lookup="0" * 64, masked_number="1101**********002X",
                        masked_name="张*",
                    )
                )  # fmt: skip
            if inspected is not None:
                conn.execute(
                    t.inspections.insert().values(
                        waybill=waybill, inspected=inspected, declared_contents="books",
                        refused_items=[],
                    )
                )  # fmt: skip
    day = T0.date()
    coverage = ledger.coverage("county-1", day)
    assert (coverage.accepted, coverage.with_realname, coverage.inspected) == (3, 2, 1)
    assert ledger.coverage("county-1", date(2026, 1, 1)).accepted == 0
    # A Beijing day runs from 16:00 UTC the day before: the parcel of the 24th 08:00 UTC
    # is on the Beijing 24th, the three of the 25th on the Beijing 25th.
    beijing = timezone(timedelta(hours=8))
    assert ledger.coverage("county-1", date(2026, 11, 24), beijing).accepted == 1
    assert ledger.coverage("county-1", date(2026, 11, 25), beijing).accepted == 3


# -- leases --------------------------------------------------------------------------------


def test_a_lease_is_held_renewed_refused_to_others_and_taken_over_once_it_runs_out(
    ledger: Ledger,
) -> None:
    ttl = timedelta(seconds=60)
    with ledger.transaction() as tx:
        assert tx.take_lease("coldchain", "host-a", T0, ttl) is None
    with ledger.transaction() as tx:
        other = tx.take_lease("coldchain", "host-b", T0 + timedelta(seconds=30), ttl)
    assert other == Lease("host-a", T0 + ttl)
    with ledger.transaction() as tx:  # host-a renews: host-b still waits past T0 + ttl
        assert tx.take_lease("coldchain", "host-a", T0 + timedelta(seconds=40), ttl) is None
        refused = tx.take_lease("coldchain", "host-b", T0 + timedelta(seconds=70), ttl)
    assert refused is not None
    assert refused.holder == "host-a"
    later = T0 + timedelta(seconds=101)  # host-a's renewal ran out at T0 + 100 s
    with ledger.transaction() as tx:
        assert tx.take_lease("coldchain", "host-b", later, ttl) is None
        assert tx.take_lease("coldchain", "host-a", later, ttl) == Lease("host-b", later + ttl)
        assert tx.take_lease("other-engine", "host-a", later, ttl) is None  # leases are named


def test_only_the_holder_gives_a_lease_up(ledger: Ledger) -> None:
    ttl = timedelta(seconds=60)
    with ledger.transaction() as tx:
        tx.take_lease("coldchain", "host-a", T0, ttl)
        tx.release_lease("coldchain", "host-b")
        assert tx.take_lease("coldchain", "host-b", T0, ttl) is not None
        tx.release_lease("coldchain", "host-a")
        assert tx.take_lease("coldchain", "host-b", T0, ttl) is None
