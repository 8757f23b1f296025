"""The cold-chain engine in a running gateway, over a real Mosquitto: readings in, alerts
out on ``_alerts`` (and retained per probe), acknowledged from the command line, carried
across a gateway restart, written to the telemetry store, and sent to a webhook."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from contracts import AnyBody, encode, make_envelope, utc_now
from contracts.alerts import AlertMessage
from contracts.telemetry import TemperatureBody
from gateway.coldchain import worker as coldchain_worker
from gateway.coldchain.engine import ColdChainEngine
from gateway.coldchain.worker import EngineRunsElsewhere
from gateway.config import load_gateway_config
from gateway.consumer import COLDCHAIN_SUBSCRIPTION, create_session
from gateway.ledger import Ledger
from gateway.personal import Keyring
from gateway.registry import load_registry
from gateway.service import GatewayWorker
from gateway.telemetry import open_store
from postedge.cli import main
from postedge.localservers import Influxd, Mosquitto
from tests.conftest import GATEWAY_PASSWORD, GATEWAY_USER, OBSERVER_PASSWORD, OBSERVER_USER
from tests.helpers import Observer, Publisher, Seen, wait_until

pytestmark = pytest.mark.integration

STATION = "village-23"
DEVICE = "medbox"

REGISTRY = f"""
[[stations]]
id = "{STATION}"
name = "东街村村级寄递物流服务点"
division = "410523101201"
tier = "village"

[[devices]]
id = "{DEVICE}"
station = "{STATION}"
role = "probe"
"""


class Receiver:
    """A local webhook receiver recording every JSON body it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def broker(make_mosquitto: Any) -> Mosquitto:
    broker: Mosquitto = make_mosquitto(devices=[DEVICE])
    return broker


@pytest.fixture
def config_file(tmp_path: Path, broker: Mosquitto, receiver: Receiver) -> Path:
    (tmp_path / "registry.toml").write_text(REGISTRY)
    keys = tmp_path / "personal.keys"
    keys.write_text(Keyring.generate().dump())
    keys.chmod(0o600)
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""registry = "registry.toml"

[broker]
host = "{broker.host}"
port = {broker.port}
username = "{GATEWAY_USER}"
password = "{GATEWAY_PASSWORD}"
client_id = "gw-cold"
reconnect_max_s = 1

[store]
kind = "sqlite"
path = "telemetry.sqlite"

[ledger]
url = "sqlite:///ledger.sqlite"
keys_file = "personal.keys"

[coldchain]
tick_s = 0.1

[coldchain.profiles.pharma]
low_c = 2.0
high_c = 8.0
critical_high_c = 12.0
delay_s = 60
clear_after_s = 0

[[coldchain.probes]]
station = "{STATION}"
device = "{DEVICE}"
probe = "medicine"
profile = "pharma"

[notify]
queue_path = "notify.sqlite"
retry_initial_s = 0.05

