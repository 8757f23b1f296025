"""The security regime end to end over a real Mosquitto: acceptance with a real-name
record, X-ray verdicts, sort decisions, locker decisions and pickup codes, identity
checks, replays, /metrics, and no personal data in anything the gateway wrote.

Devices are played by MQTT clients with their own credentials publishing envelopes, as
the station workflows will (the edge side comes with the station workflows issue).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from contracts import (
    AcceptanceBody,
    AnyBody,
    DecisionMessage,
    IdentityRead,
    InductionBody,
    Inspection,
    XrayBody,
    encode,
    make_envelope,
    utc_now,
)
from contracts.alerts import AlertMessage
from contracts.mqtt import new_client
from contracts.station import DepositBody, DepositRequestBody
from gateway.config import (
    BrokerConfig,
    GatewayConfig,
    IngestConfig,
    LedgerConfig,
    MetricsConfig,
    load_gateway_config,
)
from gateway.consumer import LEDGER_SUBSCRIPTION, create_session
from gateway.personal import Keyring
from gateway.service import GatewayWorker
from gateway.telemetry.config import InfluxStoreConfig, SqliteStoreConfig, StoreConfig
from postedge.localservers import Influxd, Mosquitto
from tests.conftest import (
    GATEWAY_PASSWORD,
    GATEWAY_USER,
    OBSERVER_PASSWORD,
    OBSERVER_USER,
    device_password,
)
from tests.helpers import Observer, wait_until

pytestmark = pytest.mark.integration

STATION = "county-1"
DEVICES = {
    "counter-1": "counter",
    "xray-1": "xray",
    "locker-1": "locker",
    "probe-1": "probe",
    "sorter-1": "sorter",  # last: the routing table below belongs to the last [[devices]]
}
EXCEPTION_CHUTE = 99
NUMBER = "11010519491231002X"
NAME = "张三丰"
PHONE = "13800138000"
AUTHORITY = "北京市公安局西城分局"

REGISTRY = (
    f"""
[[stations]]
id = "{STATION}"
name = "汤阴县分拣中心"
division = "410523000000"
tier = "county"
"""
    + "".join(
        f'\n[[devices]]\nid = "{device}"\nstation = "{STATION}"\nrole = "{role}"\n'
        for device, role in DEVICES.items()
    )
    + f"""
[devices.routing]
exception_chute = {EXCEPTION_CHUTE}
routes = {{ "4105" = 1, "410523" = 2, "11" = 3 }}
"""
)


class Station:
    """The station's devices, each an MQTT client with its own credentials."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.seq = itertools.count(1)
        self.clients: dict[str, paho.Client] = {}
        self.pubacks: dict[tuple[str, int], int] = {}
        self._acked = threading.Condition()

    def client(self, device: str) -> paho.Client:
        if device not in self.clients:
            client = new_client(f"{device}-test", username=device, password=device_password(device))
            client.on_publish = lambda c, u, mid, reason, props, d=device: self._on_puback(
                d, mid, reason
            )
            connected = threading.Event()
            client.on_connect = lambda *args: connected.set()
            client.connect(self.broker.host, self.broker.port)
            client.loop_start()
            assert connected.wait(10)
            self.clients[device] = client
        return self.clients[device]

    def _on_puback(self, device: str, mid: int, reason: ReasonCode) -> None:
        with self._acked:
            self.pubacks[device, mid] = reason.value
            self._acked.notify_all()

    def send(
        self, device: str, body: AnyBody, *, station: str = STATION, topic_device: str | None = None
    ) -> tuple[str, int]:
        """Publish one envelope from ``device``; returns (message id, PUBACK reason code)."""
        envelope = make_envelope(
            station=station, device=device, boot=1, seq=next(self.seq), ts=utc_now(), body=body
        )
        topic = f"postedge/v1/{station}/{topic_device or device}/event"
        return envelope.id, self.publish(device, topic, encode(envelope))

    def publish(self, device: str, topic: str, payload: bytes) -> int:
        info = self.client(device).publish(topic, payload, qos=1)
        with self._acked:
            assert self._acked.wait_for(lambda: (device, info.mid) in self.pubacks, 10)
            return self.pubacks.pop((device, info.mid))

    def close(self) -> None:
        for client in self.clients.values():
            client.disconnect()
            client.loop_stop()


def sender(number: str = NUMBER) -> IdentityRead:
    return IdentityRead(
        name=NAME,
        id_type="resident",
        id_number=number,
        authority=AUTHORITY,
        valid_from=dt.date(2020, 1, 1),
    )


