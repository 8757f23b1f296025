"""Commands from the API to devices: one MQTT connection, QoS 1, sent when the broker
has acknowledged (PUBACK) them.

The device answers on its ``cmd/result`` topic through its outbox; the gateway stores
that (and the cold-chain engine takes a confirmed ``set_profile`` as the probe's
profile). The API's part ends with the broker's acknowledgement: a 202.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from contracts.commands import Command, encode_command
from contracts.mqtt import connect_properties, is_success, new_client, reason_text
from contracts.topics import Channel, DeviceTopic
from gateway.config import BrokerConfig

COMMAND_TTL = timedelta(minutes=10)
"""A command not carried out within this time is refused by the device, not run late."""


class CommandNotSent(Exception):
    """The broker is unreachable or did not acknowledge the command in time."""


class CommandSender:
    """A long-lived MQTT connection for commands; ``start()`` connects in the background."""

    def __init__(self, broker: BrokerConfig, *, timeout_s: float = 5.0) -> None:
        self._broker = broker
        self._timeout_s = timeout_s
        password = broker.password.get_secret_value() if broker.password else None
        self._client = new_client(broker.client_id, username=broker.username, password=password)
        self._connected = threading.Event()
        self._refused: str | None = None
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._refusals: dict[int, str] = {}
        self._lock = threading.Lock()
        self._client.reconnect_delay_set(broker.reconnect_min_s, broker.reconnect_max_s)

    def start(self) -> None:
        self._client.connect_async(
            self._broker.host,
            self._broker.port,
            keepalive=self._broker.keepalive_s,
            clean_start=True,
            properties=connect_properties(session_expiry_s=0),
        )
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def send(self, station: str, device: str, command: Command) -> str:
        """Publish ``command`` to the device's ``cmd`` topic; the topic once acknowledged."""
        topic = str(DeviceTopic(station, device, Channel.CMD))
        where = f"broker {self._broker.host}:{self._broker.port}"
        if not self._connected.wait(self._timeout_s):
            why = f" ({self._refused})" if self._refused else ""
            raise CommandNotSent(f"{where} is not connected{why}")
        info = self._client.publish(topic, encode_command(command), qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise CommandNotSent(f"{where} refused the publish: {paho.error_string(info.rc)}")
        try:
            info.wait_for_publish(self._timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise CommandNotSent(f"{where}: {exc}") from None
        if not info.is_published():
            raise CommandNotSent(f"{where} did not acknowledge within {self._timeout_s} s")
        with self._lock:
            refused = self._refusals.pop(info.mid, None)
        if refused is not None:
            raise CommandNotSent(f"{where} refused the command: {refused}")
        return topic

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        if not is_success(reason):
            with self._lock:
                self._refusals[mid] = reason_text(reason)

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if is_success(reason):
            self._refused = None
            self._connected.set()
        else:
            self._refused = reason_text(reason)

    def _on_disconnect(self, client: paho.Client, *args: Any) -> None:
        self._connected.clear()


def expiry(now: datetime) -> datetime:
    return now + COMMAND_TTL
