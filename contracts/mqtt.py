"""MQTT 5 conventions every side shares: client construction and reason codes.

Every postedge client speaks MQTT 5 (for PUBACK reason codes, session expiry and shared
subscriptions) and disables Nagle's algorithm: small QoS 1 request/answer round trips
otherwise wait tens of milliseconds for delayed ACKs.
"""

from __future__ import annotations

import logging
import socket
from importlib import metadata
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode


def new_client(
    client_id: str,
    *,
    username: str | None = None,
    password: str | None = None,
    manual_ack: bool = False,
) -> paho.Client:
    """A paho 2.x client for MQTT 5 with TCP_NODELAY on its socket."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5,
        manual_ack=manual_ack,
    )
    if username is not None:
        client.username_pw_set(username, password)
    client.on_socket_open = _set_nodelay
    return client


def _set_nodelay(client: paho.Client, userdata: Any, sock: Any) -> None:
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect_properties(
    *, session_expiry_s: int | None = None, receive_maximum: int | None = None
) -> Properties:
    """CONNECT properties. Without a session expiry, MQTT 5 keeps no session at all."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if session_expiry_s is not None:
        properties.SessionExpiryInterval = session_expiry_s
    if receive_maximum is not None:
        properties.ReceiveMaximum = receive_maximum
    return properties


def is_success(reason_code: ReasonCode | int) -> bool:
    """MQTT 5 reason codes below 128 are successes (16 = no matching subscribers is one)."""
    value = reason_code.value if isinstance(reason_code, ReasonCode) else int(reason_code)
    return value < 128


def reason_text(reason_code: ReasonCode | int) -> str:
    """``"135 Not authorized"``: the code and its name, for one clear log line."""
    if isinstance(reason_code, ReasonCode):
        return f"{reason_code.value} {reason_code.getName()}"
    return str(int(reason_code))


class ConnectionReport:
    """Logs a session's connection state: one clear line per distinct failure cause (not
    one per retry), one when it connects, one when it loses the connection."""

    def __init__(self, log: logging.Logger, name: str, host: str, port: int) -> None:
        self._log = log
        self._name = name
        self._where = f"{host}:{port}"
        self._last_failure: str | None = None

    def refused(self, reason: ReasonCode) -> None:
        self._fail(f"broker refused the connection: {reason_text(reason)}")

    def unreachable(self) -> None:
        self._fail(f"cannot reach broker {self._where}")

    def connected(self, detail: str = "") -> None:
        self._last_failure = None
        self._log.info("%s: connected to %s%s", self._name, self._where, detail)

    def disconnected(self, reason: ReasonCode) -> None:
        self._log.warning("%s: disconnected from broker: %s", self._name, reason_text(reason))

    def _fail(self, cause: str) -> None:
        if cause != self._last_failure:
            self._log.error("%s: %s; retrying with backoff", self._name, cause)
            self._last_failure = cause


def software_version() -> str:
    """The installed postedge version, as devices report it in their status."""
    try:
        return metadata.version("postedge")
    except metadata.PackageNotFoundError:
        return "0+unknown"
