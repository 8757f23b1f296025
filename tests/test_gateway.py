"""The gateway against a real Mosquitto: validation, dead letters, ack only after storing."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contracts import (
    CommandResultBody,
    DeviceTopic,
    ScanBody,
    StatusBody,
    TemperatureBody,
    encode,
    make_envelope,
)
from gateway.config import BrokerConfig
from gateway.consumer import create_session, store_subscription
from gateway.convert import COMMAND_RESULT, DEADLETTER, DEVICE_STATUS, EVENT, TEMPERATURE
from gateway.service import GatewayWorker
from gateway.telemetry import TelemetryStore, open_store
from gateway.telemetry.config import SqliteStoreConfig
from postedge.localservers import Mosquitto
from tests.conftest import (
    GATEWAY_PASSWORD,
    GATEWAY_USER,
    OBSERVER_PASSWORD,
    OBSERVER_USER,
    device_password,
)
from tests.helpers import Observer, Publisher, gateway_worker, wait_until

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


@pytest.fixture
def store_config(tmp_path: Path) -> SqliteStoreConfig:
    return SqliteStoreConfig(kind="sqlite", path=tmp_path / "telemetry.sqlite")


@pytest.fixture
def reader(store_config: SqliteStoreConfig) -> Iterator[TelemetryStore]:
    store = open_store(store_config)
    store.open()
    yield store
    store.close()


@pytest.fixture
def worker(mosquitto: Mosquitto, store_config: SqliteStoreConfig) -> Iterator[GatewayWorker]:
    gateway = gateway_worker(mosquitto, store_config)
    gateway.start()
    assert gateway.consumer.wait_ready(10)
    yield gateway
    gateway.stop()


@pytest.fixture
def dev1(mosquitto: Mosquitto) -> Iterator[Publisher]:
    publisher = Publisher(mosquitto, "dev1", device_password("dev1"))
    yield publisher
    publisher.close()


@pytest.fixture
def deadletters(mosquitto: Mosquitto) -> Iterator[Observer]:
    observer = Observer(mosquitto, OBSERVER_USER, OBSERVER_PASSWORD, "postedge/v1/_deadletter/#")
    yield observer
    observer.close()


def reading(seq: int, celsius: float, *, device: str = "dev1", station: str = "st1") -> bytes:
    return encode(
        make_envelope(
            station=station,
            device=device,
            boot=1,
            seq=seq,
            ts=T0 + timedelta(seconds=seq),
            body=TemperatureBody(probe="p1", celsius=celsius),
        )
    )


TOPIC = "postedge/v1/st1/dev1/telemetry"
SERIES = {"station": "st1", "device": "dev1", "probe": "p1"}


def stored(reader: TelemetryStore) -> list[tuple[int, object]]:
    return [(v.time_ns, v.value) for v in reader.query_series(TEMPERATURE, "celsius", SERIES)]


def test_readings_are_stored_with_device_timestamps(
    worker: GatewayWorker, dev1: Publisher, reader: TelemetryStore
) -> None:
    for seq in range(1, 21):
        dev1.publish(TOPIC, reading(seq, seq / 4))
    points = wait_until(lambda: len(stored(reader)) == 20 and stored(reader), what="20 readings")
    expected_ns = [int((T0 + timedelta(seconds=s)).timestamp()) * 10**9 for s in range(1, 21)]
    assert points == [(ns, seq / 4) for ns, seq in zip(expected_ns, range(1, 21), strict=True)]
    msg_ids = reader.query_series(TEMPERATURE, "msg_id", SERIES)
    assert [v.value for v in msg_ids] == [f"dev1:1:{s}" for s in range(1, 21)]


def test_status_is_stored_as_latest_state(
    worker: GatewayWorker, dev1: Publisher, reader: TelemetryStore
) -> None:
    for seq, state in ((1, "online"), (2, "offline")):
        envelope = make_envelope(
            station="st1",
            device="dev1",
            boot=1,
            seq=seq,
            ts=T0 + timedelta(milliseconds=seq),
            body=StatusBody(state=state, boot=1, version="test"),
        )
        dev1.publish("postedge/v1/st1/dev1/status", encode(envelope), retain=True)
    last = wait_until(
        lambda: [
            v
            for v in reader.last(DEVICE_STATUS, "state", ["station", "device"])
            if v.value == "offline"
        ],
        what="offline status",
    )
    assert dict(last[0].tags) == {"station": "st1", "device": "dev1"}


BAD_INPUTS = [
    pytest.param(TOPIC, b"{not json", "malformed", id="malformed"),
    pytest.param(TOPIC, b"\xff\xfe\x00", "malformed", id="not-utf8"),
    pytest.param(TOPIC, json.dumps({"kind": "temperature"}).encode(), "schema", id="schema"),
    pytest.param(TOPIC, b"{" + b" " * (64 * 1024) + b"}", "oversize", id="oversize"),
    pytest.param(TOPIC, reading(7, 1.0, device="dev2"), "identity", id="spoofed-device"),
    pytest.param(TOPIC, reading(7, 1.0, station="st9"), "identity", id="spoofed-station"),
    pytest.param("postedge/v1/st1/dev1/status", reading(7, 1.0), "topic", id="wrong-channel"),
]


@pytest.mark.parametrize(("topic", "payload", "reason"), BAD_INPUTS)
def test_bad_input_is_dead_lettered_counted_and_the_gateway_keeps_serving(
    worker: GatewayWorker,
    dev1: Publisher,
    deadletters: Observer,
    reader: TelemetryStore,
    topic: str,
    payload: bytes,
    reason: str,
) -> None:
    dev1.publish(topic, payload)
    dev1.publish(TOPIC, reading(1, 2.5))
    seen = deadletters.wait_for(lambda messages: len(messages) >= 1)
    assert seen[0].topic == f"postedge/v1/_deadletter/{reason}"
    record = json.loads(seen[0].payload)
    assert record["reason"] == reason
    assert record["topic"] == topic
    assert record["size"] == len(payload)
    assert record["sha256"] == hashlib.sha256(payload).hexdigest()
    assert record["error"]
    assert wait_until(lambda: stored(reader), what="the valid reading after the bad one") == [
        (int((T0 + timedelta(seconds=1)).timestamp()) * 10**9, 2.5)
    ]
    assert worker.ingestor.stats.deadletters[reason] == 1
    records = reader.query_series(DEADLETTER, "sha256", {"reason": reason})
    assert [r.value for r in records] == [record["sha256"]]


def test_dead_letters_do_not_carry_the_payload(
    worker: GatewayWorker, dev1: Publisher, deadletters: Observer
) -> None:
    secret = "110101199003074514"
    dev1.publish(TOPIC, json.dumps({"kind": "temperature", "id_number": secret}).encode())
    seen = deadletters.wait_for(lambda messages: len(messages) >= 1)
    assert secret.encode() not in seen[0].payload


def test_unacknowledged_messages_come_back_after_a_restart(
    mosquitto: Mosquitto, dev1: Publisher, store_config: SqliteStoreConfig, reader: TelemetryStore
) -> None:
    """Messages that arrived while the gateway was away are delivered from its session."""
    first = gateway_worker(mosquitto, store_config)
    first.start()
    assert first.consumer.wait_ready(10)
    first.stop()  # the session (with its subscription) stays at the broker
    for seq in range(1, 101):
        dev1.publish(TOPIC, reading(seq, 20.0 + seq / 10))
    second = gateway_worker(mosquitto, store_config)
    second.start()
    try:
        wait_until(lambda: len(stored(reader)) == 100, what="the 100 readings queued while away")
    finally:
        second.stop()
    assert [value for _, value in stored(reader)] == [20.0 + s / 10 for s in range(1, 101)]


def test_points_the_store_rejects_are_dead_lettered_one_by_one(
    mosquitto: Mosquitto,
    store_config: SqliteStoreConfig,
    reader: TelemetryStore,
    dev1: Publisher,
    deadletters: Observer,
) -> None:
    """Another writer made 'seq' a string: the store refuses readings, not the batch."""
    from gateway.telemetry import TelemetryPoint

    reader.write(
        [
            TelemetryPoint(
                TEMPERATURE, {"station": "x", "device": "y", "probe": "z"}, {"seq": "s"}, 1
            )
        ]
    )
    gateway = gateway_worker(mosquitto, store_config)
    gateway.start()
    assert gateway.consumer.wait_ready(10)
    try:
        for seq in (1, 2):
            dev1.publish(TOPIC, reading(seq, 1.5))
        status = make_envelope(
            station="st1",
            device="dev1",
            boot=1,
            seq=3,
            ts=T0,
            body=StatusBody(state="online", boot=1, version="test"),
        )
        dev1.publish("postedge/v1/st1/dev1/status", encode(status))
        seen = deadletters.wait_for(lambda messages: len(messages) >= 2)
        wait_until(
            lambda: reader.last(DEVICE_STATUS, "state", ["station", "device"]), what="status"
        )
    finally:
        gateway.stop()
    assert {m.topic for m in seen} == {"postedge/v1/_deadletter/store"}
    assert "field type conflict" in json.loads(seen[0].payload)["error"]
    assert gateway.ingestor.stats.deadletters["store"] == 2
    assert gateway.ingestor.stats.stored == 1
    assert stored(reader) == []


def test_a_created_session_keeps_every_channel_a_device_sends_on(
    mosquitto: Mosquitto, dev1: Publisher, store_config: SqliteStoreConfig, reader: TelemetryStore
) -> None:
    """Events and command results sent before the gateway's first run are kept too."""
    broker = BrokerConfig(
        host=mosquitto.host, port=mosquitto.port, username=GATEWAY_USER, password=GATEWAY_PASSWORD
    )
    create_session(broker, client_id="gw-test")
    bodies = [
        TemperatureBody(probe="p1", celsius=1.0),
        ScanBody(reader="r1", code="SF1234567890"),
        CommandResultBody(command_id="c-1", command="report_status", ok=True),
        StatusBody(state="online", boot=1, version="test"),
    ]
    for seq, body in enumerate(bodies, start=1):
        envelope = make_envelope(station="st1", device="dev1", boot=1, seq=seq, ts=T0, body=body)
        dev1.publish(str(DeviceTopic("st1", "dev1", envelope.message_channel)), encode(envelope))
    gateway = gateway_worker(mosquitto, store_config)
    gateway.start()
    try:
        wait_until(lambda: gateway.ingestor.stats.stored == 4, what="the four queued messages")
    finally:
        gateway.stop()
    tags = {"station": "st1", "device": "dev1"}
    assert [v.value for v in reader.query_series(EVENT, "seq", {**tags, "kind": "scan"})] == [2]
    assert [v.value for v in reader.query_series(COMMAND_RESULT, "seq", tags)] == [3]


