"""The SQLite telemetry store beyond the shared contract: tables, threads, processes, locks."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from gateway.telemetry import (
    SeriesValue,
    StoreError,
    StoreRejected,
    StoreUnavailable,
    TelemetryStore,
)
from gateway.telemetry.sqlite import SqliteTelemetryStore
from tests.test_telemetry_store import S1, T0, pt, sqlite

# --- SQLite ------------------------------------------------------------------------------


def test_sqlite_tables_are_as_documented_and_data_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    with sqlite(path) as store:
        store.write([pt(T0, S1, celsius=4.5, seq=1)])
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT measurement, tags FROM series").fetchall() == [
            ("temperature", '{"device":"d1","probe":"p1","station":"s1"}')
        ]
        assert conn.execute("SELECT time_ns, fields FROM points").fetchall() == [
            (T0, '{"celsius":4.5,"seq":1}')
        ]
    conn.close()
    with sqlite(path) as again:
        assert again.query_series("temperature", "celsius", S1) == [SeriesValue(T0, 4.5)]
        with pytest.raises(StoreRejected, match="field type conflict"):  # rules persist too
            again.write([pt(T0, celsius="x")])


def test_sqlite_from_several_threads_at_once(tmp_path: Path) -> None:
    """Two writers and two readers start together on one store object."""
    start = threading.Barrier(4)

    def write(store: TelemetryStore, probe: str) -> None:
        start.wait(timeout=10)
        for b in range(30):
            store.write([pt(T0 + b * 10 + i, {**S1, "probe": probe}, seq=i) for i in range(10)])

    def read(store: TelemetryStore) -> None:
        start.wait(timeout=10)
        for _ in range(30):
            store.query_series("temperature", "seq", {"station": "s1"})
            store.series("temperature")

    with sqlite(tmp_path / "t.sqlite") as store, ThreadPoolExecutor(4) as pool:
        jobs = [pool.submit(write, store, "a"), pool.submit(write, store, "b")]
        jobs += [pool.submit(read, store), pool.submit(read, store)]
        for job in jobs:
            job.result(timeout=30)
        assert len(store.query_series("temperature", "seq", {"station": "s1"})) == 600


def _write_from_process(path: str, probe: str, start: Any) -> None:
    """A gateway worker in another process, writing to the same file."""
    store = SqliteTelemetryStore(Path(path))
    store.open()
    start.wait(10)
    tags = {**S1, "probe": probe}
    for batch in range(20):
        store.write([pt(T0 + batch * 50 + i, tags, seq=i) for i in range(50)])
    store.close()


def test_sqlite_from_two_processes_at_once(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    workers = [
        context.Process(target=_write_from_process, args=(str(path), p, start)) for p in "ab"
    ]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
        worker.close()
    with sqlite(path) as store:
        for probe in "ab":
            assert len(store.query_series("temperature", "seq", {"probe": probe})) == 1000


def test_sqlite_locked_by_another_writer_is_unavailable_then_works(tmp_path: Path) -> None:
    with sqlite(tmp_path / "t.sqlite", busy_timeout_s=0.05) as store:
        blocker = sqlite3.connect(store.path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable, match="locked"):
            store.write([pt(T0, celsius=1.0)])
        blocker.execute("ROLLBACK")
        blocker.close()
        store.write([pt(T0, celsius=1.0)])
        assert len(store.query_series("temperature", "celsius", S1)) == 1


def test_sqlite_bad_paths_are_store_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unable to open"):
        SqliteTelemetryStore(tmp_path / "missing" / "t.sqlite").open()
    (tmp_path / "junk.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="not a database"):
        SqliteTelemetryStore(tmp_path / "junk.sqlite").open()


def _open_fresh_files_in_step(paths: list[str], barrier: Any) -> None:
    for path in paths:
        barrier.wait(10)
        store = SqliteTelemetryStore(Path(path))
        store.open()  # races the other process creating the same new file
        store.write([pt(T0, seq=1)])
        store.close()


def test_two_processes_creating_the_same_new_file_both_succeed(tmp_path: Path) -> None:
    """Gateway workers start together on a new file: WAL switch and schema race."""
    paths = [str(tmp_path / f"t{round_}.sqlite") for round_ in range(60)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [
        context.Process(target=_open_fresh_files_in_step, args=(paths, barrier)) for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
        worker.close()
