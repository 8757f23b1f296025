"""The edge's MQTT link against a real Mosquitto: failure causes, backoff, commands, stop.

Each failure test breaks the broker side, lets the link retry several times, checks that
exactly one ERROR line named the cause, then repairs the cause and sees the link connect.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from contracts import Channel, DeviceTopic, TemperatureBody, decode, encode
from edge.config import BrokerConfig, TlsConfig
from edge.errors import EdgeError
from edge.link import DeviceLink
from edge.linkfaults import Backoff, connect_failure, ssl_text
from edge.sequence import SequenceStore
from gateway.mosquitto import AclRule, password_line
from postedge.localservers import Mosquitto, free_port
from tests.certs import CertAuthority, make_ca
from tests.conftest import (
    GATEWAY_PASSWORD,
    GATEWAY_USER,
    OBSERVER_PASSWORD,
    OBSERVER_USER,
    device_password,
)
from tests.helpers import Observer, Publisher, wait_until

STATION = "s1"
FAST = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.2, "connect_timeout_s": 2.0}

LinkFactory = Callable[..., DeviceLink]


@pytest.fixture
def make_link(tmp_path: Path) -> Iterator[LinkFactory]:
    """Links (not started) with fast backoff; each gets its own sequence file."""
    made: list[tuple[DeviceLink, SequenceStore]] = []

    def factory(
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        device: str = "dev1",
        password: str | None = None,
        tls: TlsConfig | None = None,
        cert: tuple[Path, Path] | None = None,
        **kwargs: Any,
    ) -> DeviceLink:
        broker = BrokerConfig(host=host, port=port, tls=tls, **{**FAST, **kwargs.pop("broker", {})})
        sequence = SequenceStore(tmp_path / f"{device}-{len(made)}.seq.json")
        sequence.open()
        link = DeviceLink(
            station=STATION,
            device=device,
            broker=broker,
            password=password,
            cert=cert,
            sequence=sequence,
            **kwargs,
        )
        made.append((link, sequence))
        return link

    yield factory
    for link, sequence in made:
        link.stop(timeout=2)
        sequence.close()


@pytest.fixture
def caplog_info(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="edge.link")
    return caplog


def link_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "edge.link" and r.levelno == level]


def assert_retrying(link: DeviceLink, after: int = 3) -> None:
    """The link made ``after`` attempts and keeps making more."""
    wait_until(lambda: link.attempts >= after, what=f"{after} connection attempts")
    seen = link.attempts
    wait_until(lambda: link.attempts > seen, what="another connection attempt")
    assert not link.connected
    assert link.state == "down"


def telemetry(link: DeviceLink) -> tuple[str, bytes]:
    envelope = link.envelope(TemperatureBody(probe="fridge", celsius=4.0))
    return str(DeviceTopic(STATION, link.device, Channel.TELEMETRY)), encode(envelope)


# Pure parts.


def test_backoff_doubles_from_minimum_to_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(7))
    nominal = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    delays = [backoff.next() for _ in nominal]
    for delay, d in zip(delays, nominal, strict=True):
        assert d / 2 <= delay <= d
    assert len({round(delay / d, 6) for delay, d in zip(delays, nominal, strict=True)}) > 1
    backoff.reset()
    assert 0.25 <= backoff.next() <= 0.5
    assert 0.5 <= backoff.next() <= 1.0


def test_backoff_is_reproducible_with_a_seed_and_differs_between_seeds() -> None:
    def run(seed: int) -> list[float]:
        backoff = Backoff(1.0, 60.0, random.Random(seed))
        return [backoff.next() for _ in range(5)]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_connect_failures_read_as_causes() -> None:
    where = "broker.example:8883"

    def cause(exc: BaseException, tls: bool = False) -> str:
        return connect_failure(exc, where, timeout_s=10, tls=tls)

    assert (
        cause(ConnectionRefusedError(111, "x"))
        == f"cannot reach broker {where}: connection refused"
    )
    assert "no answer within 10 s" in cause(TimeoutError("timed out"))
    assert "cannot resolve broker host broker.example" in cause(socket.gaierror(-2, "unknown"))
    assert "Connection reset by peer" in cause(
        ConnectionResetError(104, "Connection reset by peer"), tls=True
    )
    assert cause(ConnectionResetError(104, "x"), tls=True).startswith("TLS failure: handshake")
    alert = ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca (_ssl.c:1006)")
    assert cause(alert, tls=True) == f"TLS failure: tlsv1 alert unknown ca (broker {where})"
    assert (
        ssl_text("EOF occurred in violation of protocol") == "EOF occurred in violation of protocol"
    )


# Against a real broker.


@pytest.mark.integration
def test_wrong_password_is_one_error_until_the_broker_accepts_it(
    make_mosquitto: Callable[..., Mosquitto], make_link: LinkFactory, caplog_info: Any
) -> None:
    broker = make_mosquitto(devices=["dev1"])
    link = make_link(broker.host, broker.port, password="stale-password")
    link.start()
    assert_retrying(link)
    errors = link_lines(caplog_info, logging.ERROR)
    assert len(errors) == 1, errors
    assert "broker refused the connection: 135 Not authorized" in errors[0]
    assert "retrying with backoff (next in" in errors[0]
    assert link.last_failure is not None
    assert "135" in link.last_failure

    # The operator sets the password the station has; Mosquitto rereads it on SIGHUP.
    broker.users["dev1"] = "stale-password"
    lines = [password_line(user, pw) for user, pw in broker.users.items()]
    (broker.workdir / "passwords").write_text("\n".join(lines) + "\n")
    assert broker.process is not None
    os.kill(broker.process.pid, signal.SIGHUP)
    assert link.wait_connected(10)
    assert link.last_failure is None
    assert link.state == "up"
    infos = link_lines(caplog_info, logging.INFO)
    assert any("connected to" in line and "attempts" in line for line in infos), infos
    assert len(link_lines(caplog_info, logging.ERROR)) == 1


@pytest.fixture
def cas(tmp_path: Path) -> tuple[CertAuthority, CertAuthority]:
    return make_ca(tmp_path / "certs", "a"), make_ca(tmp_path / "certs", "b")


@pytest.fixture
def tls_broker(
    make_mosquitto: Callable[..., Mosquitto], cas: tuple[CertAuthority, CertAuthority]
) -> tuple[Mosquitto, int]:
    """A broker with a TLS listener (server certificate and client CA: CA ``a``) that takes
    the client certificate's CN as the username."""
    server = cas[0].server()
    port = free_port()
    broker = make_mosquitto(
        devices=["dev1"],
        extra_conf=[
            f"listener {port} 127.0.0.1",
            f"cafile {cas[0].cert}",
            f"certfile {server.cert}",
            f"keyfile {server.key}",
            "require_certificate true",
            "use_identity_as_username true",
        ],
    )
    return broker, port


