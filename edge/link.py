"""The MQTT session of one device: connects, reconnects, publishes at QoS 1, receives commands.

On every (re)connect the device announces itself ``online`` (retained) and leaves a
last will that says ``offline`` (retained), so the broker tells everyone when the device
vanishes without a word. A clean stop publishes ``offline`` itself.

The will is built before the connection it guards and carries a sequence number and
timestamp of its own, one millisecond after the ``online`` status it follows: the
broker publishes it at some later, unknown time, and stores that order statuses by time.

The connection loop is ours, not paho's: paho's reconnect has no jitter, and a village
station that lost the network together with its neighbours should not come back in the
same second as all of them. One thread per link connects, runs ``loop()`` until the
connection ends, then waits a jittered, doubling delay (:class:`Backoff`) on an event,
so :meth:`DeviceLink.stop` is immediate. Every attempt gets a fresh paho client, so
nothing of a lost connection (queued publishes, TLS state) leaks into the next one: the
sender's outbox, not paho, resends what the gateway has not confirmed.

paho raises nothing for several failures (a broker that rejects our client certificate
closes the connection after the handshake; an ACL denial is only a PUBACK reason code),
so the link turns each into one plain cause and logs it once, not once per retry.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from contracts import (
    AnyBody,
    AnyEnvelope,
    Channel,
    DeviceTopic,
    InvalidTopic,
    StatusBody,
    encode,
    make_envelope,
    utc_now,
)
from contracts.mqtt import is_success, new_client, reason_text, software_version
from contracts.telemetry import LinkState
from edge.config import BrokerConfig
from edge.errors import EdgeError
from edge.linkfaults import Backoff, LinkReport, connect_failure, refusal_cause, ssl_text
from edge.sequence import SequenceStore

log = logging.getLogger(__name__)

_LOOP_TIMEOUT_S = 0.5
"""Longest wait in one ``loop()``; bounds how late a stop is noticed before CONNACK."""

_SUBSCRIBED = (Channel.CMD, Channel.RECEIPT, Channel.DECISION)


class _TlsContext(ssl.SSLContext):
    """Remembers the socket it wrapped: paho leaves a socket whose TLS handshake failed
    open, and only this context can still reach it to close it."""

    wrapped: ssl.SSLSocket | None = None

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self.wrapped = super().wrap_socket(*args, **kwargs)
        return self.wrapped


class DeviceLink:
    """One device's MQTT 5 session (username and client id = device id, clean start).

    ``on_message(channel, payload)`` gets the device's ``cmd`` and ``receipt`` messages and
    ``on_connect()`` runs after each (re)connect, both on the link's thread: they must be
    quick. :meth:`publish` may be called from any thread.
    """

    def __init__(
        self,
        *,
        station: str,
        device: str,
        broker: BrokerConfig,
        password: str | None,
        cert: tuple[Path, Path] | None,
        sequence: SequenceStore,
        on_message: Callable[[Channel, bytes], None] | None = None,
        on_connect: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.station = station
        self.device = device
        self._broker = broker
        self._password = password
        self._cert = cert
        self._sequence = sequence
        self._on_message = on_message
        self._on_connect = on_connect
        self._where = f"{broker.host}:{broker.port}"
        self._backoff = Backoff(
            broker.reconnect_min_s, broker.reconnect_max_s, rng or random.Random()
        )
        self._report = LinkReport(device, self._where)
        self._status_topic = str(DeviceTopic(station, device, Channel.STATUS))
        self._inbound = {str(DeviceTopic(station, device, c)): c for c in _SUBSCRIBED}
        self._version = ""
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._client: paho.Client | None = None
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._offline: paho.MQTTMessageInfo | None = None
        self._online = b""
        self._stop_deadline = 0.0
        self._refused: dict[str, str] = {}  # channel -> cause logged, for publishes and subs
        # State of the current attempt, touched only by the link thread.
        self._accepted = False
        self._cause: str | None = None
        self._loss = "connection lost"
        self._socket_error = ""
        self._last_refusal = (-1e9, "")  # when and on which channel the broker refused a publish
        self._down_since = 0.0
        self._attempts_down = 0
        self.last_failure: str | None = None
        self.attempts = 0
        self.refused_publishes = 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def state(self) -> LinkState:
        return "up" if self._connected.is_set() else "down"

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def start(self) -> None:
        """Start the connection thread; it connects and reconnects until :meth:`stop`."""
        if self._thread is not None:
            return
        self._version = software_version()
        self._stopping.clear()
        self._down_since = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"link-{self.device}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Say ``offline`` (retained) if connected, wait up to ``timeout`` for the broker to
        take it, disconnect and end the thread. Immediate while the link is backing off."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        with self._lock:
            self._stop_deadline = time.monotonic() + timeout
            client = self._client
            if client is not None and self._connected.is_set():
                self._offline = self._publish_offline(client)  # wakes the link thread
            self._stopping.set()
        thread.join(timeout + 2 * _LOOP_TIMEOUT_S)
        if thread.is_alive():
            log.warning("%s: link thread still busy connecting; left to end by itself", self.device)
        elif self._offline is not None and not self._offline.is_published():
            log.warning("%s: offline status not confirmed before shutdown", self.device)
        self._offline = None

    def envelope(self, body: AnyBody, *, ts_offset_ms: int = 0) -> AnyEnvelope:
        """``body`` in an envelope with this device's next ``(boot, seq)``."""
        boot, seq = self._sequence.next()
        return make_envelope(
            station=self.station,
            device=self.device,
            boot=boot,
            seq=seq,
            ts=utc_now() + timedelta(milliseconds=ts_offset_ms),
            body=body,
        )

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """Send at QoS 1 now; False (nothing queued) when not connected or paho's queue is full.

        A True says the message is on its way, not that the broker has it: delivery is
        confirmed end to end by the gateway's receipt.
        """
        client = self._client
        if client is None or not self._connected.is_set():
            return False
        try:
            info = client.publish(topic, payload, qos=1, retain=retain)
        except ValueError as exc:  # a bad topic or payload: the caller's bug, not the link's
            raise EdgeError(f"{self.device}: cannot publish on {topic[:200]!r}: {exc}") from None
        except OSError:  # the connection closed under us
            return False
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    # The connection thread.

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.attempts += 1
            self._attempts_down += 1
            try:
                was_connected = self._attempt()
            except Exception as exc:  # a bug or a full disk must not end the link for good
                self._cause = f"unexpected {type(exc).__name__} in the link: {exc}"
                was_connected = False
            if self._stopping.is_set():
                break
            self._stopping.wait(self._conclude(was_connected))

    def _conclude(self, was_connected: bool) -> float:
        """Report how the attempt ended and return the delay before the next one."""
        if self._accepted and self._cause is None:
            self._backoff.reset()
        delay = self._backoff.next()
        if self._cause is not None:
            self.last_failure = self._cause
            self._report.failed(self._cause, delay)
        elif was_connected or self._accepted:
            self.last_failure = f"lost the connection: {self._loss}"
            self._report.lost(self._loss, delay)
        if self._accepted:
            self._down_since = time.monotonic()
            self._attempts_down = 0
        return delay

    def _attempt(self) -> bool:
        """One connection from connect to close; returns whether it was established. Leaves
        ``_cause`` set when the attempt failed (or the broker ended it) for a reason."""
        self._accepted = False
        self._cause = None
        self._loss = "connection lost"
        self._socket_error = ""
        try:
            client, context = self._new_client()
        except EdgeError as exc:
            self._cause = str(exc)
            return False
        with self._lock:
            if self._stopping.is_set():
                return False
            self._client = client
        try:
            if self._connect(client, context):
                self._serve(client)
        finally:
            with self._lock:
                self._client = None
                was_connected = self._connected.is_set()
                self._connected.clear()
            _close(client.socket())
            _close(context.wrapped if context is not None else None)
        return was_connected

    def _new_client(self) -> tuple[paho.Client, _TlsContext | None]:
        client = new_client(self.device, username=self.device, password=self._password)
        client.max_inflight_messages_set(0)  # unlimited: the sender bounds what is in flight
        client.max_queued_messages_set(self._broker.max_queued)
        client.connect_timeout = self._broker.connect_timeout_s
        # All socket I/O stays on the link thread: publish() from other threads only queues
        # and wakes loop(), instead of writing to the socket beside it.
        client.on_socket_register_write = _ignore
        client.on_log = self._on_log
        client.on_connect = self._on_connected
        client.on_subscribe = self._on_subscribed
        client.on_publish = self._on_published
        client.on_message = self._on_received
        client.on_disconnect = self._on_disconnected
        online = self.envelope(self._status("online"))
        will = self.envelope(self._status("offline"), ts_offset_ms=1)
        client.will_set(self._status_topic, encode(will), qos=1, retain=True)
        self._online = encode(online)
        context = self._tls_context()
        if context is not None:
            client.tls_set_context(context)
        return client, context

    def _tls_context(self) -> _TlsContext | None:
        """The broker's CA and our client certificate, read again at every attempt so
        renewed files take effect without a restart. The server's hostname is verified."""
        tls = self._broker.tls
        if tls is None:
            return None
        context = _TlsContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            context.load_verify_locations(cafile=tls.ca_file)
        except OSError as exc:  # ssl.SSLError is an OSError
            raise EdgeError(f"TLS configuration: cannot load {tls.ca_file}: {_why(exc)}") from None
        cert = self._cert or (
            (tls.cert_file, tls.key_file) if tls.cert_file and tls.key_file else None
        )
        if cert is not None:
            try:
                context.load_cert_chain(cert[0], cert[1])
            except OSError as exc:
                raise EdgeError(
                    f"TLS configuration: cannot load {cert[0]} with {cert[1]}: {_why(exc)}"
                ) from None
        return context

    def _connect(self, client: paho.Client, context: _TlsContext | None) -> bool:
        broker = self._broker
        try:
            rc = client.connect(
                broker.host, broker.port, keepalive=broker.keepalive_s, clean_start=True
            )
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            handshake = context is not None and context.wrapped is not None
            self._cause = connect_failure(
                exc, self._where, timeout_s=broker.connect_timeout_s, tls=handshake
            )
            return False
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._cause = self._closed_before_connack()
            return False
        return True

    def _serve(self, client: paho.Client) -> None:
        """Run paho's loop until the connection ends; disconnect cleanly when stopping."""
        connack_deadline = time.monotonic() + self._broker.connect_timeout_s
        disconnecting = False
        while client.loop(_LOOP_TIMEOUT_S) == MQTTErrorCode.MQTT_ERR_SUCCESS:
            now = time.monotonic()
            if not self._accepted and self._cause is None and now > connack_deadline:
                self._cause = (
                    f"no CONNACK from broker {self._where} within "
                    f"{self._broker.connect_timeout_s:g} s"
                )
                return
            if self._stopping.is_set() and not disconnecting:
                if not self._connected.is_set():
                    return
                with self._lock:  # stop() saw the link before it was connected
                    if self._offline is None:
                        self._offline = self._publish_offline(client)
                    offline = self._offline
                if offline.is_published() or now > self._stop_deadline:
                    client.disconnect()
                    disconnecting = True
        if not self._accepted and self._cause is None and not self._stopping.is_set():
            self._cause = self._closed_before_connack()

    def _closed_before_connack(self) -> str:
        if self._broker.tls is not None:
            # With TLS 1.3 the client learns only on its first read that the broker
            # refused its certificate: as an alert, or just a closed connection.
            alert = ssl_text(self._socket_error)
            how = f"with alert '{alert}'" if alert != self._socket_error else "before CONNACK"
            return f"TLS failure: connection closed by broker {how} (client certificate rejected?)"
        detail = f": {self._socket_error}" if self._socket_error else ""
        return f"broker {self._where} closed the connection before CONNACK{detail}"

    def _status(self, state: str) -> StatusBody:
        return StatusBody(state=state, boot=self._sequence.boot, version=self._version)

    def _publish_offline(self, client: paho.Client) -> paho.MQTTMessageInfo:
        envelope = self.envelope(self._status("offline"))
        return client.publish(self._status_topic, encode(envelope), qos=1, retain=True)

    # paho callbacks, all on the link thread.

    def _on_log(self, client: paho.Client, userdata: Any, level: int, text: str) -> None:
        # paho reports why a socket read or write failed only here; keep it for the cause.
        if level == paho.MQTT_LOG_ERR and "on socket: " in text:
            self._socket_error = text.split("on socket: ", 1)[1]

    def _on_connected(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if not is_success(reason):
            self._cause = refusal_cause(reason)
            return
        self._accepted = True
        client.on_log = None  # paho formats a log line per packet while anyone listens
        client.publish(self._status_topic, self._online, qos=1, retain=True)
        client.subscribe([(topic, SubscribeOptions(qos=1)) for topic in self._inbound])

    def _on_subscribed(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        for channel, reason in zip(self._inbound.values(), reasons, strict=False):
            if is_success(reason):
                self._refused.pop(f"subscribe {channel}", None)
            else:
                self._refusal(
                    f"subscribe {channel}",
                    f"not authorized to subscribe to {channel}: {reason_text(reason)}; "
                    f"no {channel} messages will arrive",
                )
        self.last_failure = None
        # Log first: whoever waits for the connection may read the log at once.
        self._report.connected(self._attempts_down, time.monotonic() - self._down_since)
        self._connected.set()
        if self._on_connect is not None:
            try:
                self._on_connect()
            except Exception as exc:
                log.error("%s: on_connect handler failed: %s", self.device, type(exc).__name__)

    def _on_published(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        if is_success(reason) and not self._refused:
            return
        channel = _channel_of(client, mid)
        if is_success(reason):
            self._refused.pop(f"publish {channel}", None)
            return
        self.refused_publishes += 1
        self._last_refusal = (time.monotonic(), channel)
        self._refusal(
            f"publish {channel}",
            f"broker refused a publish on {channel}: {reason_text(reason)}; it stays in the outbox",
        )

    def _refusal(self, key: str, cause: str) -> None:
        """Log a refusal once per cause, until the same action succeeds again."""
        if self._refused.get(key) != cause:
            self._refused[key] = cause
            log.error("%s: %s", self.device, cause)

    def _on_received(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            channel = self._inbound.get(message.topic)
        except UnicodeDecodeError:
            channel = None
        if channel is None or self._on_message is None:
            return
        try:
            self._on_message(channel, bytes(message.payload))
        except Exception as exc:  # a handler bug must not take the link down
            log.error("%s: %s message handler failed: %s", self.device, channel, type(exc).__name__)

    def _on_disconnected(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        refused_at, channel = self._last_refusal
        if not flags.is_disconnect_packet_from_server and time.monotonic() - refused_at < 1.0:
            # Mosquitto 2.0.11 closes the connection right after a PUBACK 135. The outbox
            # will resend the message and be refused again: a cause, not a network blip.
            self._cause = f"broker closed the connection after refusing a publish on {channel}"
        elif not flags.is_disconnect_packet_from_server:
            keepalive = reason.getName() == "Keep alive timeout"
            self._loss = "no answer within the keepalive" if keepalive else "connection closed"
        elif not is_success(reason):
            # e.g. 142 Session taken over: a cause to report once, not a network blip.
            self._cause = self._cause or f"broker closed the connection: {reason_text(reason)}"
        else:
            self._loss = f"broker disconnected us: {reason_text(reason)}"


def _channel_of(client: paho.Client, mid: int) -> str:
    """The channel a publish went to. paho keeps the message until on_publish returns but
    passes only its id, so this reads paho's table of unconfirmed messages."""
    message = client._out_messages.get(mid)
    if message is None:
        return "an unknown topic"
    try:
        return DeviceTopic.parse(message.topic).channel.value
    except (InvalidTopic, UnicodeDecodeError):
        return repr(message.topic[:100])


def _why(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        return ssl_text(str(exc))
    return exc.strerror or type(exc).__name__


def _close(sock: Any) -> None:
    if sock is not None:
        sock.close()


def _ignore(*args: Any) -> None:
    """A no-op socket callback."""