def acceptance(waybill: str, destination: str = "410523101001", number: str = NUMBER) -> Any:
    return AcceptanceBody(
        waybill=waybill,
        destination=destination,
        sender=sender(number),
        sender_phone=PHONE,
        inspection=Inspection(inspected=True, declared_contents="dried dates"),
        clerk="clerk-7",
    )


def xray(waybill: str, verdict: str) -> XrayBody:
    return XrayBody(
        waybill=waybill,
        verdict=verdict,  # type: ignore[arg-type]
        operator="op-1",
        image=f"img-{waybill}",
        scanned_at=utc_now(),
    )


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "personal.keys"
    path.write_text(Keyring.generate().dump())
    path.chmod(0o600)
    return path


def gateway_config(
    tmp_path: Path, broker: Mosquitto, store: StoreConfig, keys_file: Path
) -> GatewayConfig:
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY)
    return GatewayConfig(
        broker=BrokerConfig(
            host=broker.host,
            port=broker.port,
            username=GATEWAY_USER,
            password=GATEWAY_PASSWORD,
            client_id="gw-dec",
            reconnect_max_s=1,
        ),
        store=store,
        ingest=IngestConfig(batch_wait_ms=5),
        registry=registry,
        ledger=LedgerConfig(url=f"sqlite:///{tmp_path / 'ledger.sqlite'}", keys_file=keys_file),
        metrics=MetricsConfig(port=0),
    )


@pytest.fixture
def broker(make_mosquitto: Any) -> Mosquitto:
    broker: Mosquitto = make_mosquitto(devices=list(DEVICES))
    return broker


@pytest.fixture
def station(broker: Mosquitto) -> Iterator[Station]:
    station = Station(broker)
    yield station
    station.close()


@pytest.fixture
def decisions(broker: Mosquitto) -> Iterator[Observer]:
    observer = Observer(
        broker, OBSERVER_USER, OBSERVER_PASSWORD, f"postedge/v1/{STATION}/+/decision"
    )
    yield observer
    observer.close()


@pytest.fixture
def deadletters(broker: Mosquitto) -> Iterator[Observer]:
    observer = Observer(broker, OBSERVER_USER, OBSERVER_PASSWORD, "postedge/v1/_deadletter/#")
    yield observer
    observer.close()


@pytest.fixture
def alerts(broker: Mosquitto) -> Iterator[Observer]:
    observer = Observer(broker, OBSERVER_USER, OBSERVER_PASSWORD, f"postedge/v1/{STATION}/_alerts")
    yield observer
    observer.close()


def decision_for(observer: Observer, request: str) -> DecisionMessage:
    def found() -> DecisionMessage | None:
        for message in observer.messages:
            decision = DecisionMessage.model_validate_json(message.payload)
            if decision.request == request:
                return decision
        return None

    return wait_until(found, timeout=15, what=f"a decision on {request}")


def induct(station: Station, transaction: int, waybill: str | None) -> str:
    body = InductionBody(transaction=transaction, barcode=waybill, scan_slot=None if waybill else 7)
    msg_id, reason = station.send("sorter-1", body)
    assert reason < 128
    return msg_id


def routed(observer: Observer, request: str) -> tuple[int, str | None]:
    body = decision_for(observer, request).body
    assert body.kind == "sort"
    return body.chute, body.reason


@pytest.fixture
def gateway(tmp_path: Path, broker: Mosquitto, keys_file: Path) -> Iterator[GatewayWorker]:
    store = SqliteStoreConfig(kind="sqlite", path=tmp_path / "telemetry.sqlite")
    worker = GatewayWorker(gateway_config(tmp_path, broker, store, keys_file), client_id="gw-dec")
    worker.start()
    assert worker.wait_ready(10)
    yield worker
    worker.stop()