@pytest.mark.integration
def test_untrusted_broker_certificate_is_one_verify_error(
    tls_broker: tuple[Mosquitto, int],
    cas: tuple[CertAuthority, CertAuthority],
    make_link: LinkFactory,
    caplog_info: Any,
) -> None:
    broker, port = tls_broker
    a, b = cas
    client_cert = a.client("dev1").pair
    wrong = make_link(broker.host, port, tls=TlsConfig(ca_file=b.cert), cert=client_cert)
    wrong.start()
    assert_retrying(wrong)
    errors = link_lines(caplog_info, logging.ERROR)
    assert len(errors) == 1, errors
    assert (
        "TLS failure: certificate verify failed: self-signed certificate in certificate chain"
        in (errors[0])
    )
    wrong.stop()

    right = make_link(broker.host, port, tls=TlsConfig(ca_file=a.cert), cert=client_cert)
    right.start()
    assert right.wait_connected(10)


@pytest.mark.integration
def test_rejected_client_certificate_is_one_tls_failure(
    tls_broker: tuple[Mosquitto, int],
    cas: tuple[CertAuthority, CertAuthority],
    make_link: LinkFactory,
    caplog_info: Any,
) -> None:
    broker, port = tls_broker
    a, b = cas
    tls = TlsConfig(ca_file=a.cert)
    wrong = make_link(broker.host, port, tls=tls, cert=b.client("dev1").pair)
    wrong.start()
    assert_retrying(wrong)
    errors = link_lines(caplog_info, logging.ERROR)
    assert len(errors) == 1, errors
    assert errors[0].startswith("dev1: TLS failure: connection closed by broker")
    assert "(client certificate rejected?); retrying with backoff" in errors[0]
    wrong.stop()

    # The broker's default client certificate from the TLS section serves when the device
    # names none of its own.
    issued = a.client("dev1")
    right = make_link(
        broker.host, port, tls=TlsConfig(ca_file=a.cert, cert_file=issued.cert, key_file=issued.key)
    )
    right.start()
    assert right.wait_connected(10)


