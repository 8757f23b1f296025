"""The cold-chain worker: readings in, alerts out, metrics written, one thread.

It holds its own persistent MQTT session on the ``coldchain`` group (readings, locker
events, command results), apart from the telemetry store's and the decision path's, so
an alert never waits for InfluxDB or a sort decision. For each batch: the envelopes are
checked against the registry, applied to the :class:`ColdChainEngine` in one ledger
transaction, together with the points that record each alert change for the telemetry
store (the ledger's ``store_outbox``, written to the store when it can take them, so
none is lost while it is down, a restart included); only after the commit are the
alerts published and handed to the notifier; then the batch is acknowledged. A crash before the
acknowledgement redelivers the batch, which the machines ignore (they run forwards on
device time) or apply idempotently.

Time is checked every ``tick_s``, but only once the session has caught up with what the
broker kept while the gateway was away: otherwise a restart would call every probe
offline before reading the backlog that says it was not.

The engine's state lives in one place: the gateway worker that runs this (worker 0,
and with several gateway hosts, one host's ``[coldchain]``). The ledger's ``coldchain``
lease enforces that: a second engine on the same ledger refuses to start
(:class:`EngineRunsElsewhere`), and one that lost its lease stops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from contracts import AlertsTopic
from contracts.alerts import AlertMessage
from gateway.coldchain.config import ColdChainConfig
from gateway.coldchain.engine import ColdChainEngine, Notice
from gateway.coldchain.reporting import Reporter
from gateway.consumer import Inbound, MqttConsumer
from gateway.convert import alert_point
from gateway.errors import GatewayError
from gateway.ledger import Lease, Ledger, LedgerConflict, LedgerError, LedgerTx, LedgerUnavailable
from gateway.metrics import Counters
from gateway.registry import Registry
from gateway.sessionloop import SessionLoop
from gateway.telemetry.model import StoreError, StoreRejected, TelemetryPoint, TelemetryStore

log = logging.getLogger(__name__)

_BATCH = 500
_FLUSH_BATCH = 500

Notify = Callable[[AlertMessage], object]
_T = TypeVar("_T")
_FLUSH_RETRY_S = 5.0
"""Seconds before the store, or the ledger for the lease, is tried again."""
LEASE = "coldchain"
LEASE_TTL = timedelta(seconds=60)
"""How long the cold-chain engine's ledger lease lasts unless renewed (every third of it):
a host that died is taken over by another after this."""


class EngineRunsElsewhere(GatewayError):
    """Another gateway host's cold-chain engine holds the ledger's lease."""


class ColdChainWorker(SessionLoop):
    prefix = "coldchain"

    def __init__(
        self,
        config: ColdChainConfig,
        consumer: MqttConsumer,
        ledger: Ledger,
        registry: Registry,
        store: TelemetryStore,
        counters: Counters,
        *,
        name: str,
        notify: Notify | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(consumer, registry, counters, name=name, on_failure=on_failure)
        self.engine = ColdChainEngine(config)
        self.config = config
        self._ledger = ledger
        self._store = store
        self._notify_alert = notify
        self._clock = clock
        self._reporter = Reporter(config, store, counters)
        self._kept = True  # points may wait in the ledger from before a restart
        self._lease_due = 0.0
        self._flush_after = 0.0
        self._next_tick = 0.0
        self.caught_up = threading.Event()
        self.ticks = 0
        """How often time was checked (tests wait on it)."""

    @staticmethod
    def subscription_client_id(client_id: str) -> str:
        return f"{client_id}-coldchain"

    def start(self) -> None:
        """Take the ledger's cold-chain lease (raises :class:`EngineRunsElsewhere` while
        another host holds it: two engines would raise every alert twice and overwrite
        each other's probe states), load the machines and start."""
        self._take_lease()
        self._store.open()
        with self._ledger.transaction() as tx:
            self.engine.load(tx)
        super().start()

    def stop(self) -> None:
        super().stop()
        self._store.close()
        try:
            with self._ledger.transaction() as tx:
                tx.release_lease(LEASE, self._name)
        except LedgerError as exc:  # it runs out by itself
            log.warning("%s: could not give the cold-chain lease up: %s", self._name, exc)

    def _take_lease(self) -> None:
        now = self._clock()
        try:
            other = self._lease_attempt(now)
        except LedgerConflict:  # another host inserted the lease at the same moment
            other = self._lease_attempt(now)
        if other is not None:
            raise EngineRunsElsewhere(
                f"the cold-chain engine already runs as {other.holder} on this ledger (its "
                f"lease runs to {other.expires_at.isoformat(timespec='seconds')}); only one "
                "gateway host may have a [coldchain] section"
            )
        self._lease_due = time.monotonic() + LEASE_TTL.total_seconds() / 3

    def _lease_attempt(self, now: datetime) -> Lease | None:
        with self._ledger.transaction() as tx:
            return tx.take_lease(LEASE, self._name, now, LEASE_TTL)

    def _renew_lease(self) -> None:
        """Renew the lease every third of its time; losing it (this host was away longer
        than the lease and another took over) stops this gateway loudly."""
        if time.monotonic() < self._lease_due:
            return
        try:
            self._take_lease()
        except LedgerUnavailable as exc:
            self._lease_due = time.monotonic() + _FLUSH_RETRY_S
            log.warning("%s: could not renew the cold-chain lease: %s", self._name, exc)

    def step(self) -> None:
        self._renew_lease()
        batch = self._consumer.take(_BATCH, 0, idle_timeout_s=0.2)
        if batch:
            self.process(batch)
        elif self._consumer.wait_ready(0):  # connected, and nothing more came
            self.caught_up.set()
        if self.caught_up.is_set() and time.monotonic() >= self._next_tick:
            self.timed(self._clock())
            self._next_tick = time.monotonic() + self.config.tick_s
        self._flush()

    # -- work ----------------------------------------------------------------------------

    def process(self, batch: list[Inbound]) -> bool:
        """Apply one batch, publish what it raised, acknowledge it; False if stopped."""
        envelopes = [env for env in map(self._checked, batch) if env is not None]
        notices = self._in_ledger(
            lambda tx: self._kept_with([n for e in envelopes for n in self.engine.apply(tx, e)], tx)
        )
        if notices is None:
            return False
        self._announce(notices)
        self._consumer.ack(batch)
        return True

    def timed(self, now: datetime) -> None:
        """What time and people did: due alarms, silences, escalations, acknowledgements;
        then the metrics of finished days and stays."""
        notices = self._in_ledger(
            lambda tx: self._kept_with(self.engine.people(tx, now) + self.engine.tick(tx, now), tx)
        )
        if notices:
            self._announce(notices)
        try:
            self._reporter.report(self._ledger, self.engine, now)
        except LedgerUnavailable as exc:  # measured again on a later tick
            self._counters.incr("coldchain.retries")
            log.error("%s: ledger unavailable for the figures: %s", self._name, exc)
        self.ticks += 1

    def _in_ledger(self, work: Callable[[LedgerTx], list[_T]]) -> list[_T] | None:
        """``work(tx)`` in one transaction, retried while the ledger is unavailable (the
        machines are reloaded from what was committed first); None if stopped."""

        def attempt() -> list[_T]:
            with self._ledger.transaction() as tx:
                return work(tx)

        return self._retrying(attempt, after_failure=self._reload)

    def _kept_with(self, notices: list[Notice], tx: LedgerTx) -> list[Notice]:
        """Keep the alert changes' points for the telemetry store in the transaction that
        makes the changes, so none is lost while the store is down, a restart included."""
        points = [alert_point(n.alert, n.change, n.at).to_json() for n in notices]
        tx.keep_points(points, self._clock())
        if points:
            self._kept = True
        return notices

    def _reload(self) -> None:
        try:
            with self._ledger.transaction(write=False) as tx:
                self.engine.load(tx)
        except LedgerUnavailable:
            pass  # the next attempt reloads again

    def _announce(self, notices: list[Notice]) -> None:
        for notice in notices:
            alert = notice.alert
            payload = alert.model_dump_json(by_alias=True).encode()
            self._consumer.publish(str(AlertsTopic(alert.station)), payload)
            self._consumer.publish(
                str(AlertsTopic(alert.station, notice.source)), payload, retain=True
            )
            self._counters.incr(f"coldchain.{notice.change}.{alert.kind}")
            log.info(
                "%s: %s %s %s (%s)", self._name, notice.change, alert.id, alert.kind, alert.subject
            )
            self._notify(self._notify_alert, alert)

    def _flush(self) -> None:
        """Kept alert points into the telemetry store, oldest first, each batch dropped
        from the ledger once stored; retried later while the store (or the ledger) is
        down."""
        while self._kept and time.monotonic() >= self._flush_after:
            try:
                with self._ledger.transaction(write=False) as tx:
                    kept = tx.kept_points(_FLUSH_BATCH)
                if kept:
                    self._store_points(kept)
                    with self._ledger.transaction() as tx:
                        tx.drop_kept_points([row_id for row_id, _ in kept])
            except (StoreError, LedgerUnavailable) as exc:
                self._flush_after = time.monotonic() + _FLUSH_RETRY_S
                self._counters.incr("coldchain.store_retries")
                log.warning("%s: alert events kept for later: %s", self._name, exc)
                return
            self._kept = len(kept) == _FLUSH_BATCH

    def _store_points(self, kept: list[tuple[int, Mapping[str, Any]]]) -> None:
        """Write kept points; ones the store can never take are counted and let go
        (raises ``StoreError`` for a store that is down)."""
        points: list[TelemetryPoint] = []
        for _, obj in kept:
            try:
                points.append(TelemetryPoint.from_json(obj))
            except ValueError as exc:
                self._counters.incr("coldchain.store_rejected")
                log.error("%s: a kept alert event is not a point: %s", self._name, exc)
        try:
            self._store.write(points)
        except StoreRejected as exc:  # will never be taken: do not let it block the rest
            self._counters.incr("coldchain.store_rejected", len(points))
            log.error(
                "%s: telemetry store refused %d alert events: %s", self._name, len(points), exc
            )
