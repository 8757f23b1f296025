"""Outcome counters, and ``/metrics`` for Prometheus.

Every outcome the gateway reaches is counted under a dotted name (``sort.routed``,
``sort.exception.no_xray``, ``deadletter.identity``, ``ingest.stored`` ...).
:class:`Counters` is the one place they are kept in a process; the ``/metrics`` endpoint
reads it at scrape time (``postedge_outcomes_total{outcome="sort.routed"}``), so nothing
is counted twice. Each gateway worker process serves its own counters (on
``metrics.port + worker index``), as Prometheus expects of a multi-process service.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client import start_http_server
from prometheus_client.core import CollectorRegistry, CounterMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.metrics_core import Metric


class Counters:
    """Thread-safe outcome counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, counts: Mapping[str, int]) -> None:
        with self._lock:
            self._counts.update(counts)

    def incr(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


Source = Callable[[], Mapping[str, int]]
"""A function returning named counts at scrape time."""


class _OutcomeCollector(Collector):
    def __init__(self, sources: Sequence[Source], worker: str) -> None:
        self._sources = list(sources)
        self._worker = worker

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "postedge_outcomes",
            "Outcomes the gateway reached, by name (decisions, dead letters, ingest).",
            labels=["outcome", "worker"],
        )
        counts: Counter[str] = Counter()
        for source in self._sources:
            counts.update(source())
        for name, value in sorted(counts.items()):
            family.add_metric([name, self._worker], value)
        yield family


class MetricsServer:
    """``GET /metrics`` on ``host:port`` in a daemon thread; ``start()``/``stop()``."""

    def __init__(self, sources: Sequence[Source], *, host: str, port: int, worker: str) -> None:
        self._registry = CollectorRegistry()
        self._registry.register(_OutcomeCollector(sources, worker))
        self._host = host
        self.port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._server, self._thread = start_http_server(
            self.port, addr=self._host, registry=self._registry
        )
        self.port = self._server.server_port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
