"""The gateway's composition root: consumer, store and ingest loop, in one or more workers.

Several workers are separate processes, each with its own client id and persistent
session on the same shared subscription, so ingest is not limited to one core. Workers
share nothing but the broker and the store.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

from gateway.clearance import Clearance
from gateway.coldchain.worker import ColdChainWorker
from gateway.config import GatewayConfig
from gateway.consumer import COLDCHAIN_SUBSCRIPTION, LEDGER_SUBSCRIPTION, MqttConsumer
from gateway.decisions import DecisionWorker, PickupNotifier
from gateway.ingest import Ingestor
from gateway.ledger import Ledger
from gateway.metrics import Counters, MetricsServer
from gateway.personal import Keyring
from gateway.registry import Registry, load_registry
from gateway.telemetry import open_store

log = logging.getLogger(__name__)


class GatewayWorker:
    """One consumer with its ingest thread, and (``decisions=True``, with a ``[ledger]``
    section) the decision path. ``start()`` connects, ``stop()`` drains and leaves."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        client_id: str,
        decisions: bool = True,
        metrics_port_offset: int = 0,
        notify_pickup: PickupNotifier | None = None,
    ) -> None:
        self.config = config
        self.client_id = client_id
        self.counters = Counters()
        self.registry = load_registry(config.registry) if config.registry is not None else None
        self.store = open_store(config.store)
        self.consumer = MqttConsumer(
            config.broker, client_id=client_id, receive_maximum=config.ingest.receive_maximum
        )
        self.ingestor = Ingestor(
            self.consumer, self.store, config.ingest, client_id, registry=self.registry
        )
        self.ledger: Ledger | None = None
        self.decisions: DecisionWorker | None = None
        self.coldchain: ColdChainWorker | None = None
        if decisions and config.ledger is not None and self.registry is not None:
            self.ledger = Ledger(config.ledger.url)
            self.coldchain = self._coldchain(config, self.ledger, self.registry, client_id)
            keyring = (
                Keyring.from_file(config.ledger.keys_file)
                if config.ledger.keys_file is not None
                else Keyring.from_env()
            )
            ledger_id = DecisionWorker.subscription_client_id(client_id)
            self.decisions = DecisionWorker(
                MqttConsumer(
                    config.broker,
                    client_id=ledger_id,
                    receive_maximum=config.ledger.receive_maximum,
                    subscription=LEDGER_SUBSCRIPTION,
                ),
                Clearance(self.ledger, keyring),
                self.registry,
                self.counters,
                name=ledger_id,
                on_failure=self._decisions_failed,
                notify_pickup=notify_pickup,
            )
        self.metrics: MetricsServer | None = None
        if config.metrics.port is not None:
            port = config.metrics.port + metrics_port_offset if config.metrics.port else 0
            self.metrics = MetricsServer(
                [self.counters.snapshot, self.ingestor.stats.as_counts],
                host=config.metrics.host,
                port=port,
                worker=client_id,
            )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None

    def _coldchain(
        self, config: GatewayConfig, ledger: Ledger, registry: Registry, client_id: str
    ) -> ColdChainWorker | None:
        if config.coldchain is None:
            return None
        name = ColdChainWorker.subscription_client_id(client_id)
        consumer = MqttConsumer(
            config.broker,
            client_id=name,
            receive_maximum=config.ingest.receive_maximum,
            subscription=COLDCHAIN_SUBSCRIPTION,
        )
        return ColdChainWorker(
            config.coldchain,
            consumer,
            ledger,
            registry,
            open_store(config.store),  # its own connection: stores are not shared by threads
            self.counters,
            name=name,
            on_failure=self._decisions_failed,
        )

    def wait_ready(self, timeout: float) -> bool:
        """Connected and subscribed: the store's session and, if any, the decision path's
        and the cold-chain engine's."""
        ready = self.consumer.wait_ready(timeout)
        ready = ready and (self.decisions is None or self.decisions.wait_ready(timeout))
        return ready and (self.coldchain is None or self.coldchain.wait_ready(timeout))

    def start(self) -> None:
        if self.metrics is not None:
            self.metrics.start()
        if self.ledger is not None and self.decisions is not None and self.registry is not None:
            self.ledger.open()
            self.ledger.sync_registry(self.registry)
            self.decisions.start()
            if self.coldchain is not None:
                self.coldchain.start()
        self.store.open()
        self.consumer.start()
        self._thread = threading.Thread(
            target=self._ingest, name=f"{self.client_id}-ingest", daemon=True
        )
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until a stop was requested or the ingest loop or decision path failed."""
        return self._stop.wait(timeout)

    def _decisions_failed(self, exc: BaseException) -> None:
        self.failure = exc
        self._stop.set()

    def request_stop(self) -> None:
        self._stop.set()

    def _ingest(self) -> None:
        try:
            self.ingestor.run(self._stop)
        except Exception as exc:  # a bug, not input: stop this worker loudly, not silently
            log.exception("%s: ingest loop failed; stopping", self.client_id)
            self.failure = exc
            self._stop.set()

    def stop(self) -> None:
        """Finish the batch in hand, disconnect; unacknowledged messages stay at the broker."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.consumer.stop()
        self.store.close()
        if self.decisions is not None:
            self.decisions.stop()
        if self.coldchain is not None:
            self.coldchain.stop()
        if self.ledger is not None:
            self.ledger.close()
        if self.metrics is not None:
            self.metrics.stop()
        log.info("%s: stopped; %s", self.client_id, self.ingestor.stats.summary())


