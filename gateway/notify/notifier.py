"""Alerts to webhooks: queued durably, delivered by one thread, retried, rate-limited.

:meth:`Notifier.notify` picks the webhooks that want an alert (station filter,
``min_severity``), commits one row per webhook to the :class:`DeliveryQueue` and wakes
the delivery thread; it never waits for the network, so a dead robot cannot slow the
gateway's alert path.

The delivery thread sends due rows with one urllib3 pool. A 2xx answer (and, from the
robots, ``errcode`` 0) is a delivery; anything else is retried after
``retry_initial_s`` doubling up to ``retry_max_s``, each wait jittered to 50-100 % so
gateways that lost the network together do not retry together, until
``give_up_after_s`` after the row was queued. Each (webhook, station) has a token bucket
of ``per_station_per_minute``: a flapping probe cannot flood a group chat (or trip the
robots' own limit of about 20 messages a minute); a row whose bucket is empty waits in
the queue, it is never dropped. The buckets live in memory and start full after a
restart.

Webhook URLs carry the robots' tokens and payloads are the alert itself, so logs name
the webhook, the alert id and the error type, never a URL or a payload.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Final

import urllib3
from pydantic import ValidationError
from urllib3.exceptions import HTTPError

from contracts.alerts import AlertMessage
from gateway.metrics import Counters
from gateway.notify.config import NotifyConfig, WebhookConfig
from gateway.notify.errors import NotifyError
from gateway.notify.formats import WebhookRequest, answer_error, render
from gateway.notify.queue import Delivery, DeliveryQueue, QueueError

log = logging.getLogger(__name__)

_BATCH: Final = 50
_IDLE_MAX_S: Final = 1.0
"""The longest the thread sleeps without looking at the queue (the clock may be moved)."""
_QUEUE_RETRY_S: Final = 5.0


class TokenBuckets:
    """A bucket of ``per_minute`` tokens per key, refilled continuously, starting full."""

    def __init__(self, per_minute: int) -> None:
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}

    def take(self, key: tuple[str, str], now: float) -> float:
        """Take a token and return 0, or return the seconds until one is there."""
        tokens, at = self._buckets.get(key, (self._capacity, now))
        tokens = min(self._capacity, tokens + max(0.0, now - at) * self._rate)
        if tokens >= 1.0 - 1e-9:
            self._buckets[key] = (max(tokens - 1.0, 0.0), now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self._rate


class Notifier:
    """Webhook delivery of alerts; ``start()``/``stop()``, then :meth:`notify` per alert."""

    def __init__(
        self,
        config: NotifyConfig,
        counters: Counters,
        *,
        clock: Callable[[], float] = time.time,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._config = config
        self._on_failure = on_failure
        self._counters = counters
        self._clock = clock
        self._queue = DeliveryQueue(config.queue_path, clock=clock)
        self._buckets = TokenBuckets(config.per_station_per_minute)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._http: urllib3.PoolManager | None = None
        self.failure: BaseException | None = None

    def start(self) -> None:
        """Open the queue and start delivering, pending rows from a previous run first."""
        self._queue.open()
        self._queue.reschedule(self._clock())
        self._http = urllib3.PoolManager(retries=False)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the request in flight (at most its webhook's ``timeout_s``) and close."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._http is not None:
            self._http.clear()
            self._http = None
        self._queue.close()

    def notify(self, alert: AlertMessage) -> int:
        """Queue ``alert`` for the webhooks that want it; committed when this returns.
        Returns the deliveries added (none for a state each webhook has had already).

        Raises :class:`NotifyError` if it could not be queued (not started, disk full).
        """
        names = [w.name for w in self._config.webhooks if w.wants(alert.station, alert.severity)]
        if not names:
            return 0
        if self._thread is None:
            raise NotifyError("the notifier is not started")
        added = self._queue.add(alert, names, self._clock())
        if added:
            self._counters.incr("notify.queued", added)
            self._wake.set()
        return added

    def catch_up(self, alerts: Iterable[AlertMessage]) -> int:
        """:meth:`notify` each of ``alerts`` (see :mod:`gateway.alerts`), counting what
        was missing as ``notify.caught_up``; returns that number."""
        added = sum(self.notify(alert) for alert in alerts)
        if added:
            self._counters.incr("notify.caught_up", added)
            log.warning("notify: %d alert notifications were missing from the queue", added)
        return added

    def wake(self) -> None:
        """Look at the queue now (after the network came back, or a test moved the clock)."""
        self._wake.set()

    def pending(self) -> int:
        """Rows neither delivered nor given up."""
        return self._queue.pending_count()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    more = self._deliver_due()
                except QueueError as exc:
                    log.error("notify: queue unavailable, retrying: %s", exc)
                    self._stop.wait(_QUEUE_RETRY_S)
                    continue
                if not more:
                    self._wake.wait(self._idle_wait())
        except Exception as exc:  # a bug, not a webhook's failure: stop loudly
            log.exception("notify: delivery loop failed; stopping")
            self.failure = exc
            if self._on_failure is not None:
                self._on_failure(exc)  # the gateway stops: alerts would queue unseen

    def _idle_wait(self) -> float:
        next_at = self._queue.next_due()
        if next_at is None:
            return _IDLE_MAX_S
        return min(max(next_at - self._clock(), 0.0), _IDLE_MAX_S)

    def _deliver_due(self) -> bool:
        """Deliver what is due; True if a full batch was taken (more may be due)."""
        rows = self._queue.due(self._clock(), _BATCH)
        for row in rows:
            if self._stop.is_set():
                return False
            self._deliver(row)
        return len(rows) == _BATCH

    def _deliver(self, row: Delivery) -> None:
        webhook = self._config.webhook(row.webhook)
        if webhook is None:
            self._give_up(row, "the webhook is no longer configured")
            return
        wait = self._buckets.take((row.webhook, row.station), self._clock())
        if wait > 0:
            self._queue.defer(row.id, self._clock() + wait)
            self._counters.incr("notify.rate_limited")
            return
        try:
            alert = AlertMessage.model_validate_json(row.payload)
        except ValidationError:  # queued by an older version whose contract has changed
            self._give_up(row, "the queued alert no longer matches the alert contract")
            return
        error = self._send(render(alert, webhook, self._clock()), webhook)
        if error is None:
            self._queue.delivered(row.id, self._clock())
            self._counters.incr("notify.delivered")
            log.info("notify: alert %s delivered to %s", row.alert_id, row.webhook)
        elif self._clock() - row.created_at >= self._config.give_up_after_s:
            self._give_up(row, error)
        else:
            self._retry(row, error)

    def _send(self, request: WebhookRequest, webhook: WebhookConfig) -> str | None:
        """POST ``request``; None if delivered, else why not (never the URL: it has tokens)."""
        assert self._http is not None
        try:
            response = self._http.request(
                "POST",
                request.url,
                body=request.body,
                headers=request.headers,
                timeout=urllib3.Timeout(total=webhook.timeout_s),
                retries=False,
                redirect=False,
            )
        except (HTTPError, OSError) as exc:
            return _describe(exc)
        return answer_error(webhook.format, response.status, response.data)

    def _retry(self, row: Delivery, error: str) -> None:
        exponent = min(row.attempts, 30)  # row.attempts failed before this one
        delay = min(self._config.retry_initial_s * 2.0**exponent, self._config.retry_max_s)
        delay *= random.uniform(0.5, 1.0)
        deadline = row.created_at + self._config.give_up_after_s
        next_at = min(self._clock() + delay, deadline)
        self._queue.retry(row.id, next_at, error)
        self._counters.incr("notify.retried")
        log.warning(
            "notify: alert %s not delivered to %s (attempt %d), retrying in %.1f s: %s",
            row.alert_id,
            row.webhook,
            row.attempts + 1,
            max(next_at - self._clock(), 0.0),
            error,
        )

    def _give_up(self, row: Delivery, error: str) -> None:
        self._queue.give_up(row.id, self._clock(), error)
        self._counters.incr("notify.gave_up")
        log.error(
            "notify: gave up on alert %s to %s after %d attempts: %s",
            row.alert_id,
            row.webhook,
            row.attempts + 1,
            error,
        )


def _describe(exc: BaseException) -> str:
    """The error's type and its cause's type: ``str(exc)`` of urllib3 can hold the URL."""
    cause = exc.__cause__ or exc.__context__
    return type(exc).__name__ if cause is None else f"{type(exc).__name__} ({type(cause).__name__})"
