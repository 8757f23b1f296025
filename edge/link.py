"""The MQTT session of one device: publishes envelopes at QoS 1, keeps a retained status.

On every (re)connect the device announces itself ``online`` (retained) and leaves a
last will that says ``offline`` (retained), so the broker tells everyone when the device
vanishes without a word. A clean stop publishes ``offline`` itself.

The will is built before the connection it guards and carries a sequence number and
timestamp of its own, one millisecond after the ``online`` status it follows: the
broker publishes it at some later, unknown time, and stores that order statuses by time.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from contracts import (
    AnyEnvelope,
    DeviceTopic,
    StatusBody,
    TemperatureBody,
    encode,
    make_envelope,
    utc_now,
)
from contracts.mqtt import ConnectionReport, is_success, new_client, software_version
from edge.config import BrokerConfig
from edge.sequence import SequenceStore

log = logging.getLogger(__name__)


class DeviceLink:
    """One device's MQTT connection; publish() may be called from any thread."""

    def __init__(
        self,
        *,
        station: str,
        device: str,
        password: str | None,
        broker: BrokerConfig,
        sequence: SequenceStore,
    ) -> None:
        self.station = station
        self.device = device
        self._broker = broker
        self._password = password
        self._sequence = sequence
        self._version = software_version()
        self._client: paho.Client | None = None
        self._online: AnyEnvelope | None = None
        self._connected = threading.Event()
        self._report = ConnectionReport(log, device, broker.host, broker.port)
        self.published = 0
        self.dropped = 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def start(self) -> None:
        """Connect in the background; paho reconnects with capped exponential backoff."""
        client = new_client(self.device, username=self.device, password=self._password)
        client.max_queued_messages_set(self._broker.max_queued)
        client.reconnect_delay_set(self._broker.reconnect_min_s, self._broker.reconnect_max_s)
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        self._client = client
        client.connect_async(
            self._broker.host, self._broker.port, keepalive=self._broker.keepalive_s
        )
        client.loop_start()

    def envelope(self, body: TemperatureBody | StatusBody, *, ts_offset_ms: int = 0) -> AnyEnvelope:
        boot, seq = self._sequence.next()
        return make_envelope(
            station=self.station,
            device=self.device,
            boot=boot,
            seq=seq,
            ts=utc_now() + timedelta(milliseconds=ts_offset_ms),
            body=body,
        )

    def publish(self, envelope: AnyEnvelope, *, retain: bool = False) -> None:
        """Queue one envelope at QoS 1; paho sends it now or after the next reconnect."""
        if self._client is None:
            raise RuntimeError("link is not started")
        topic = DeviceTopic(self.station, self.device, envelope.message_channel)
        info = self._client.publish(str(topic), encode(envelope), qos=1, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            self.dropped += 1
            log.warning("%s: outgoing queue full, reading %s dropped", self.device, envelope.id)
        else:
            self.published += 1

    def stop(self, timeout: float = 5.0) -> None:
        """Say ``offline`` (retained), wait for the broker to take it, then disconnect."""
        client, self._client = self._client, None
        if client is None:
            return
        if self.connected:
            envelope = self.envelope(self._status("offline"))
            topic = DeviceTopic(self.station, self.device, envelope.message_channel)
            info = client.publish(str(topic), encode(envelope), qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                log.warning("%s: offline status not confirmed before shutdown", self.device)
        client.disconnect()
        client.loop_stop()
        self._connected.clear()

    def _status(self, state: str) -> StatusBody:
        return StatusBody(state=state, boot=self._sequence.boot, version=self._version)

    def _on_pre_connect(self, client: paho.Client, userdata: Any) -> None:
        self._online = self.envelope(self._status("online"))
        will = self.envelope(self._status("offline"), ts_offset_ms=1)
        topic = DeviceTopic(self.station, self.device, will.message_channel)
        client.will_set(str(topic), encode(will), qos=1, retain=True)

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        if not is_success(reason):
            self._report.refused(reason)
            return
        self._report.connected()
        self._connected.set()
        if self._online is not None:
            topic = DeviceTopic(self.station, self.device, self._online.message_channel)
            client.publish(str(topic), encode(self._online), qos=1, retain=True)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._report.unreachable()

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected and self._client is not None:
            self._report.disconnected(reason)