def worker_ids(config: GatewayConfig) -> list[str]:
    base = config.broker.client_id
    if config.ingest.workers == 1:
        return [base]
    return [f"{base}-{index}" for index in range(config.ingest.workers)]


def run_gateway(config: GatewayConfig, setup_logging: Callable[[], None] | None = None) -> int:
    """Run until SIGINT or SIGTERM; return the exit status.

    One worker runs in this process; more run in child processes (``setup_logging`` is
    called in each, since spawned children start with a bare logging configuration). If a
    worker dies, the others are stopped too and the status is 1, for the service manager
    to restart the gateway as a whole.
    """
    ids = worker_ids(config)
    if len(ids) == 1:
        return _run_worker(config, ids[0], 0, None)
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_run_worker, args=(config, client_id, index, setup_logging), name=client_id
        )
        for index, client_id in enumerate(ids)
    ]
    stopping = threading.Event()
    failed = False

    def forward(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        for process in processes:
            if process.is_alive():
                process.terminate()

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for process in processes:
            process.start()
        remaining = list(processes)
        while remaining:
            multiprocessing.connection.wait([process.sentinel for process in remaining])
            ended = [process for process in remaining if not process.is_alive()]
            remaining = [process for process in remaining if process.is_alive()]
            if not stopping.is_set() and ended:
                log.error(
                    "worker %s exited with %s; stopping the gateway",
                    ended[0].name,
                    ended[0].exitcode,
                )
                failed = True
                forward(signal.SIGTERM, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if failed else 0


def _run_worker(
    config: GatewayConfig, client_id: str, index: int, setup_logging: Callable[[], None] | None
) -> int:
    """A worker's life: start, wait for SIGINT, SIGTERM or a failure, stop cleanly.

    Worker 0 also runs the decision path (one per gateway: the ledger's decisions are
    serialised there) and the cold-chain engine (its probe states live there); worker ``i``
    serves its metrics on ``metrics.port + i``.
    Returns the exit status; in a child process, a failure ends the process with it.
    """
    if setup_logging is not None:
        setup_logging()
    worker = GatewayWorker(
        config, client_id=client_id, decisions=index == 0, metrics_port_offset=index
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: worker.request_stop())
    worker.start()
    try:
        worker.wait()
    finally:
        worker.stop()
    status = 1 if worker.failure is not None else 0
    if status and multiprocessing.parent_process() is not None:
        sys.exit(status)
    return status
