"""The gateway's MQTT sessions: persistent MQTT 5 sessions on device channels, each
taken plainly or on a shared subscription (:class:`Subscription`).

Messages are acknowledged only when the caller says they are stored (paho manual ack):
an unacknowledged message comes again after a reconnect, because the session persists
(``clean_start=False`` plus a session expiry). The broker sends at most
``receive_maximum`` unacknowledged messages, which bounds memory while the store is down.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
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
    """The device channels a session takes: ``plain`` ones alone, ``shared`` ones on the
    shared-subscription ``group`` with the other sessions of that group; ``others`` are
    channels of the same path that another session of the group takes.

    Mosquitto 2.0 restores plain subscriptions of a persistent session from its
    persistence file after a restart, but not shared ones: until the gateway has
    reconnected and subscribed again, what devices publish to a shared group reaches
    nobody. That is harmless where nothing else receipts the message (the edge sends it
    again), but not for events, which the ledger path receipts too: the edge would then
    forget an event the telemetry path never saw. So a path with one session subscribes
    plainly, and with several ingest workers the first takes the events plainly.
    """

    group: str
    plain: tuple[Channel, ...] = ()
    shared: tuple[Channel, ...] = ()
    others: tuple[Channel, ...] = ()

    def filters(self) -> list[tuple[str, SubscribeOptions]]:
        return [(topic, _SUBSCRIBE_OPTIONS) for topic in self._topics(self.plain, self.shared)]

    def other_filters(self) -> list[str]:
        """Every other form of the path's channels: dropped at connect, so that a session
        that changed form (the number of ingest workers changed) keeps no stale one."""
        return [
            *self._topics(self.shared, self.plain),
            *self._topics(self.others, self.others),
        ]

    def alone(self) -> Subscription:
        """Every channel of the path plainly, for a single session."""
        return Subscription(self.group, plain=(*self.plain, *self.shared, *self.others))

    def apply(self, client: paho.Client) -> None:
        """Subscribe ``client``'s session (at every connect), and drop the other forms."""
        client.subscribe(self.filters())
        client.unsubscribe(self.other_filters())

    def _topics(self, plain: Iterable[Channel], shared_: Iterable[Channel]) -> list[str]:
        return [
            *(device_filter(channel) for channel in plain),
            *(shared(device_filter(channel), self.group) for channel in shared_),
        ]


STORE_SUBSCRIPTION = Subscription("gateway", shared=SUBSCRIBED_CHANNELS)
"""Everything devices send, shared: the form of every ingest worker before events were
taken plainly (kept for benchmarks' bare consumers and to test the change of form)."""
ONE_WORKER_STORE_SUBSCRIPTION = STORE_SUBSCRIPTION.alone()
"""Everything devices send, for a gateway with one ingest worker (the default)."""
_SHARED_STORE_CHANNELS = tuple(c for c in SUBSCRIBED_CHANNELS if c is not Channel.EVENT)
COLDCHAIN_SUBSCRIPTION = Subscription(
    "coldchain", plain=(Channel.TELEMETRY, Channel.EVENT, Channel.CMD_RESULT)
)
"""Readings, locker events and command results, for the cold-chain engine: a session of
its own, so alerts never wait for the telemetry store or the decision path."""
LEDGER_SUBSCRIPTION = Subscription("ledger", plain=(Channel.EVENT,))
"""Station events, for the ledger and its decisions: a session of its own, so decisions
never wait for the telemetry store."""


def store_subscription(workers: int, index: int = 0) -> Subscription:
    """The telemetry path's subscription for ingest worker ``index`` of ``workers``: one
    worker takes everything plainly; of several, worker 0 takes the events plainly (the
    ledger path receipts them too, see :class:`Subscription`) and all share the rest."""
    if workers == 1:
        return ONE_WORKER_STORE_SUBSCRIPTION
    events = (Channel.EVENT,)
    if index == 0:
        return Subscription("gateway", plain=events, shared=_SHARED_STORE_CHANNELS)
    return Subscription("gateway", shared=_SHARED_STORE_CHANNELS, others=events)


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