@pytest.mark.integration
def test_missing_tls_files_are_a_configuration_cause(
    make_link: LinkFactory, tmp_path: Path, caplog_info: Any
) -> None:
    link = make_link(port=free_port(), tls=TlsConfig(ca_file=tmp_path / "absent-ca.pem"))
    link.start()
    assert_retrying(link)
    errors = link_lines(caplog_info, logging.ERROR)
    assert len(errors) == 1
    assert f"TLS configuration: cannot load {tmp_path / 'absent-ca.pem'}" in errors[0]


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker whose ACL denies ``dev1`` its telemetry topic (the device patterns allow
    the rest)."""
    broker = Mosquitto(
        tmp_path / "acl-broker",
        users={
            GATEWAY_USER: GATEWAY_PASSWORD,
            OBSERVER_USER: OBSERVER_PASSWORD,
            "dev1": device_password("dev1"),
        },
        acl={
            GATEWAY_USER: [AclRule("readwrite", "#")],
            OBSERVER_USER: [AclRule("read", "#")],
            "dev1": [AclRule("deny", f"postedge/v1/{STATION}/dev1/telemetry")],
        },
    )
    broker.start()
    yield broker
    broker.stop(kill=True)


@pytest.mark.integration
def test_acl_denied_publishes_are_counted_and_logged_once(
    acl_broker: Mosquitto, make_link: LinkFactory, caplog_info: Any
) -> None:
    """Mosquitto 2.0.11 answers a denied QoS 1 publish with PUBACK 135 and then closes the
    connection; the link counts the refusal, says so once, and comes back by itself."""
    observer = Observer(acl_broker, OBSERVER_USER, OBSERVER_PASSWORD, "postedge/v1/#")
    try:
        link = make_link(acl_broker.host, acl_broker.port, password=device_password("dev1"))
        link.start()
        assert link.wait_connected(10)
        for refused in (1, 2, 3):  # as the outbox resends it after every reconnect
            wait_until(lambda: link.publish(*telemetry(link)), what="a connected link")
            wait_until(lambda n=refused: link.refused_publishes >= n, what="a refused publish")
        assert link.wait_connected(10)
        event_topic = str(DeviceTopic(STATION, "dev1", Channel.EVENT))
        wait_until(lambda: link.publish(event_topic, b"{}"), what="a connected link")
        observer.wait_for(lambda seen: any(m.topic == event_topic for m in seen))

        errors = link_lines(caplog_info, logging.ERROR)
        refusals = [line for line in errors if "135 Not authorized" in line]
        assert refusals == [
            "dev1: broker refused a publish on telemetry: 135 Not authorized; "
            "it stays in the outbox"
        ]
        assert len(errors) <= 2, errors  # and at most one about the broker closing after it
        assert link_lines(caplog_info, logging.WARNING) == []
        assert not any(m.topic.endswith("/telemetry") for m in observer.messages)
    finally:
        observer.close()


@pytest.mark.integration
def test_reconnects_after_broker_outage_and_calls_on_connect_each_time(
    mosquitto: Mosquitto, make_link: LinkFactory, caplog_info: Any
) -> None:
    connects: list[float] = []
    link = make_link(
        mosquitto.host,
        mosquitto.port,
        password=device_password("dev1"),
        on_connect=lambda: connects.append(time.monotonic()),
    )
    link.start()
    assert link.wait_connected(10)
    wait_until(lambda: len(connects) == 1, what="on_connect")

    mosquitto.stop(kill=True)
    wait_until(lambda: not link.connected, what="the link to notice the outage")
    assert link.publish(*telemetry(link)) is False  # nothing is queued while down
    assert_retrying(link, after=link.attempts + 3)
    warnings = link_lines(caplog_info, logging.WARNING)
    assert len(warnings) == 1, warnings
    assert "lost the connection" in warnings[0]
    errors = link_lines(caplog_info, logging.ERROR)
    assert len(errors) == 1, errors
    assert f"cannot reach broker {mosquitto.host}:{mosquitto.port}: connection refused" in errors[0]

    mosquitto.start()
    wait_until(lambda: len(connects) == 2, what="on_connect after the reconnect")
    assert link.connected
    infos = link_lines(caplog_info, logging.INFO)
    assert "attempts (down" in infos[-1], infos


@pytest.mark.integration
def test_cmd_receipt_and_decision_messages_reach_on_message(
    mosquitto: Mosquitto, make_link: LinkFactory, caplog_info: Any
) -> None:
    received: list[tuple[Channel, bytes]] = []

    def on_message(channel: Channel, payload: bytes) -> None:
        if payload == b"boom":
            raise KeyError("the handler's own bug")
        received.append((channel, payload))

    link = make_link(
        mosquitto.host, mosquitto.port, password=device_password("dev1"), on_message=on_message
    )
    link.start()
    assert link.wait_connected(10)
    gateway = Publisher(mosquitto, GATEWAY_USER, GATEWAY_PASSWORD)
    try:
        gateway.publish(str(DeviceTopic(STATION, "dev1", Channel.CMD)), b"boom")
        gateway.publish(str(DeviceTopic(STATION, "dev1", Channel.DECISION)), b"chute 3")
        gateway.publish(str(DeviceTopic(STATION, "dev2", Channel.CMD)), b"another device")
        gateway.publish(str(DeviceTopic(STATION, "dev1", Channel.CMD)), b"open 3")
        gateway.publish(str(DeviceTopic(STATION, "dev1", Channel.RECEIPT)), b"1-10")
    finally:
        gateway.close()
    wait_until(lambda: len(received) == 3, what="cmd, decision and receipt")
    assert received == [
        (Channel.DECISION, b"chute 3"),
        (Channel.CMD, b"open 3"),
        (Channel.RECEIPT, b"1-10"),
    ]
    assert link_lines(caplog_info, logging.ERROR) == ["dev1: cmd message handler failed: KeyError"]
    assert link.connected


@pytest.mark.integration
def test_stop_publishes_retained_offline_after_online(
    mosquitto: Mosquitto, make_link: LinkFactory
) -> None:
    status = str(DeviceTopic(STATION, "dev1", Channel.STATUS))
    observer = Observer(mosquitto, OBSERVER_USER, OBSERVER_PASSWORD, status)
    try:
        link = make_link(mosquitto.host, mosquitto.port, password=device_password("dev1"))
        link.start()
        assert link.wait_connected(10)
        link.stop()
        assert not link.connected
        seen = observer.wait_for(lambda seen: len(seen) >= 2)
        states = [decode(m.payload).body.state for m in seen]  # type: ignore[union-attr]
        assert states == ["online", "offline"]
    finally:
        observer.close()
    late = Observer(mosquitto, OBSERVER_USER, OBSERVER_PASSWORD, status)
    try:
        retained = late.wait_for(lambda seen: len(seen) >= 1)[0]
        assert retained.retain
        assert decode(retained.payload).body.state == "offline"  # type: ignore[union-attr]
    finally:
        late.close()


@pytest.mark.integration
def test_stop_is_prompt_while_backing_off(make_link: LinkFactory) -> None:
    link = make_link(port=free_port(), broker={"reconnect_min_s": 30, "reconnect_max_s": 60})
    link.start()
    wait_until(lambda: link.last_failure is not None, what="a failed attempt")
    assert link.publish(*telemetry(link)) is False
    started = time.monotonic()
    link.stop()
    assert time.monotonic() - started < 1.0
    assert link.attempts == 1


@pytest.mark.integration
def test_publish_on_an_invalid_topic_is_an_edge_error(
    mosquitto: Mosquitto, make_link: LinkFactory
) -> None:
    link = make_link(mosquitto.host, mosquitto.port, password=device_password("dev1"))
    link.start()
    assert link.wait_connected(10)
    with pytest.raises(EdgeError, match="cannot publish"):
        link.publish("postedge/v1/+/dev1/telemetry", b"{}")
    assert link.connected


@pytest.mark.integration
def test_last_will_says_offline_one_millisecond_after_online(
    mosquitto: Mosquitto, make_link: LinkFactory
) -> None:
    """A connection that dies without a word leaves the will: ``offline``, stamped just
    after the ``online`` it follows, and the link comes back ``online``."""
    status = str(DeviceTopic(STATION, "dev1", Channel.STATUS))
    observer = Observer(mosquitto, OBSERVER_USER, OBSERVER_PASSWORD, status)
    try:
        link = make_link(mosquitto.host, mosquitto.port, password=device_password("dev1"))
        link.start()
        assert link.wait_connected(10)
        observer.wait_for(lambda seen: len(seen) >= 1)
        sock = link._client.socket() if link._client is not None else None
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)  # the network drops: no DISCONNECT reaches the broker
        seen = observer.wait_for(lambda seen: len(seen) >= 3)
        online, will, again = (decode(m.payload) for m in seen[:3])
        states = [e.body.state for e in (online, will, again)]  # type: ignore[union-attr]
        assert states == ["online", "offline", "online"]
        assert will.seq == online.seq + 1
        assert 0.001 <= (will.ts - online.ts).total_seconds() < 1.0
        assert again.seq > will.seq
    finally:
        observer.close()


@pytest.mark.integration
def test_a_server_that_never_answers_connect_is_one_timeout_error(
    make_link: LinkFactory, caplog_info: Any
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts TCP, never speaks MQTT
        link = make_link(port=silent.getsockname()[1], broker={"connect_timeout_s": 0.2})
        link.start()
        assert_retrying(link)
        link.stop()
    errors = link_lines(caplog_info, logging.ERROR)
    assert len(errors) == 1, errors
    assert "no CONNACK from broker 127.0.0.1:" in errors[0]
    assert "within 0.2 s" in errors[0]
