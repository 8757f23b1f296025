"""Receipts and deduplication against a real Mosquitto and real stores.

A receipt tells the edge it may delete a message from its outbox, so it must come only
after the durable write, name exactly the accepted messages, and name its worker.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from contracts import (
    AnyBody,
    CommandResultBody,
    DeviceTopic,
    DoorBody,
    HealthBody,
    ScanBody,
    StatusBody,
    TemperatureBody,
    XrayBody,
    encode,
    make_envelope,
)
from contracts.receipts import MAX_RECEIPT_BYTES, Receipt, decode_receipt
from gateway import ingest
from gateway.convert import (
    AGENT_HEALTH,
    COMMAND_RESULT,
    DEVICE_STATUS,
    EVENT,
    TEMPERATURE,
    UnsupportedKind,
)
from gateway.dedup import RecentIds
from gateway.ingest import encoded_receipts
from gateway.service import GatewayWorker
from gateway.telemetry import InfluxStoreConfig, TelemetryPoint, TelemetryStore, open_store
from gateway.telemetry.config import SqliteStoreConfig
from postedge.localservers import Influxd, Mosquitto
from tests.conftest import OBSERVER_PASSWORD, OBSERVER_USER, device_password
from tests.helpers import Observer, Publisher, Seen, gateway_worker, wait_until

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
RECEIPTS = "postedge/v1/+/+/receipt"
DEV1_RECEIPTS = "postedge/v1/st1/dev1/receipt"


def message(
    seq: int, body: AnyBody, *, device: str = "dev1", station: str = "st1", topic_device: str = ""
) -> tuple[str, bytes]:
    """(topic, payload) of one envelope, on its channel of station ``st1`` and device
    ``topic_device`` (default: the envelope's device), so tests can send it elsewhere."""
    envelope = make_envelope(
        station=station,
        device=device,
        boot=1,
        seq=seq,
        ts=T0 + timedelta(seconds=seq),
        body=body,
    )
    topic = DeviceTopic("st1", topic_device or device, envelope.message_channel)
    return str(topic), encode(envelope)


def reading(seq: int, celsius: float = 4.0) -> tuple[str, bytes]:
    return message(seq, TemperatureBody(probe="p1", celsius=celsius))


def stored_seqs(path: Path, device: str) -> set[int]:
    """The seqs of every point of ``device`` in a SQLite store file, read raw."""
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
        rows = conn.execute(
            "SELECT json_extract(p.fields, '$.seq') FROM points AS p "
            "JOIN series AS s ON s.id = p.series_id WHERE json_extract(s.tags, '$.device') = ?",
            (device,),
        ).fetchall()
    return {seq for (seq,) in rows}


def covered(receipt: Receipt) -> set[int]:
    return {seq for first, last in receipt.ranges for seq in range(first, last + 1)}


class ReceiptWatcher(Observer):
    """Records receipts; given ``stored`` (device -> seqs in the store), also which of the
    seqs a receipt names were not in the store at the moment it arrived."""

    def __init__(self, broker: Mosquitto, stored: Callable[[str], set[int]] | None = None) -> None:
        self.stored = stored
        self.missing_on_arrival: list[set[int]] = []
        super().__init__(broker, OBSERVER_USER, OBSERVER_PASSWORD, RECEIPTS)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if self.stored is not None:
            receipt = decode_receipt(msg.payload)
            self.missing_on_arrival.append(covered(receipt) - self.stored(receipt.device))
        super()._on_message(client, userdata, msg)

    def receipts(self, seen: list[Seen] | None = None) -> list[Receipt]:
        return [decode_receipt(m.payload) for m in (self.messages if seen is None else seen)]

    def wait_covering(self, seqs: set[int], timeout: float = 10.0) -> list[Receipt]:
        def done(seen: list[Seen]) -> bool:
            return seqs <= set().union(*(covered(r) for r in self.receipts(seen)))

        return self.receipts(self.wait_for(done, timeout))


@pytest.fixture
def store_config(tmp_path: Path) -> SqliteStoreConfig:
    return SqliteStoreConfig(kind="sqlite", path=tmp_path / "telemetry.sqlite")


@pytest.fixture
def reader(store_config: SqliteStoreConfig) -> Iterator[TelemetryStore]:
    store = open_store(store_config)
    store.open()
    yield store
    store.close()


@contextlib.contextmanager
def running(worker: GatewayWorker) -> Iterator[GatewayWorker]:
    worker.start()
    try:
        assert worker.consumer.wait_ready(10)
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def worker(mosquitto: Mosquitto, store_config: SqliteStoreConfig) -> Iterator[GatewayWorker]:
    with running(gateway_worker(mosquitto, store_config, client_id="gw-r1")) as gateway:
        yield gateway


@pytest.fixture
def dev1(mosquitto: Mosquitto) -> Iterator[Publisher]:
    publisher = Publisher(mosquitto, "dev1", device_password("dev1"))
    yield publisher
    publisher.close()


@pytest.fixture
def watcher(mosquitto: Mosquitto, store_config: SqliteStoreConfig) -> Iterator[ReceiptWatcher]:
    observer = ReceiptWatcher(mosquitto, functools.partial(stored_seqs, store_config.path))
    yield observer
    observer.close()


def publish(publisher: Publisher, *messages: tuple[str, bytes]) -> None:
    for topic, payload in messages:
        publisher.publish(topic, payload)


BODIES: list[AnyBody] = [
    TemperatureBody(probe="p1", celsius=3.5),
    ScanBody(reader="scanner-1", code="SF1234567890123", symbology="code128"),
    DoorBody(board=1, lock=3, door="open", cause="command"),
    HealthBody(
        uptime_s=60.0,
        cpu_percent=1.0,
        rss_bytes=1,
        disk_free_bytes=2,
        outbox_depth=0,
        outbox_bytes=0,
        thinned=0,
        links={"bus": "up"},
    ),
    CommandResultBody(command_id="c-1", command="open_slot", ok=True),
    XrayBody(waybill="SF1234567890", verdict="PASS", operator="op", image="i.jpg", scanned_at=T0),
    StatusBody(state="online", boot=1, version="test"),
]


def test_every_kind_is_stored_and_receipted_only_once_it_is_in_the_store(
    worker: GatewayWorker, dev1: Publisher, watcher: ReceiptWatcher, reader: TelemetryStore
) -> None:
    seqs = set(range(1, 71))
    publish(dev1, *(message(seq, BODIES[seq % len(BODIES)]) for seq in sorted(seqs)))
    receipts = watcher.wait_covering(seqs)
    assert set().union(*(covered(r) for r in receipts)) == seqs  # exactly these
    assert all(not missing for missing in watcher.missing_on_arrival), watcher.missing_on_arrival
    assert {m.topic for m in watcher.messages} == {DEV1_RECEIPTS}
    assert {(r.device, r.by) for r in receipts} == {("dev1", "gw-r1")}
    assert all(not m.retain for m in watcher.messages)
    stats = worker.ingestor.stats
    assert (stats.stored, stats.receipts, stats.receipted) == (70, len(receipts), 70)
    assert f"receipts {len(receipts)} naming 70 messages" in stats.summary()
    tags = {"station": "st1", "device": "dev1"}
    for measurement, extra, count in [
        (TEMPERATURE, {"probe": "p1"}, 10),
        (EVENT, {"kind": "scan"}, 10),
        (EVENT, {"kind": "door"}, 10),
        (EVENT, {"kind": "xray"}, 10),
        (AGENT_HEALTH, {}, 10),
        (COMMAND_RESULT, {}, 10),
        (DEVICE_STATUS, {}, 10),
    ]:
        values = reader.query_series(measurement, "seq", {**tags, **extra})
        assert len(values) == count, measurement


def test_two_workers_on_the_shared_subscription_receipt_what_each_stored(
    mosquitto: Mosquitto,
    store_config: SqliteStoreConfig,
    dev1: Publisher,
    watcher: ReceiptWatcher,
) -> None:
    with (
        # two of a gateway's workers: [ingest] workers = 2 puts them on the shared group
        running(gateway_worker(mosquitto, store_config, client_id="gw-a", workers=2)) as first,
        running(gateway_worker(mosquitto, store_config, client_id="gw-b", workers=2)) as second,
    ):
        publish(dev1, *(reading(seq) for seq in range(1, 201)))
        receipts = watcher.wait_covering(set(range(1, 201)))
    by_worker: dict[str | None, set[int]] = {}
    for receipt in receipts:
        by_worker.setdefault(receipt.by, set()).update(covered(receipt))
    assert set(by_worker) == {"gw-a", "gw-b"}  # both took part, and each says so
    assert by_worker["gw-a"] | by_worker["gw-b"] == set(range(1, 201))
    assert not by_worker["gw-a"] & by_worker["gw-b"]  # each confirms only what it stored
    assert len(by_worker["gw-a"]) == first.ingestor.stats.stored
    assert len(by_worker["gw-b"]) == second.ingestor.stats.stored
    assert all(not missing for missing in watcher.missing_on_arrival)


def test_no_receipt_while_the_store_is_down_and_all_once_it_is_back(
    mosquitto: Mosquitto, private_influxd: Influxd, dev1: Publisher
) -> None:
    config = InfluxStoreConfig(kind="influxdb", url=private_influxd.url, database="r", timeout_s=2)
    gateway = gateway_worker(
        mosquitto, config, client_id="gw-r2", retry_initial_s=0.05, retry_max_s=0.3
    )
    reader = open_store(config)
    series = {"station": "st1", "device": "dev1", "probe": "p1"}

    def stored(device: str) -> set[int]:
        return {int(v.value) for v in reader.query_series(TEMPERATURE, "seq", series)}

    watcher = ReceiptWatcher(mosquitto, stored)
    try:
        with running(gateway):
            reader.open()  # after the worker created the database
            publish(dev1, reading(1))
            watcher.wait_covering({1})  # receipts flow while the store is up
            wait_until(lambda: gateway.ingestor.stats.batches == 1, what="the batch finished")
            private_influxd.stop(kill=True)
            publish(dev1, *(reading(seq) for seq in range(2, 22)))
            wait_until(
                lambda: (
                    gateway.consumer.received >= 21 and gateway.ingestor.stats.store_retries >= 3
                ),
                what="the gateway holding all messages and failing to store them",
            )
            assert [covered(r) for r in watcher.receipts()] == [{1}]
            private_influxd.start()
            watcher.wait_covering(set(range(1, 22)), timeout=30)
        assert all(not missing for missing in watcher.missing_on_arrival)
        assert stored("dev1") == set(range(1, 22))
    finally:
        watcher.close()
        reader.close()


def test_a_message_sent_three_times_is_written_once_and_receipted_each_time(
    worker: GatewayWorker, dev1: Publisher, watcher: ReceiptWatcher, reader: TelemetryStore
) -> None:
    original, impostor = reading(5, celsius=1.0), reading(5, celsius=99.0)
    for count, sent in enumerate((original, original, impostor), start=1):
        publish(dev1, sent)
        watcher.wait_for(lambda seen, count=count: len(seen) == count)
    assert [covered(r) for r in watcher.receipts()] == [{5}, {5}, {5}]
    # The third copy carries another value under the same id: had it been written, the
    # stored value would have changed.
    values = reader.query_series(
        TEMPERATURE, "celsius", {"station": "st1", "device": "dev1", "probe": "p1"}
    )
    assert [v.value for v in values] == [1.0]
    stats = worker.ingestor.stats
    assert (stats.stored, stats.duplicates, stats.receipts) == (1, 2, 3)
    assert "duplicates 2" in stats.summary()


def test_copies_within_one_batch_are_written_once_and_receipted_once(
    mosquitto: Mosquitto, store_config: SqliteStoreConfig, dev1: Publisher, watcher: ReceiptWatcher
) -> None:
    gateway = gateway_worker(mosquitto, store_config, batch_max=3, batch_wait_ms=5000)
    with running(gateway):
        publish(dev1, reading(8), reading(8), reading(9))
        receipts = watcher.wait_covering({8, 9})
    assert [r.ranges for r in receipts] == [[(8, 9)]]
    stats = gateway.ingestor.stats
    assert (stats.batches, stats.stored, stats.duplicates) == (1, 2, 1)


REFUSED = [
    pytest.param(b"{not json", "", id="malformed"),
    pytest.param(
        message(7, TemperatureBody(probe="p1", celsius=1.0), device="dev2", topic_device="dev1")[1],
        "",
        id="other-device",
    ),
    pytest.param(
        message(7, TemperatureBody(probe="p1", celsius=1.0), station="st9")[1],
        "",
        id="other-station",
    ),
    pytest.param(reading(7)[1], "postedge/v1/st1/dev1/event", id="wrong-channel"),
]


@pytest.mark.parametrize(("payload", "topic"), REFUSED)
def test_messages_refused_on_arrival_get_no_receipt(
    worker: GatewayWorker, dev1: Publisher, watcher: ReceiptWatcher, payload: bytes, topic: str
) -> None:
    """Whose seq a refused message carries cannot be trusted, so nothing is confirmed."""
    publish(dev1, (topic or "postedge/v1/st1/dev1/telemetry", payload), reading(1))
    watcher.wait_covering({1})
    # Receipts leave in processing order: one for the refused message would be here now.
    assert [
        (m.topic, covered(r)) for m, r in zip(watcher.messages, watcher.receipts(), strict=True)
    ] == [(DEV1_RECEIPTS, {1})]
    assert sum(worker.ingestor.stats.deadletters.values()) == 1


def test_messages_dead_lettered_after_acceptance_are_receipted(
    mosquitto: Mosquitto,
    store_config: SqliteStoreConfig,
    reader: TelemetryStore,
    dev1: Publisher,
    watcher: ReceiptWatcher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A store refusal or a kind without a converter is recorded for good: without a
    receipt the edge would resend it forever."""
    reader.write(
        [
            TelemetryPoint(
                TEMPERATURE, {"station": "x", "device": "y", "probe": "z"}, {"seq": "s"}, 1
            )
        ]
    )
    real_to_points = ingest.to_points

    def no_doors(envelope: Any) -> list[TelemetryPoint]:
        if envelope.kind == "door":  # as if the gateway had no converter for doors
            raise UnsupportedKind("the gateway does not store door messages")
        return real_to_points(envelope)

    monkeypatch.setattr(ingest, "to_points", no_doors)
    with running(gateway_worker(mosquitto, store_config)) as gateway:
        publish(dev1, reading(1), message(2, BODIES[2]), message(3, BODIES[1]))
        receipts = watcher.wait_covering({1, 2, 3})
    assert set().union(*(covered(r) for r in receipts)) == {1, 2, 3}
    stats = gateway.ingestor.stats
    assert dict(stats.deadletters) == {"store": 1, "unsupported": 1}
    assert stats.stored == 1  # the scan event
    assert stored_seqs(store_config.path, "dev1") == {3}


def test_recent_ids_forget_the_least_recently_seen_first() -> None:
    recent = RecentIds(capacity=3)
    recent.add(["a", "b", "c"])
    assert recent.seen("a")  # a is fresh again; b is now the oldest
    recent.add(["d"])
    assert ("a" in recent, "b" in recent, "c" in recent, "d" in recent) == (True, False, True, True)
    assert len(recent) == 3
    assert not recent.seen("b")


def test_receipts_stay_within_the_size_a_device_accepts() -> None:
    """Every other seq of 18 digits (two workers taking turns): 20,000 one-seq ranges."""
    seqs = list(range(10**17, 10**17 + 40_000, 2))
    receipts = encoded_receipts("dev1", seqs, by="gw-1")
    assert all(len(payload) <= MAX_RECEIPT_BYTES for _, payload in receipts)
    decoded = [decode_receipt(payload) for _, payload in receipts]
    assert decoded == [receipt for receipt, _ in receipts]
    assert set().union(*(covered(r) for r in decoded)) == set(seqs)
    assert [r.ranges[0][0] for r in decoded] == sorted(r.ranges[0][0] for r in decoded)
