"""The gateway's MQTT session: a persistent MQTT 5 session on the shared subscription.

Messages are acknowledged only when the caller says they are stored (paho manual ack):
an unacknowledged message comes again after a reconnect, because the session persists
(``clean_start=False`` plus a session expiry). The broker sends at most
``receive_maximum`` unacknowledged messages, which bounds memory while the store is down.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from contracts import Channel, device_filter, shared
from contracts.mqtt import (
    ConnectionReport,
    connect_properties,
    is_success,
    new_client,
    reason_text,
)
from gateway.config import BrokerConfig

log = logging.getLogger(__name__)

SUBSCRIBED_CHANNELS = (Channel.TELEMETRY, Channel.EVENT, Channel.STATUS, Channel.CMD_RESULT)
"""Every channel a device publishes on; :func:`create_session` subscribes the same."""

# Retained statuses only for a new subscription: a resumed session has had them, and
# re-subscribing on every reconnect would otherwise deliver each one again.
_SUBSCRIBE_OPTIONS = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)


@dataclass(frozen=True)
class Subscription:
    """The device channels a session takes: on a shared-subscription ``group`` when
    several sessions split the stream, or plainly when one session takes it all.

    Mosquitto 2.0 restores plain subscriptions of a persistent session from its
    persistence file after a restart, but not shared ones: until the gateway has
    reconnected and subscribed again, what devices publish to a shared group reaches
    nobody, while another path of the gateway that did resubscribe already receipts it,
    and the edge then forgets it. So a path with one session subscribes plainly.
    """

    group: str
    channels: tuple[Channel, ...]
    shared: bool = True

    def filters(self) -> list[tuple[str, SubscribeOptions]]:
        return [
            (self._filter(channel, self.shared), _SUBSCRIBE_OPTIONS) for channel in self.channels
        ]

    def other_filters(self) -> list[str]:
        """The same channels in the other form: dropped at connect, so that a session
        that changed form (the number of ingest workers changed) does not keep both."""
        return [self._filter(channel, not self.shared) for channel in self.channels]

    def alone(self) -> Subscription:
        """The plain form, for a single session."""
        return replace(self, shared=False)

    def apply(self, client: paho.Client) -> None:
        """Subscribe ``client``'s session (at every connect), and drop the other form."""
        client.subscribe(self.filters())
        client.unsubscribe(self.other_filters())

    def _filter(self, channel: Channel, shared_form: bool) -> str:
        topic = device_filter(channel)
        return shared(topic, self.group) if shared_form else topic


STORE_SUBSCRIPTION = Subscription("gateway", SUBSCRIBED_CHANNELS)
"""Everything devices send, for the telemetry store, split among several ingest workers."""
ONE_WORKER_STORE_SUBSCRIPTION = STORE_SUBSCRIPTION.alone()
"""The same for a gateway with one ingest worker (the default): a plain subscription."""
COLDCHAIN_SUBSCRIPTION = Subscription(
    "coldchain", (Channel.TELEMETRY, Channel.EVENT, Channel.CMD_RESULT), shared=False
)
"""Readings, locker events and command results, for the cold-chain engine: a session of
its own, so alerts never wait for the telemetry store or the decision path."""
LEDGER_SUBSCRIPTION = Subscription("ledger", (Channel.EVENT,), shared=False)
"""Station events, for the ledger and its decisions: a session of its own, so decisions
never wait for the telemetry store."""


def store_subscription(workers: int) -> Subscription:
    """The telemetry path's subscription for ``workers`` ingest workers."""
    return STORE_SUBSCRIPTION if workers > 1 else ONE_WORKER_STORE_SUBSCRIPTION


@dataclass(frozen=True, slots=True)
class Inbound:
    """One received message, not yet acknowledged."""

    topic: str
    payload: bytes
    mid: int
    qos: int


