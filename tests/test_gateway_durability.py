"""Nothing is acknowledged before InfluxDB has it: outages lose and duplicate nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from contracts import TemperatureBody, encode, make_envelope
from gateway.convert import TEMPERATURE
from gateway.service import GatewayWorker
from gateway.telemetry import TelemetryStore, open_store
from gateway.telemetry.config import InfluxStoreConfig
from postedge.localservers import Influxd, Mosquitto
from tests.conftest import device_password
from tests.helpers import Publisher, gateway_worker, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
TOPIC = "postedge/v1/st1/dev1/telemetry"
SERIES = {"station": "st1", "device": "dev1", "probe": "p1"}


def reading(seq: int) -> bytes:
    return encode(
        make_envelope(
            station="st1",
            device="dev1",
            boot=1,
            seq=seq,
            ts=T0 + timedelta(seconds=seq),
            body=TemperatureBody(probe="p1", celsius=seq / 10),
        )
    )


def worker(broker: Mosquitto, store: InfluxStoreConfig) -> GatewayWorker:
    return gateway_worker(
        broker, store, client_id="gw-durable", batch_max=20, retry_initial_s=0.05, retry_max_s=0.5
    )


@pytest.fixture
def store_config(private_influxd: Influxd) -> InfluxStoreConfig:
    return InfluxStoreConfig(
        kind="influxdb", url=private_influxd.url, database="durable", timeout_s=2
    )


@pytest.fixture
def reader(store_config: InfluxStoreConfig) -> Iterator[TelemetryStore]:
    store = open_store(store_config)
    store.open()
    yield store
    store.close()


@pytest.fixture
def dev1(mosquitto: Mosquitto) -> Iterator[Publisher]:
    publisher = Publisher(mosquitto, "dev1", device_password("dev1"))
    yield publisher
    publisher.close()


def assert_exactly_once(reader: TelemetryStore, count: int) -> None:
    values = reader.query_series(TEMPERATURE, "celsius", SERIES)
    assert [v.value for v in values] == [seq / 10 for seq in range(1, count + 1)]
    msg_ids = [v.value for v in reader.query_series(TEMPERATURE, "msg_id", SERIES)]
    assert msg_ids == [f"dev1:1:{seq}" for seq in range(1, count + 1)]


def stored_count(reader: TelemetryStore) -> int:
    return len(reader.query_series(TEMPERATURE, "celsius", SERIES))


def test_influxdb_killed_and_restarted_mid_stream_loses_and_duplicates_nothing(
    mosquitto: Mosquitto,
    private_influxd: Influxd,
    store_config: InfluxStoreConfig,
    reader: TelemetryStore,
    dev1: Publisher,
) -> None:
    gateway = worker(mosquitto, store_config)
    gateway.start()
    assert gateway.consumer.wait_ready(10)
    try:
        for seq in range(1, 101):
            dev1.publish(TOPIC, reading(seq))
        wait_until(lambda: stored_count(reader) == 100, what="the first 100 readings")
        private_influxd.stop(kill=True)
        for seq in range(101, 201):
            dev1.publish(TOPIC, reading(seq))
        wait_until(lambda: gateway.ingestor.stats.store_retries >= 2, what="the gateway retrying")
        private_influxd.start()
        for seq in range(201, 301):
            dev1.publish(TOPIC, reading(seq))
        wait_until(lambda: stored_count(reader) == 300, timeout=30, what="all 300 readings")
    finally:
        gateway.stop()
    assert_exactly_once(reader, 300)
    result = private_influxd.query('SELECT count("celsius") FROM "temperature"', db="durable")
    assert result["results"][0]["series"][0]["values"][0][1] == 300  # type: ignore[index]


def test_a_gateway_stopped_while_influxdb_is_down_has_acknowledged_nothing(
    mosquitto: Mosquitto,
    private_influxd: Influxd,
    store_config: InfluxStoreConfig,
    reader: TelemetryStore,
    dev1: Publisher,
) -> None:
    """What the broker delivered but InfluxDB never took comes again to the next gateway."""
    private_influxd.stop(kill=True)
    first = worker(mosquitto, store_config)
    first.start()
    assert first.consumer.wait_ready(10)
    try:
        for seq in range(1, 51):
            dev1.publish(TOPIC, reading(seq))
        wait_until(lambda: first.consumer.received >= 50, what="the gateway to hold all 50")
        assert first.ingestor.stats.stored == 0
    finally:
        first.stop()
    private_influxd.start()
    second = worker(mosquitto, store_config)
    second.start()
    try:
        wait_until(
            lambda: stored_count(reader) == 50, timeout=30, what="the 50 redelivered readings"
        )
    finally:
        second.stop()
    assert_exactly_once(reader, 50)
