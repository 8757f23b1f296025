"""The ingest loop: batch, validate, store durably, receipt, then acknowledge.

Nothing is acknowledged before the store has accepted it. While the store is down the
batch is retried with capped, jittered exponential backoff; the broker holds everything
not yet acknowledged. Input that breaks the contract is dead-lettered: a record is
stored with the batch, published on ``postedge/v1/_deadletter/{reason}`` and counted,
and the message is acknowledged so that it does not come back.

Receipts tell the edge what it may delete from its outbox. After the durable write and
before the MQTT acknowledgement, every message whose envelope was accepted (valid, and
sent on its own device's topic and channel) is named in a receipt on
``postedge/v1/{station}/{device}/receipt``: stored, skipped as a duplicate, or recorded
as a dead letter after acceptance (``unsupported``, ``store``, ``internal``), since the
edge would otherwise resend it forever. A message that failed acceptance gets none:
whose sequence number it carries cannot be trusted.

Duplicates: ids stored recently (:class:`~gateway.dedup.RecentIds`) or seen earlier in
the same batch are receipted and acknowledged without being written again.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from contracts import (
    AnyEnvelope,
    Channel,
    ContractError,
    DeviceTopic,
    InvalidTopic,
    decode,
    validate_id,
)
from contracts.receipts import MAX_RECEIPT_BYTES, Receipt, encode_receipt, receipts_for
from gateway.config import IngestConfig
from gateway.consumer import Inbound, MqttConsumer
from gateway.convert import deadletter_point, to_points
from gateway.deadletter import DeadLetter
from gateway.dedup import RecentIds
from gateway.registry import Registry, check_identity
from gateway.telemetry import StoreError, StoreRejected, TelemetryPoint, TelemetryStore

log = logging.getLogger(__name__)


class IdentityMismatch(ContractError):
    """An envelope whose station or device differs from the topic it came on."""

    reason = "identity"


@dataclass
class IngestStats:
    processed: int = 0
    stored: int = 0
    duplicates: int = 0
    batches: int = 0
    receipts: int = 0
    """Receipt messages published."""
    receipted: int = 0
    """Messages those receipts named."""
    store_retries: int = 0
    deadletters: Counter[str] = field(default_factory=Counter)

    def as_counts(self) -> dict[str, int]:
        """The counts under ``ingest.*`` and ``deadletter.*`` names, for /metrics."""
        counts = {
            "ingest.processed": self.processed,
            "ingest.stored": self.stored,
            "ingest.batches": self.batches,
            "ingest.store_retries": self.store_retries,
            "ingest.duplicates": self.duplicates,
            "ingest.receipts": self.receipts,
        }
        counts.update({f"deadletter.{reason}": n for reason, n in self.deadletters.items()})
        return counts

    def summary(self) -> str:
        dead = ", ".join(f"{reason} {n}" for reason, n in sorted(self.deadletters.items())) or "0"
        return (
            f"processed {self.processed}, stored {self.stored} in {self.batches} batches, "
            f"duplicates {self.duplicates}, receipts {self.receipts} naming {self.receipted} "
            f"messages, store retries {self.store_retries}, dead letters: {dead}"
        )


@functools.lru_cache(maxsize=8192)
def _parse_topic(topic: str) -> DeviceTopic:
    return DeviceTopic.parse(topic)


def accept(message: Inbound) -> AnyEnvelope:
    """Validate one message against the contract and its topic; raise :class:`ContractError`."""
    topic = _parse_topic(message.topic)
    envelope = decode(message.payload)
    if envelope.station != topic.station or envelope.device != topic.device:
        raise IdentityMismatch(
            f"envelope names {envelope.station}/{envelope.device} "
            f"but came on {topic.station}/{topic.device}"
        )
    if envelope.message_channel != topic.channel:
        raise InvalidTopic(
            f"kind {envelope.message_channel.value} message on the {topic.channel.value} channel"
        )
    return envelope


def encoded_receipts(device: str, seqs: list[int], *, by: str) -> list[tuple[Receipt, bytes]]:
    """Receipts naming ``seqs``, each within the size a device accepts.

    :func:`receipts_for` bounds the number of ranges, but its largest receipts (10,000
    ranges of 18-digit numbers) would exceed ``MAX_RECEIPT_BYTES``, as can happen when
    workers take turns on one device's stream; such a receipt is split in halves.
    """
    done: list[tuple[Receipt, bytes]] = []
    pending = receipts_for(device, seqs, by=by)[::-1]  # a stack: lowest ranges on top
    while pending:
        receipt = pending.pop()
        payload = encode_receipt(receipt)
        if len(payload) <= MAX_RECEIPT_BYTES or len(receipt.ranges) == 1:
            done.append((receipt, payload))
            continue
        half = len(receipt.ranges) // 2
        pending += [
            receipt.model_copy(update={"ranges": part})
            for part in (receipt.ranges[half:], receipt.ranges[:half])
        ]
    return done


@dataclass
class _Entry:
    message: Inbound
    points: list[TelemetryPoint]
    envelope: AnyEnvelope | None = None
    """Set when the envelope was accepted: the message is then receipted."""
    dead: DeadLetter | None = None
    duplicate: bool = False

    @property
    def stored(self) -> bool:
        return self.dead is None and not self.duplicate


class Ingestor:
    """Moves batches from the consumer into the store until stopped.

    ``name`` is the worker's client id, named in its receipts (``by``).
    """

    def __init__(
        self,
        consumer: MqttConsumer,
        store: TelemetryStore,
        config: IngestConfig,
        name: str,
        *,
        registry: Registry | None = None,
    ) -> None:
        self._consumer = consumer
        self._registry = registry
        self._store = store
        self._config = config
        self._name = validate_id(name, "worker name")
        self._recent = RecentIds(config.recent_ids)
        self.stats = IngestStats()

    def run(self, stop: threading.Event) -> None:
        next_stats = time.monotonic() + self._config.stats_interval_s
        while not stop.is_set():
            batch = self._consumer.take(
                self._config.batch_max, self._config.batch_wait_ms / 1000, idle_timeout_s=0.2
            )
            if batch:
                self.process(batch, stop)
            if time.monotonic() >= next_stats:
                log.info("%s: %s", self._name, self.stats.summary())
                next_stats += self._config.stats_interval_s

    def process(self, batch: list[Inbound], stop: threading.Event) -> bool:
        """Store one batch, receipt and acknowledge it; False if stopped before it was stored."""
        received_ns = time.time_ns()
        entries = [self._entry(message, received_ns) for message in batch]
        self.stats.processed += len(batch)
        self._skip_duplicates(entries)
        if not self._write_with_retry(entries, stop):
            return False
        stored = [entry for entry in entries if entry.stored]
        self._recent.add(entry.envelope.id for entry in stored if entry.envelope is not None)
        self.stats.stored += len(stored)
        self.stats.duplicates += sum(1 for entry in entries if entry.duplicate)
        for entry in entries:
            if entry.dead is not None:
                self.stats.deadletters[entry.dead.reason] += 1
                self._consumer.publish(entry.dead.destination, entry.dead.to_json())
        self._publish_receipts(entries)
        self._consumer.ack(batch)
        self.stats.batches += 1
        return True

    def _skip_duplicates(self, entries: list[_Entry]) -> None:
        """Mark accepted messages stored lately, or earlier in this batch, as duplicates."""
        in_batch: set[str] = set()
        for entry in entries:
            if entry.envelope is None or entry.dead is not None:
                continue
            message_id = entry.envelope.id
            if message_id in in_batch or self._recent.seen(message_id):
                entry.points, entry.duplicate = [], True
            else:
                in_batch.add(message_id)

    def _publish_receipts(self, entries: list[_Entry]) -> None:
        """Name every accepted message's seq, per device; call only after the write."""
        seqs: defaultdict[tuple[str, str], list[int]] = defaultdict(list)
        for entry in entries:
            if entry.envelope is not None:
                seqs[entry.envelope.station, entry.envelope.device].append(entry.envelope.seq)
        for (station, device), device_seqs in seqs.items():
            topic = str(DeviceTopic(station, device, Channel.RECEIPT))
            for receipt, payload in encoded_receipts(device, device_seqs, by=self._name):
                self._consumer.publish(topic, payload)
                self.stats.receipts += 1
                self.stats.receipted += receipt.count()

    def _entry(self, message: Inbound, received_ns: int) -> _Entry:
        envelope: AnyEnvelope | None = None
        try:
            envelope = self._accept(message)
            return _Entry(message, to_points(envelope), envelope)
        except ContractError as exc:
            entry = self._dead_entry(message, exc.reason, str(exc), received_ns)
        except Exception as exc:  # a bug met by one message must not stop the others
            # Type only: an exception's text may quote the payload, which may be personal.
            log.error(
                "%s: unexpected %s on a message from %s; dead-lettered",
                self._name,
                type(exc).__name__,
                message.topic[:200],
            )
            log.debug("traceback", exc_info=True)
            entry = self._dead_entry(message, "internal", type(exc).__name__, received_ns)
        # Accepted, then refused by a converter: recorded as a dead letter, so receipted.
        entry.envelope = envelope
        return entry

    def _accept(self, message: Inbound) -> AnyEnvelope:
        """The envelope, checked against its topic and, with a registry, the device's
        registered station and role."""
        envelope = accept(message)
        if self._registry is not None:
            check_identity(self._registry, envelope)
        return envelope

    @staticmethod
    def _dead_entry(message: Inbound, reason: str, error: str, received_ns: int) -> _Entry:
        record = DeadLetter.of(
            reason=reason,
            error=error,
            topic=message.topic,
            payload=message.payload,
            received_ns=received_ns,
        )
        return _Entry(message, [deadletter_point(record)], dead=record)

    def _write_with_retry(self, entries: list[_Entry], stop: threading.Event) -> bool:
        delay = self._config.retry_initial_s
        failing_since: float | None = None
        while True:
            try:
                self._write(entries)
            except StoreError as exc:
                # Down, or misconfigured (credentials, missing database): nothing may be
                # acknowledged until it is stored, so retry until it works or we stop.
                if failing_since is None:
                    log.error("%s: store write failed, retrying with backoff: %s", self._name, exc)
                    failing_since = time.monotonic()
            else:
                if failing_since is not None:
                    log.info(
                        "%s: store accepts writes again after %.1f s",
                        self._name,
                        time.monotonic() - failing_since,
                    )
                return True
            self.stats.store_retries += 1
            if stop.wait(delay * random.uniform(0.5, 1.0)):
                return False
            delay = min(delay * 2, self._config.retry_max_s)

    def _write(self, entries: list[_Entry]) -> None:
        """Write every entry's points; entries the store rejects become dead letters."""
        points = [point for entry in entries for point in entry.points]
        try:
            self._store.write(points)
        except StoreRejected as exc:
            if len(entries) == 1:
                self._reject(entries[0], exc)
            else:
                middle = len(entries) // 2
                self._write(entries[:middle])
                self._write(entries[middle:])

    def _reject(self, entry: _Entry, exc: StoreRejected) -> None:
        if entry.dead is not None:
            # The store refused even the dead-letter record: nothing more can be kept.
            log.error("%s: store refused a dead-letter record: %s", self._name, exc)
            return
        log.warning(
            "%s: store rejected a message from %s: %s", self._name, entry.message.topic, exc
        )
        dead = self._dead_entry(entry.message, "store", str(exc), time.time_ns())
        entry.points, entry.dead = dead.points, dead.dead
        self._write([entry])