class MqttConsumer:
    """Receives into an in-memory inbox; :meth:`take` hands out batches, :meth:`ack` confirms."""

    def __init__(
        self,
        broker: BrokerConfig,
        *,
        client_id: str,
        receive_maximum: int,
        subscription: Subscription,
    ) -> None:
        self._broker = broker
        self._subscription = subscription
        self._client_id = client_id
        self._receive_maximum = receive_maximum
        self._client: paho.Client | None = None
        self._inbox: deque[Inbound] = deque()
        self._arrived = threading.Event()
        self._wanted = 1
        self._connected = threading.Event()
        self._report = ConnectionReport(log, client_id, broker.host, broker.port)
        self.connects = 0
        self.received = 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until connected and subscribed (the broker confirmed the subscription)."""
        return self._connected.wait(timeout)

    def start(self) -> None:
        password = self._broker.password.get_secret_value() if self._broker.password else None
        client = new_client(
            self._client_id, username=self._broker.username, password=password, manual_ack=True
        )
        # Outgoing side (receipts, dead letters): no cap on in-flight or queued publishes.
        client.max_inflight_messages_set(65_535)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(self._broker.reconnect_min_s, self._broker.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._client = client
        client.connect_async(
            self._broker.host,
            self._broker.port,
            keepalive=self._broker.keepalive_s,
            clean_start=False,
            properties=connect_properties(
                session_expiry_s=self._broker.session_expiry_s,
                receive_maximum=self._receive_maximum,
            ),
        )
        client.loop_start()

    def stop(self) -> None:
        """Disconnect; whatever was not acknowledged stays with the broker's session."""
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
        self._connected.clear()

    def take(self, max_items: int, wait_s: float, idle_timeout_s: float) -> list[Inbound]:
        """Up to ``max_items`` messages: waits up to ``idle_timeout_s`` for the first one,
        then up to ``wait_s`` more for the batch to fill."""
        if not self._await(1, idle_timeout_s):
            return []
        if wait_s > 0:
            self._await(max_items, wait_s)
        inbox = self._inbox
        return [inbox.popleft() for _ in range(min(max_items, len(inbox)))]

    def _await(self, count: int, timeout: float) -> bool:
        """Wait until the inbox holds ``count`` messages; the receiving thread wakes us
        only then, not once per message."""
        self._wanted = count
        self._arrived.clear()
        if len(self._inbox) >= count:
            return True
        return self._arrived.wait(timeout)

    def ack(self, messages: list[Inbound]) -> None:
        client = self._client
        if client is None:
            return
        for message in messages:
            if message.qos > 0:
                client.ack(message.mid, message.qos)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        """Send (receipts, dead letters, alerts); False if paho dropped the message.

        While disconnected, paho keeps QoS 1 publishes and sends them after reconnecting
        (``max_queued_messages_set(0)``: no cap). It drops one only when 65,535 are
        outstanding and the packet ids run out; a dropped receipt costs a resend by the
        edge, so it is logged, not retried.
        """
        client = self._client
        if client is None:
            return False
        rc = client.publish(topic, payload, qos=qos, retain=retain).rc
        if rc in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            return True
        log.warning("%s: could not queue a message on %s: %s", self._client_id, topic, rc)
        return False

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self.received += 1
        inbox = self._inbox
        inbox.append(Inbound(message.topic, bytes(message.payload), message.mid, message.qos))
        if len(inbox) >= self._wanted and not self._arrived.is_set():
            self._arrived.set()

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        if not is_success(reason):
            self._report.refused(reason)
            return
        self.connects += 1
        self._report.connected(f" (session {'resumed' if flags.session_present else 'new'})")
        self._subscription.apply(client)

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        refused = [reason_text(reason) for reason in reasons if not is_success(reason)]
        if refused:
            log.error(
                "%s: broker refused the subscription: %s", self._client_id, ", ".join(refused)
            )
        self._connected.set()

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._report.unreachable()

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        if self._connected.is_set() and self._client is not None:
            self._report.disconnected(reason)
        self._connected.clear()


def create_session(
    broker: BrokerConfig,
    *,
    client_id: str,
    subscription: Subscription = ONE_WORKER_STORE_SUBSCRIPTION,
    timeout: float = 10.0,
) -> None:
    """Create the gateway's persistent session and subscriptions at the broker, then leave.

    From then on the broker queues device messages for ``client_id`` even before the
    gateway first runs; without it, whatever devices send before the gateway's first
    subscription is dropped, as MQTT does for messages nobody subscribed to.
    """
    from gateway.errors import GatewayError

    password = broker.password.get_secret_value() if broker.password else None
    client = new_client(client_id, username=broker.username, password=password, manual_ack=True)
    subscribed = threading.Event()
    refused: list[str] = []

    def on_connect(c: paho.Client, u: Any, f: Any, reason: ReasonCode, p: Any) -> None:
        if not is_success(reason):
            refused.append(reason_text(reason))
            subscribed.set()
            return
        subscription.apply(c)

    client.on_connect = on_connect
    client.on_subscribe = lambda *args: subscribed.set()
    try:
        client.connect(
            broker.host,
            broker.port,
            clean_start=False,
            properties=connect_properties(session_expiry_s=broker.session_expiry_s),
        )
    except OSError as exc:
        raise GatewayError(f"cannot reach broker {broker.host}:{broker.port}: {exc}") from None
    client.loop_start()
    try:
        if not subscribed.wait(timeout):
            raise GatewayError(
                f"broker {broker.host}:{broker.port} did not confirm the subscription"
            )
        if refused:
            raise GatewayError(f"broker refused the connection: {refused[0]}")
    finally:
        client.disconnect()
        client.loop_stop()
