"""The gateway's persistent sessions across a broker restart, against a real Mosquitto.

Mosquitto 2.0 restores plain subscriptions of a persistent session after a restart but
not shared ones, and the edge forgets a message once any path of the gateway receipted
it: so every path with a single session subscribes plainly, and must get what devices
sent while it was still reconnecting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from pydantic import SecretStr

from contracts.mqtt import new_client
from gateway.config import BrokerConfig
from gateway.consumer import (
    COLDCHAIN_SUBSCRIPTION,
    LEDGER_SUBSCRIPTION,
    ONE_WORKER_STORE_SUBSCRIPTION,
    STORE_SUBSCRIPTION,
    SUBSCRIBED_CHANNELS,
    Inbound,
    MqttConsumer,
    Subscription,
    create_session,
    store_subscription,
)
from postedge.localservers import Mosquitto
from tests.conftest import GATEWAY_PASSWORD, GATEWAY_USER
from tests.helpers import wait_until

TOPIC = "postedge/v1/s1/dev1/event"
EVENTS = "postedge/v1/+/+/event"


@pytest.fixture
def broker(make_mosquitto: Callable[..., Mosquitto]) -> Mosquitto:
    return make_mosquitto()


@pytest.fixture
def config(broker: Mosquitto) -> BrokerConfig:
    return BrokerConfig(
        host=broker.host,
        port=broker.port,
        username=GATEWAY_USER,
        password=SecretStr(GATEWAY_PASSWORD),
    )


@pytest.fixture
def consumers() -> Iterator[list[MqttConsumer]]:
    started: list[MqttConsumer] = []
    yield started
    for consumer in started:
        consumer.stop()


def publish(broker: Mosquitto, *payloads: bytes) -> None:
    """Publish QoS 1 as a device would and wait until the broker has each one."""
    client = new_client("publisher", username=GATEWAY_USER, password=GATEWAY_PASSWORD)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for payload in payloads:
            client.publish(TOPIC, payload, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def take_until(consumer: MqttConsumer, last: bytes) -> list[Inbound]:
    """Everything the consumer gets up to and including the message ``last``."""
    taken: list[Inbound] = []

    def arrived() -> bool:
        taken.extend(consumer.take(100, 0, idle_timeout_s=0.05))
        return any(message.payload == last for message in taken)

    wait_until(arrived, 15, what=f"message {last!r}")
    consumer.ack(taken)
    return taken


def start(
    consumers: list[MqttConsumer], config: BrokerConfig, client_id: str, form: Subscription
) -> MqttConsumer:
    consumer = MqttConsumer(config, client_id=client_id, receive_maximum=100, subscription=form)
    consumer.start()
    consumers.append(consumer)
    return consumer


def test_a_single_worker_takes_the_stream_plainly_several_share_all_but_events() -> None:
    assert store_subscription(1) is ONE_WORKER_STORE_SUBSCRIPTION
    plain = [topic for topic, _ in ONE_WORKER_STORE_SUBSCRIPTION.filters()]
    assert len(plain) == len(SUBSCRIBED_CHANNELS)
    assert not any(topic.startswith("$share/") for topic in plain)
    assert ONE_WORKER_STORE_SUBSCRIPTION.other_filters() == [
        topic for topic, _ in STORE_SUBSCRIPTION.filters()
    ]
    first, second = store_subscription(3, 0), store_subscription(3, 2)
    shared_rest = [
        f"$share/gateway/postedge/v1/+/+/{c}" for c in ("telemetry", "status", "cmd/result")
    ]
    assert [topic for topic, _ in first.filters()] == [EVENTS, *shared_rest]
    assert [topic for topic, _ in second.filters()] == shared_rest
    assert f"$share/gateway/{EVENTS}" in first.other_filters()
    assert {EVENTS, f"$share/gateway/{EVENTS}"} <= set(second.other_filters())


@pytest.mark.parametrize(
    "form",
    [
        ONE_WORKER_STORE_SUBSCRIPTION,
        store_subscription(2, 0),
        LEDGER_SUBSCRIPTION,
        COLDCHAIN_SUBSCRIPTION,
    ],
    ids=["store", "store-worker-0-of-2", "ledger", "coldchain"],
)
def test_a_path_gets_what_devices_sent_after_a_broker_restart_before_it_returned(
    broker: Mosquitto,
    config: BrokerConfig,
    consumers: list[MqttConsumer],
    form: Subscription,
) -> None:
    create_session(config, client_id="gw-path", subscription=form)
    broker.restart()
    publish(broker, b"sent while the gateway was away")
    consumer = start(consumers, config, "gw-path", form)
    taken = take_until(consumer, b"sent while the gateway was away")
    assert [message.payload for message in taken] == [b"sent while the gateway was away"]


def test_a_session_that_changes_form_gets_each_message_once(
    broker: Mosquitto, config: BrokerConfig, consumers: list[MqttConsumer]
) -> None:
    """From several workers back to one: the old shared subscription is dropped at
    connect, so the plain one does not deliver every message a second time."""
    create_session(config, client_id="gw-form", subscription=STORE_SUBSCRIPTION)
    consumer = start(consumers, config, "gw-form", ONE_WORKER_STORE_SUBSCRIPTION)
    assert consumer.wait_ready(10)
    publish(broker, b"one", b"two")
    taken = take_until(consumer, b"two")
    assert [message.payload for message in taken] == [b"one", b"two"]
    publish(broker, b"three")
    assert [message.payload for message in take_until(consumer, b"three")] == [b"three"]


def test_create_session_subscribes_the_form_it_is_given(
    broker: Mosquitto, config: BrokerConfig, consumers: list[MqttConsumer]
) -> None:
    """Before the gateway first runs, the broker queues for the session it created."""
    create_session(config, client_id="gw-early", subscription=LEDGER_SUBSCRIPTION)
    publish(broker, b"early")
    consumer = start(consumers, config, "gw-early", LEDGER_SUBSCRIPTION)
    assert [message.payload for message in take_until(consumer, b"early")] == [b"early"]


def test_workers_that_shared_events_give_them_to_the_first_worker_alone(
    broker: Mosquitto, config: BrokerConfig, consumers: list[MqttConsumer]
) -> None:
    """Two workers of an older gateway shared every channel; now the first takes the
    events plainly and the second none: each event reaches the first worker once."""
    for worker in ("gw-w-0", "gw-w-1"):
        create_session(config, client_id=worker, subscription=STORE_SUBSCRIPTION)
    first = start(consumers, config, "gw-w-0", store_subscription(2, 0))
    second = start(consumers, config, "gw-w-1", store_subscription(2, 1))
    assert first.wait_ready(10)
    assert second.wait_ready(10)
    sent = [f"event {n}".encode() for n in range(20)]
    publish(broker, *sent)
    assert [message.payload for message in take_until(first, sent[-1])] == sent
    publish(broker, b"last")  # a message after all the others: nothing else is in flight
    assert [message.payload for message in take_until(first, b"last")] == [b"last"]
    assert second.take(100, 0, idle_timeout_s=0.2) == []
    assert second.received == 0