def test_two_worker_processes_share_the_stream_and_stop_cleanly(
    tmp_path: Path, mosquitto: Mosquitto, reader: TelemetryStore, dev1: Publisher
) -> None:
    """postedge gateway run --workers 2: both sessions take part, nothing is lost."""
    broker = BrokerConfig(
        host=mosquitto.host, port=mosquitto.port, username=GATEWAY_USER, password=GATEWAY_PASSWORD
    )
    for index, client_id in enumerate(("gw-multi-0", "gw-multi-1")):
        create_session(broker, client_id=client_id, subscription=store_subscription(2, index))
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[broker]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n'
        f'username = "{GATEWAY_USER}"\npassword = "{GATEWAY_PASSWORD}"\nclient_id = "gw-multi"\n\n'
        f'[store]\nkind = "sqlite"\npath = "telemetry.sqlite"\n\n[ingest]\nbatch_wait_ms = 5\n'
    )
    for seq in range(1, 201):
        dev1.publish(TOPIC, reading(seq, seq / 8))
    gateway = subprocess.Popen(
        [sys.executable, "-m", "postedge.cli", "gateway", "run", str(config), "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: len(stored(reader)) == 200, timeout=30, what="200 readings")
    finally:
        gateway.send_signal(signal.SIGTERM)
        output = gateway.communicate(timeout=30)[0]
    assert gateway.returncode == 0, output
    assert [value for _, value in stored(reader)] == [seq / 8 for seq in range(1, 201)]
    processed = {
        worker: int(count)
        for worker, count in re.findall(r"(gw-multi-\d): stopped; processed (\d+)", output)
    }
    assert set(processed) == {"gw-multi-0", "gw-multi-1"}
    assert all(processed.values()), processed  # the backlog was shared, not taken by one
    assert sum(processed.values()) == 200