def test_the_security_regime_decides_every_parcel(
    tmp_path: Path, gateway: GatewayWorker, station: Station, decisions: Observer,
    deadletters: Observer, alerts: Observer, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    for waybill, destination in [
        ("YT0001", "410523101001"),
        ("YT0002", "410523101001"),
        ("YT0003", "410523101001"),
        ("YT0005", "990000000000"),
        ("YT0006", "410501000000"),
        ("YT0008", "110105000000"),
    ]:
        station.send("counter-1", acceptance(waybill, destination))
    for waybill, verdict in [("YT0001", "PASS"), ("YT0003", "SUSPECT"), ("YT0005", "PASS"),
                             ("YT0006", "PASS"), ("YT0008", "PASS")]:  # fmt: skip
        station.send("xray-1", xray(waybill, verdict))

    assert routed(decisions, induct(station, 1, "YT0001")) == (2, None)  # longest prefix 410523
    assert routed(decisions, induct(station, 2, "YT0006")) == (1, None)  # prefix 4105
    assert routed(decisions, induct(station, 3, "YT0002")) == (EXCEPTION_CHUTE, "no_xray")
    assert routed(decisions, induct(station, 4, "YT0003")) == (EXCEPTION_CHUTE, "xray_hold")
    (hold_alert,) = alerts.wait_for(lambda seen: len(seen) >= 1, timeout=10)
    alert = AlertMessage.model_validate_json(hold_alert.payload)
    assert (alert.kind, alert.severity, alert.subject, alert.state) == (
        "xray_hold", "warning", "YT0003", "open",
    )  # fmt: skip
    assert alert.details["verdict"] == "SUSPECT"
    assert routed(decisions, induct(station, 5, "YT0004")) == (EXCEPTION_CHUTE, "no_realname")
    assert routed(decisions, induct(station, 6, "YT0005")) == (
        EXCEPTION_CHUTE,
        "unknown_destination",
    )
    assert routed(decisions, induct(station, 7, "YT0001")) == (
        EXCEPTION_CHUTE,
        "duplicate_induction",
    )

    # A replayed message has no second effect: the same decision, counted once.
    first = induct(station, 8, "YT0008")
    decision = decision_for(decisions, first)
    routed_before = gateway.counters.snapshot().get("sort.routed", 0)
    replay_topic = f"postedge/v1/{STATION}/sorter-1/event"
    envelope = make_envelope(
        station=STATION, device="sorter-1", boot=1, seq=int(first.rsplit(":", 1)[1]),
        ts=utc_now(), body=InductionBody(transaction=8, barcode="YT0008"),
    )  # fmt: skip
    station.publish("sorter-1", replay_topic, encode(envelope))
    wait_until(
        lambda: sum(
            DecisionMessage.model_validate_json(m.payload).request == first
            for m in decisions.messages
        ) == 2,
        what="the replayed decision",
    )  # fmt: skip
    copies = [
        DecisionMessage.model_validate_json(m.payload)
        for m in decisions.messages
        if DecisionMessage.model_validate_json(m.payload).request == first
    ]
    assert copies[0] == copies[1] == decision
    assert gateway.counters.snapshot().get("sort.routed", 0) == routed_before

    # Lockers: a send-deposit needs a real-name record; a delivery gets a pickup code.
    refused, _ = station.send("locker-1", DepositRequestBody(waybill="YT0404"))
    allowed, _ = station.send("locker-1", DepositRequestBody(waybill="YT0001"))
    assert decision_for(decisions, refused).body.model_dump() == {
        "kind": "deposit", "waybill": "YT0404", "allowed": False, "reason": "no_realname",
    }  # fmt: skip
    assert decision_for(decisions, allowed).body.model_dump()["allowed"] is True
    station.send("locker-1", DepositBody(waybill="YT0777", purpose="delivery", board=1, lock=4))

    def code_list() -> Any:
        for message in decisions.messages:
            body = DecisionMessage.model_validate_json(message.payload).body
            if body.kind == "pickup_codes" and body.codes:
                return body
        return None

    codes = wait_until(code_list, timeout=15, what="the locker's pickup code list")
    assert [(c.waybill, c.board, c.lock) for c in codes.codes] == [("YT0777", 1, 4)]

    # Refusals: an invalid resident ID, and a probe that claims an X-ray verdict.
    bad_number = NUMBER[:-1] + "3"
    station.send("counter-1", acceptance("YT0900", number=bad_number))
    station.send("probe-1", xray("YT0001", "FAIL"))

    def reasons() -> set[str]:
        return {m.topic.rsplit("/", 1)[1] for m in deadletters.messages}

    wait_until(
        lambda: reasons() >= {"realname", "identity"},
        what="dead letters for the bad ID and the spoofing probe",
    )
    assert routed(decisions, induct(station, 9, "YT0900")) == (EXCEPTION_CHUTE, "no_realname")

    counts = gateway.counters.snapshot()
    assert counts["sort.exception.no_xray"] == 1
    assert counts["sort.exception.duplicate_induction"] == 1
    assert counts["deadletter.realname"] == 1
    assert gateway.metrics is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{gateway.metrics.port}/metrics") as reply:
        exposition = reply.read().decode()
    assert 'postedge_outcomes_total{outcome="sort.exception.no_xray",worker="gw-dec"} 1.0' in (
        exposition
    )
    assert 'outcome="sort.routed"' in exposition

    # Nothing the gateway wrote holds the sender's identity in clear.
    wait_until(lambda: gateway.ingestor.stats.processed >= 20, what="the store to catch up")
    written = b"".join(
        path.read_bytes()
        for path in tmp_path.rglob("*")
        if path.is_file() and "mosquitto" not in path.parts
    )
    written += caplog.text.encode() + b"".join(m.payload for m in deadletters.messages)
    written += b"".join(m.payload for m in decisions.messages)
    for secret in (NUMBER, bad_number, NAME, PHONE, AUTHORITY, NUMBER[6:14]):
        assert secret.encode() not in written, f"{secret!r} found in what the gateway wrote"


def test_the_broker_refuses_a_device_speaking_for_another(
    gateway: GatewayWorker, station: Station
) -> None:
    """The ACL confines a device to its own topics: MQTT 5 PUBACK 135 for the spoofer."""
    _, reason = station.send("counter-1", acceptance("YT0100"), topic_device="sorter-1")
    assert reason == 135


def test_decisions_flow_while_the_telemetry_store_is_down(
    tmp_path: Path, broker: Mosquitto, keys_file: Path, private_influxd: Influxd,
    station: Station, decisions: Observer,
) -> None:  # fmt: skip
    private_influxd.create_database("postedge")
    store = InfluxStoreConfig(kind="influxdb", url=private_influxd.url, database="postedge")
    worker = GatewayWorker(gateway_config(tmp_path, broker, store, keys_file), client_id="gw-dec")
    worker.start()
    try:
        assert worker.wait_ready(10)
        private_influxd.stop()
        station.send("counter-1", acceptance("YT0201"))
        station.send("xray-1", xray("YT0201", "PASS"))
        assert routed(decisions, induct(station, 1, "YT0201")) == (2, None)
        assert worker.ingestor.stats.stored == 0
        private_influxd.start()

        def events_stored() -> int:
            result = private_influxd.query('SELECT count("msg_id") FROM "event"', db="postedge")
            series = result["results"][0].get("series")  # type: ignore[index]
            return int(series[0]["values"][0][1]) if series else 0

        wait_until(lambda: events_stored() == 3, timeout=30, what="the queued events stored")
        stored = private_influxd.query('SELECT "body" FROM "event"', db="postedge")
        assert NUMBER not in json.dumps(stored)
    finally:
        worker.stop()


def test_the_ledger_path_in_a_process_of_its_own(
    tmp_path: Path, broker: Mosquitto, keys_file: Path, station: Station, decisions: Observer
) -> None:
    """``[ledger] own_process = true``: one ingest worker and one ledger process; the
    parcel is still routed, and both stop cleanly on SIGTERM."""
    (tmp_path / "registry.toml").write_text(REGISTRY)
    config = tmp_path / "gateway.toml"
    config.write_text(
        'registry = "registry.toml"\n\n'
        f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\nusername = "{GATEWAY_USER}"\n'
        f'password = "{GATEWAY_PASSWORD}"\nclient_id = "gw-own"\n\n'
        '[store]\nkind = "sqlite"\npath = "telemetry.sqlite"\n\n'
        f'[ledger]\nurl = "sqlite:///ledger.sqlite"\nkeys_file = "{keys_file}"\n'
        "own_process = true\n"
    )
    sessions = load_gateway_config(config).broker  # the broker queues for them from now on
    create_session(sessions, client_id="gw-own")
    create_session(sessions, client_id="gw-own-ledger", subscription=LEDGER_SUBSCRIPTION)
    gateway = subprocess.Popen(
        [sys.executable, "-m", "postedge.cli", "gateway", "run", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        station.send("counter-1", acceptance("YT0301"))
        station.send("xray-1", xray("YT0301", "PASS"))
        assert routed(decisions, induct(station, 1, "YT0301")) == (2, None)
    finally:
        gateway.send_signal(signal.SIGTERM)
        output = gateway.communicate(timeout=30)[0]
    assert gateway.returncode == 0, output
    assert "ledger path (decisions) in a process of its own" in output
    assert "gw-own: stopped; processed 3" in output  # the ingest worker stored all three