[[notify.webhooks]]
name = "qa"
url = "{receiver.url}"
min_severity = "info"
"""
    )
    return path


class Probe:
    """The medbox, publishing readings with device timestamps we choose."""

    def __init__(self, broker: Mosquitto) -> None:
        self.publisher = Publisher(broker, DEVICE, f"pw-{DEVICE}")
        self.seq = itertools.count(1)
        self.start = utc_now()

    def read(self, after_s: float, celsius: float) -> None:
        at = self.start + timedelta(seconds=after_s)
        self.send(at, TemperatureBody(probe="medicine", celsius=celsius))

    def send(self, at: datetime, body: AnyBody) -> None:
        envelope = make_envelope(
            station=STATION, device=DEVICE, boot=1, seq=next(self.seq), ts=at, body=body
        )
        self.publisher.publish(f"postedge/v1/{STATION}/{DEVICE}/telemetry", encode(envelope))


@pytest.fixture
def probe(broker: Mosquitto) -> Iterator[Probe]:
    probe = Probe(broker)
    yield probe
    probe.publisher.close()


@pytest.fixture
def alerts(broker: Mosquitto) -> Iterator[Observer]:
    observer = Observer(
        broker, OBSERVER_USER, OBSERVER_PASSWORD, f"postedge/v1/{STATION}/_alerts/#"
    )
    yield observer
    observer.close()


def started(config_file: Path) -> GatewayWorker:
    worker = GatewayWorker(load_gateway_config(config_file), client_id="gw-cold")
    worker.start()
    assert worker.wait_ready(10)
    return worker


def messages(seen: list[Seen], topic_tail: str = "/_alerts") -> list[AlertMessage]:
    return [
        AlertMessage.model_validate_json(m.payload) for m in seen if m.topic.endswith(topic_tail)
    ]


def changes(observer: Observer) -> list[tuple[str, str]]:
    return [(str(m.details["change"]), m.state) for m in messages(observer.messages)]


def test_an_excursion_is_alerted_acknowledged_and_resolved_across_a_restart(
    broker: Mosquitto,
    config_file: Path,
    probe: Probe,
    alerts: Observer,
    receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gateway = started(config_file)
    try:
        for second in range(0, 70, 10):  # 9.5 °C for 60 s: the delay
            probe.read(second, 9.5)
        alerts.wait_for(lambda seen: len(messages(seen)) == 1)
        [raised] = messages(alerts.messages)
        assert (raised.kind, raised.severity, raised.state) == (
            "temperature_high",
            "warning",
            "open",
        )
        assert raised.subject == f"{DEVICE}/medicine"
        assert raised.details["celsius"] == 9.5
        retained = Observer(
            broker,
            OBSERVER_USER,
            OBSERVER_PASSWORD,
            f"postedge/v1/{STATION}/_alerts/{DEVICE}/medicine",
        )
        try:
            [kept] = retained.wait_for(lambda seen: len(seen) == 1)
            assert kept.retain
            assert AlertMessage.model_validate_json(kept.payload).id == raised.id
        finally:
            retained.close()

        assert main(["gateway", "alerts", "ack", str(config_file), raised.id, "--by", "qa-1"]) == 0
        assert f"{raised.id} acknowledged by qa-1" in capsys.readouterr().out
        alerts.wait_for(lambda seen: len(messages(seen)) == 2)
        assert changes(alerts)[-1] == ("acknowledged", "acknowledged")
    finally:
        gateway.stop()

    # While the gateway is away, the temperature comes back; the broker keeps the readings.
    probe.read(80, 7.0)
    gateway = started(config_file)
    try:
        alerts.wait_for(lambda seen: len(messages(seen)) == 3)
        assert changes(alerts) == [
            ("raise", "open"),
            ("acknowledged", "acknowledged"),
            ("resolve", "resolved"),
        ]
        assert main(["gateway", "alerts", "list", str(config_file), "--state", "resolved"]) == 0
        listed = capsys.readouterr().out
        assert f"{raised.id}\t{STATION}\ttemperature_high\twarning\tresolved" in listed
        wait_until(lambda: len(receiver.bodies) == 3, what="three webhook deliveries")
        assert [body["state"] for body in receiver.bodies] == ["open", "acknowledged", "resolved"]
    finally:
        gateway.stop()

    store = open_store(load_gateway_config(config_file).store)
    store.open()
    try:
        tags = {"station": STATION, "kind": "temperature_high"}
        stored = [value.value for value in store.query_series("alert", "change", tags)]
        # in time order: device time for raise and resolve, the gateway's for the ack
        assert sorted(stored) == ["acknowledged", "raise", "resolve"]
    finally:
        store.close()


def test_an_open_alert_the_notifier_never_queued_is_delivered_after_a_restart(
    config_file: Path, probe: Probe, alerts: Observer, receiver: Receiver
) -> None:
    """The ledger holds an open alert that no webhook was told of (here: raised before
    ``[notify]`` was configured; in the field, a queue write that failed after the
    ledger's commit): the starting gateway queues it, once."""
    without_notify = config_file.with_name("without-notify.toml")
    without_notify.write_text(config_file.read_text().split("[notify]")[0])
    gateway = started(without_notify)
    try:
        probe.read(0, 12.5)  # over the critical limit: alarmed at once
        [raised] = messages(alerts.wait_for(lambda seen: len(messages(seen)) == 1))
    finally:
        gateway.stop()
    assert receiver.bodies == []

    gateway = started(config_file)  # the catch-up runs before start() returns
    try:
        assert gateway.counters.snapshot().get("notify.caught_up") == 1
        wait_until(lambda: receiver.bodies, what="the caught-up delivery")
    finally:
        gateway.stop()
    assert [(body["id"], body["state"], body["severity"]) for body in receiver.bodies] == [
        (raised.id, "open", "critical")
    ]

    gateway = started(config_file)
    try:
        assert "notify.caught_up" not in gateway.counters.snapshot()  # queued already
        assert "notify.queued" not in gateway.counters.snapshot()
    finally:
        gateway.stop()


def test_a_second_host_with_coldchain_on_the_same_ledger_is_refused_until_the_first_stops(
    config_file: Path,
) -> None:
    """Two engines on one ledger would raise every alert twice: the ledger's lease lets
    one run, and the other gateway does not start, saying which one runs."""
    first = started(config_file)
    try:
        second = GatewayWorker(load_gateway_config(config_file), client_id="gw-b")
        with pytest.raises(EngineRunsElsewhere, match="already runs as gw-cold-coldchain"):
            second.start()
    finally:
        first.stop()
    second = GatewayWorker(load_gateway_config(config_file), client_id="gw-b")
    second.start()  # the first gave its lease up when it stopped
    try:
        assert second.wait_ready(10)
    finally:
        second.stop()


def test_an_engine_whose_lease_was_taken_over_stops_its_gateway(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paused longer than its lease, an engine finds another host's engine holding it:
    it must not go on beside it."""
    monkeypatch.setattr(coldchain_worker, "LEASE_TTL", timedelta(seconds=0.3))  # renewed often
    gateway = started(config_file)
    try:
        ledger_config = load_gateway_config(config_file).ledger
        assert ledger_config is not None
        with Ledger(ledger_config.url) as ledger, ledger.transaction() as tx:  # a takeover
            tx.release_lease(coldchain_worker.LEASE, "gw-cold-coldchain")
            assert (
                tx.take_lease(
                    coldchain_worker.LEASE, "gw-b-coldchain", utc_now(), timedelta(minutes=5)
                )
                is None
            )
        wait_until(lambda: gateway.failure is not None, what="the gateway's failure")
        assert isinstance(gateway.failure, EngineRunsElsewhere)
        assert "already runs as gw-b-coldchain" in str(gateway.failure)
    finally:
        gateway.stop()


def test_time_is_checked_only_after_the_backlog_is_read(
    broker: Mosquitto, config_file: Path, probe: Probe, alerts: Observer
) -> None:
    """The ledger last heard from the probe two hours ago; a reading from a minute ago
    waits at the broker. A restarted engine reads it before it checks time, so the probe
    is not called offline (and then back) at start-up."""
    config = load_gateway_config(config_file)
    assert config.ledger is not None
    assert config.coldchain is not None
    with Ledger(config.ledger.url) as ledger:
        assert config.registry is not None
        ledger.sync_registry(load_registry(config.registry))
        engine = ColdChainEngine(config.coldchain)
        old = make_envelope(
            station=STATION,
            device=DEVICE,
            boot=1,
            seq=1,
            ts=utc_now() - timedelta(hours=2),
            body=TemperatureBody(probe="medicine", celsius=5.0),
        )
        with ledger.transaction() as tx:
            engine.load(tx)
            engine.apply(tx, old)
    create_session(
        config.broker, client_id="gw-cold-coldchain", subscription=COLDCHAIN_SUBSCRIPTION
    )
    probe.send(utc_now() - timedelta(minutes=1), TemperatureBody(probe="medicine", celsius=5.0))
    gateway = started(config_file)
    try:
        coldchain = gateway.coldchain
        assert coldchain is not None
        wait_until(lambda: coldchain.ticks >= 3, what="three ticks")
        assert messages(alerts.messages) == []
    finally:
        gateway.stop()
    # The same engine without the backlog: two hours of silence are an offline alert.
    with Ledger(config.ledger.url) as ledger, ledger.transaction() as tx:
        engine.load(tx)
        [offline] = engine.tick(tx, utc_now() + timedelta(hours=2))
    assert offline.alert.kind == "probe_offline"


def test_alerts_flow_while_the_telemetry_store_is_down(
    config_file: Path, private_influxd: Influxd, probe: Probe, alerts: Observer
) -> None:
    """With InfluxDB stopped, the alert is still raised and published; its event point
    reaches the store once the store is back, though the gateway restarted meanwhile."""
    private_influxd.create_database("postedge")
    text = config_file.read_text().replace(
        '[store]\nkind = "sqlite"\npath = "telemetry.sqlite"',
        f'[store]\nkind = "influxdb"\nurl = "{private_influxd.url}"\ndatabase = "postedge"',
    )
    config_file.write_text(text)
    gateway = started(config_file)
    try:
        private_influxd.stop()
        probe.read(0, 12.5)  # beyond the critical limit: at once
        alerts.wait_for(lambda seen: len(messages(seen)) == 1)
        assert messages(alerts.messages)[0].severity == "critical"
    finally:
        gateway.stop()
    gateway = started(config_file)  # the store still down: the point waits in the ledger
    try:
        private_influxd.start()

        def alert_points() -> int:
            result = private_influxd.query('SELECT count("id") FROM "alert"', db="postedge")
            series = result["results"][0].get("series")  # type: ignore[index]
            return int(series[0]["values"][0][1]) if series else 0

        wait_until(lambda: alert_points() == 1, timeout=30, what="the alert point stored")
    finally:
        gateway.stop()
