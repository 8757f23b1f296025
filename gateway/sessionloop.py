"""One thread working through one persistent MQTT session: the ledger's consumers.

The decision path (:mod:`gateway.decisions`) and the cold-chain engine
(:mod:`gateway.coldchain.worker`) each hold a session of their own and share this
skeleton: ``start()``/``stop()``, a loop that stops the gateway loudly on a bug (never
on input), envelopes checked against the registry, and ledger work retried with
backoff while the ledger is unavailable, with nothing acknowledged meanwhile.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TypeVar

from contracts import AnyEnvelope, ContractError
from contracts.alerts import AlertMessage
from gateway.consumer import Inbound, MqttConsumer
from gateway.ingest import accept
from gateway.ledger import LedgerUnavailable
from gateway.metrics import Counters
from gateway.registry import Registry, check_identity

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_RETRY_INITIAL_S = 0.1
_RETRY_MAX_S = 5.0


class SessionLoop:
    """Subclasses implement :meth:`step` (one turn of the loop) and name their counters'
    prefix; :meth:`start` runs ``step`` until :meth:`stop` or a failure."""

    prefix = "loop"
    """Counter prefix (``{prefix}.ignored.{reason}``, ``{prefix}.retries``)."""

    def __init__(
        self,
        consumer: MqttConsumer,
        registry: Registry,
        counters: Counters,
        *,
        name: str,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._consumer = consumer
        self._registry = registry
        self._counters = counters
        self._name = name
        self._on_failure = on_failure
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None

    def start(self) -> None:
        self._consumer.start()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        return self._consumer.wait_ready(timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._consumer.stop()

    def step(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.step()
        except Exception as exc:  # a bug, not input: stop loudly
            log.exception("%s: loop failed; stopping", self._name)
            self.failure = exc
            self._stop.set()
            if self._on_failure is not None:
                self._on_failure(exc)

    def _checked(self, message: Inbound) -> AnyEnvelope | None:
        """The message's envelope if it is valid and its device may send it; otherwise
        counted only (the telemetry path, which sees every message too, dead-letters it)."""
        try:
            envelope = accept(message)
            check_identity(self._registry, envelope)
        except ContractError as exc:
            self._counters.incr(f"{self.prefix}.ignored.{exc.reason}")
            return None
        return envelope

    def _retrying(
        self, work: Callable[[], _T], after_failure: Callable[[], None] | None = None
    ) -> _T | None:
        """``work()``, retried with jittered backoff while the ledger is unavailable
        (``after_failure`` runs before each retry); None if stopped meanwhile."""
        delay = _RETRY_INITIAL_S
        while True:
            try:
                return work()
            except LedgerUnavailable as exc:
                self._counters.incr(f"{self.prefix}.retries")
                log.error("%s: ledger unavailable, retrying: %s", self._name, exc)
                if self._stop.wait(delay * random.uniform(0.5, 1.0)):
                    return None
                delay = min(delay * 2, _RETRY_MAX_S)
                if after_failure is not None:
                    after_failure()

    def _notify(self, notify: Callable[[AlertMessage], object] | None, alert: AlertMessage) -> None:
        """Hand ``alert`` to the webhook notifier, if any; its failure is counted and
        logged, never allowed to stop the loop (the alert is in the ledger already)."""
        if notify is None:
            return
        try:
            notify(alert)
        except Exception as exc:
            self._counters.incr(f"{self.prefix}.notify_failed")
            log.error("%s: alert notifier failed: %s", self._name, type(exc).__name__)
