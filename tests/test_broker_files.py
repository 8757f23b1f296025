"""The password and ACL files written by gateway.mosquitto, enforced by a real Mosquitto."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from contracts.mqtt import new_client
from gateway.mosquitto import AclRule, acl_text, password_line
from postedge.localservers import Mosquitto
from tests.conftest import device_password

pytestmark = pytest.mark.integration


def publish_reason(broker: Mosquitto, user: str, password: str, topic: str) -> int:
    """The MQTT 5 PUBACK reason code the broker answers to a QoS 1 publish."""
    client = new_client(f"acl-{user}", username=user, password=password)
    connected, acked = threading.Event(), threading.Event()
    reasons: list[int] = []

    def on_publish(c: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        reasons.append(reason.value)
        acked.set()

    client.on_connect = lambda *args: connected.set()
    client.on_publish = on_publish
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert connected.wait(10)
        client.publish(topic, b"{}", qos=1)
        assert acked.wait(10)
    finally:
        client.disconnect()
        client.loop_stop()
    return reasons[0]


def test_password_line_matches_mosquitto_format() -> None:
    line = password_line("dev1", "secret", salt=b"0123456789ab")
    user, _, hashed = line.partition(":")
    assert user == "dev1"
    assert hashed.startswith("$7$101$MDEyMzQ1Njc4OWFi$")
    assert len(hashed.split("$")[4]) == 88  # base64 of a 64-byte key


@pytest.mark.parametrize("bad", ["", "a:b", "a\nb"])
def test_password_line_refuses_bad_usernames(bad: str) -> None:
    with pytest.raises(ValueError, match="username"):
        password_line(bad, "x")


def test_acl_text_lists_users_then_patterns() -> None:
    text = acl_text({"gateway": [AclRule("readwrite", "#")]}, patterns=["pattern read a/%u"])
    assert text == "user gateway\ntopic readwrite #\n\npattern read a/%u\n"


def test_a_device_may_publish_under_its_own_id(mosquitto: Mosquitto) -> None:
    reason = publish_reason(
        mosquitto, "dev1", device_password("dev1"), "postedge/v1/st1/dev1/telemetry"
    )
    assert reason < 128


@pytest.mark.parametrize(
    "topic",
    [
        "postedge/v1/st1/dev2/telemetry",  # another device's identity
        "postedge/v1/st1/dev1/cmd",  # commands come from the gateway
        "postedge/v1/_deadletter/schema",
        "postedge/v1/st1/_alerts",
    ],
)
def test_a_spoofed_publish_is_refused_with_reason_135(mosquitto: Mosquitto, topic: str) -> None:
    assert publish_reason(mosquitto, "dev1", device_password("dev1"), topic) == 135


def test_a_wrong_password_is_refused(mosquitto: Mosquitto) -> None:
    client = new_client("intruder", username="dev1", password="wrong")
    refused = threading.Event()
    codes: list[int] = []

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        codes.append(reason.value)
        refused.set()

    client.on_connect = on_connect
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        assert refused.wait(10)
    finally:
        client.disconnect()
        client.loop_stop()
    assert codes == [
        135
    ]  # Mosquitto 2.0 answers "Not authorized", not 134 "Bad user name or password"
