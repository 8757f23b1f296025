"""Test helpers: condition waits and MQTT clients that record what they see."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from contracts.mqtt import new_client
from gateway.config import BrokerConfig, GatewayConfig, IngestConfig
from gateway.service import GatewayWorker
from gateway.telemetry.config import StoreConfig
from postedge.localservers import Mosquitto

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy: a readiness probe with a deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


@dataclass(frozen=True)
class Seen:
    topic: str
    payload: bytes
    retain: bool


class Observer:
    """A subscriber that records every message on its filters; wait with :meth:`wait_for`."""

    def __init__(self, broker: Mosquitto, username: str, password: str, *filters: str) -> None:
        self.messages: list[Seen] = []
        self._changed = threading.Condition()
        self._subscribed = threading.Event()
        self.client = new_client(f"observer-{id(self)}", username=username, password=password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message
        self._filters = filters
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("observer did not subscribe")

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        client.subscribe([(f, SubscribeOptions(qos=1)) for f in self._filters])

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._changed:
            self.messages.append(Seen(message.topic, bytes(message.payload), bool(message.retain)))
            self._changed.notify_all()

    def wait_for(
        self, predicate: Callable[[list[Seen]], bool], timeout: float = 10.0
    ) -> list[Seen]:
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self.messages), timeout):
                raise AssertionError(
                    f"observer saw {len(self.messages)} messages, not what was expected"
                )
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Publisher:
    """A device-side client that publishes raw payloads at QoS 1 and waits for the PUBACK."""

    def __init__(self, broker: Mosquitto, username: str, password: str) -> None:
        self.client = new_client(f"pub-{username}-{id(self)}", username=username, password=password)
        connected = threading.Event()
        self.client.on_connect = lambda *args: connected.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not connected.wait(10):
            raise AssertionError("publisher did not connect")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class BackgroundLoop:
    """An asyncio loop on its own thread, for async simulators beside synchronous tests."""

    def __init__(self) -> None:

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> BackgroundLoop:
        self._thread.start()
        return self

    def run(self, coroutine: Any, timeout: float = 30.0) -> Any:

        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def gateway_worker(
    broker: Mosquitto, store: StoreConfig, *, client_id: str = "gw-test", **ingest: Any
) -> GatewayWorker:
    """A gateway worker (not started) for ``broker`` and ``store``, batching briefly."""
    from tests.conftest import GATEWAY_PASSWORD, GATEWAY_USER

    config = GatewayConfig(
        broker=BrokerConfig(
            host=broker.host,
            port=broker.port,
            username=GATEWAY_USER,
            password=GATEWAY_PASSWORD,
            client_id=client_id,
            reconnect_max_s=2,
        ),
        store=store,
        ingest=IngestConfig(**{"batch_wait_ms": 5, **ingest}),
    )
    return GatewayWorker(config, client_id=client_id)


SIM_CLI = (sys.executable, "-m", "postedge.cli", "sim")
"""``postedge sim`` as a user runs it; append the kind and its options."""


def run_async(coroutine: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    """Run a test's coroutine on a fresh loop, bounded so a hang fails instead of stalling."""

    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, timeout=timeout)

    return asyncio.run(bounded())


class FakeClock:
    """A monotonic clock a test moves by hand, for scenarios that depend on time."""

    def __init__(self, start: float = 0.0) -> None:
        self.start = start
        self.now = start

    def __call__(self) -> float:
        return self.now

    def at(self, elapsed_s: float) -> None:
        self.now = self.start + elapsed_s
