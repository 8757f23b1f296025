"""The decision path: station events into the ledger, decisions back to the devices.

A :class:`DecisionWorker` holds its own persistent MQTT session on the ``ledger`` shared
group (``$share/ledger/postedge/v1/+/+/event``), apart from the session that feeds the
telemetry store, so a sorter's decision never waits for InfluxDB: with the telemetry
store down, events still reach the ledger and decisions still flow, while the store's
session keeps its copy of every event queued at the broker until the store is back.

For every event: the envelope is checked against its topic and the device registry;
:meth:`gateway.clearance.Clearance.handle_batch` applies what the worker took from the
broker in one ledger transaction (one commit for the batch, each message exactly once
per message id), and each decision is published on the device's ``decision`` topic only
after that transaction committed. Then the batch is receipted (the ledger holds it
durably) and acknowledged. Input the ledger refuses (an invalid resident ID, a second
acceptance of one waybill) is dead-lettered here with its reason; input that breaks
the contract or the registry is dead-lettered by the telemetry path, which sees the same
messages, so here it is only counted.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable

from contracts import AlertsTopic, AnyEnvelope, Channel, ContractError, DeviceTopic
from contracts.alerts import AlertMessage
from contracts.station import DecisionMessage
from gateway.clearance import Clearance, Outcome
from gateway.consumer import Inbound, MqttConsumer
from gateway.deadletter import DeadLetter
from gateway.ingest import encoded_receipts
from gateway.metrics import Counters
from gateway.registry import Registry
from gateway.sessionloop import SessionLoop

log = logging.getLogger(__name__)

_BATCH = 200

PickupNotifier = Callable[[str, str, str, str], None]
"""``(station, locker device, waybill, clear code)``: tells the recipient their code."""


class DecisionWorker(SessionLoop):
    """Consumes station events into the ledger and publishes decisions; ``start()``/``stop()``."""

    prefix = "ledger"

    def __init__(
        self,
        consumer: MqttConsumer,
        clearance: Clearance,
        registry: Registry,
        counters: Counters,
        *,
        name: str,
        on_failure: Callable[[BaseException], None] | None = None,
        notify_pickup: PickupNotifier | None = None,
        notify_alert: Callable[[AlertMessage], object] | None = None,
    ) -> None:
        super().__init__(consumer, registry, counters, name=name, on_failure=on_failure)
        self._notify_alert = notify_alert
        self._notify_pickup = notify_pickup
        self._clearance = clearance

    @staticmethod
    def subscription_client_id(client_id: str) -> str:
        return f"{client_id}-ledger"

    def step(self) -> None:
        batch = self._consumer.take(_BATCH, 0, idle_timeout_s=0.2)
        if batch:
            self.process(batch)

    def process(self, batch: list[Inbound]) -> bool:
        """Apply, decide, receipt and acknowledge one batch; False if stopped midway.

        The batch goes into the ledger in one transaction (one commit: a group commit,
        see :meth:`Clearance.handle_batch`); its decisions are published after that
        commit, then its receipts, then the acknowledgements.
        """
        checked = [(message, self._checked(message)) for message in batch]
        accepted = [(message, env) for message, env in checked if env is not None]
        outcomes = self._apply([envelope for _, envelope in accepted])
        if outcomes is None:
            return False  # stopped while the ledger was down: nothing acknowledged
        seqs: dict[tuple[str, str], list[int]] = defaultdict(list)
        for (message, envelope), outcome in zip(accepted, outcomes, strict=True):
            if isinstance(outcome, ContractError):
                self._dead_letter(message, outcome)
            else:
                self._publish(envelope, outcome)
            seqs[envelope.station, envelope.device].append(envelope.seq)
        for (station, device), numbers in seqs.items():
            topic = str(DeviceTopic(station, device, Channel.RECEIPT))
            for _, payload in encoded_receipts(device, numbers, by=self._name):
                self._consumer.publish(topic, payload)
        self._consumer.ack(batch)
        return True

    def _apply(self, envelopes: list[AnyEnvelope]) -> list[Outcome | ContractError] | None:
        """The batch's outcomes, retrying while the ledger is unavailable; None if stopped."""
        return self._retrying(lambda: self._clearance.handle_batch(envelopes))

    def _publish(self, envelope: AnyEnvelope, outcome: Outcome) -> None:
        self._counters.add(outcome.counters)
        if outcome.pickup_code is not None:
            self._hand_over_code(envelope, outcome.pickup_code)
        if outcome.replayed:
            self._counters.incr("ledger.replayed")
        messages: list[DecisionMessage] = []
        if outcome.decision is not None:
            messages.append(outcome.decision)
        messages.extend(outcome.extra)
        topic = str(DeviceTopic(envelope.station, envelope.device, Channel.DECISION))
        for message in messages:
            self._consumer.publish(topic, message.model_dump_json(by_alias=True).encode())
        for alert in outcome.alerts:
            self._counters.incr(f"alert.{alert.kind}")
            self._consumer.publish(
                str(AlertsTopic(alert.station)), alert.model_dump_json(by_alias=True).encode()
            )
            self._notify(self._notify_alert, alert)

    def _hand_over_code(self, envelope: AnyEnvelope, code: str) -> None:
        """The clear pickup code exists only here, once: it goes to the notifier (an SMS
        gateway, in production) and nowhere else: never to a log or the ledger."""
        waybill = getattr(envelope.body, "waybill", "")
        if self._notify_pickup is None:
            self._counters.incr("pickup.code_not_notified")
            log.warning(
                "%s: pickup code for %s issued, but no notifier is configured",
                self._name,
                waybill,
            )
            return
        try:
            self._notify_pickup(envelope.station, envelope.device, waybill, code)
        except Exception as exc:  # the notifier's bug must not stop decisions
            self._counters.incr("pickup.notify_failed")
            log.error("%s: pickup notifier failed: %s", self._name, type(exc).__name__)

    def _dead_letter(self, message: Inbound, exc: ContractError) -> None:
        record = DeadLetter.of(
            reason=exc.reason,
            error=str(exc),
            topic=message.topic,
            payload=message.payload,
            received_ns=time.time_ns(),
        )
        self._counters.incr(f"deadletter.{exc.reason}")
        log.warning("%s: refused a message from %s: %s", self._name, message.topic, exc.reason)
        self._consumer.publish(record.destination, record.to_json())
