"""The gateway's composition root: consumer, store and ingest loop, in one or more workers,
and the ledger path (decisions, cold chain) in worker 0 or in a process of its own.

Several workers are separate processes, each with its own client id and persistent
session on the same shared subscription, so ingest is not limited to one core. Workers
share nothing but the broker and the store.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from types import FrameType

from contracts.timestamps import utc_now
from gateway.alerts import unannounced_candidates
from gateway.clearance import Clearance
from gateway.coldchain.worker import ColdChainWorker
from gateway.config import GatewayConfig
from gateway.consumer import (
    COLDCHAIN_SUBSCRIPTION,
    LEDGER_SUBSCRIPTION,
    MqttConsumer,
    store_subscription,
)
from gateway.decisions import DecisionWorker, PickupNotifier
from gateway.ingest import Ingestor
from gateway.ledger import Ledger
from gateway.metrics import Counters, MetricsServer
from gateway.notify import Notifier, NotifyError
from gateway.personal import Keyring
from gateway.registry import Registry, load_registry
from gateway.telemetry import open_store

log = logging.getLogger(__name__)


class LedgerPath:
    """The ledger's side of a gateway: the decision path and (with ``[coldchain]``) the
    cold-chain engine, each on its own persistent session, sharing one :class:`Ledger`.

    It runs in ingest worker 0, or with ``[ledger] own_process = true`` in a process of
    its own (:class:`LedgerWorker`), where no telemetry ingest competes with decisions
    for the interpreter.
    """

    def __init__(
        self,
        config: GatewayConfig,
        registry: Registry,
        counters: Counters,
        *,
        client_id: str,
        on_failure: Callable[[BaseException], None],
        notify_pickup: PickupNotifier | None = None,
    ) -> None:
        assert config.ledger is not None
        self._counters = counters
        self.ledger = Ledger(config.ledger.url)
        self.registry = registry
        keyring = (
            Keyring.from_file(config.ledger.keys_file)
            if config.ledger.keys_file is not None
            else Keyring.from_env()
        )
        self.notifier = (
            Notifier(config.notify, counters, on_failure=on_failure)
            if config.notify is not None
            else None
        )
        notify = self.notifier.notify if self.notifier is not None else None
        ledger_id = DecisionWorker.subscription_client_id(client_id)
        self.decisions = DecisionWorker(
            MqttConsumer(
                config.broker,
                client_id=ledger_id,
                receive_maximum=config.ledger.receive_maximum,
                subscription=LEDGER_SUBSCRIPTION,
            ),
            Clearance(self.ledger, keyring),
            registry,
            counters,
            name=ledger_id,
            on_failure=on_failure,
            notify_pickup=notify_pickup,
            notify_alert=notify,
        )
        self.coldchain: ColdChainWorker | None = None
        if config.coldchain is not None:
            name = ColdChainWorker.subscription_client_id(client_id)
            self.coldchain = ColdChainWorker(
                config.coldchain,
                MqttConsumer(
                    config.broker,
                    client_id=name,
                    receive_maximum=config.ingest.receive_maximum,
                    subscription=COLDCHAIN_SUBSCRIPTION,
                ),
                self.ledger,
                registry,
                open_store(config.store),  # its own connection: stores are not shared
                counters,
                name=name,
                notify=notify,
                on_failure=on_failure,
            )

    def start(self) -> None:
        """Start the notifier, open the ledger, start the cold-chain engine (first: it
        refuses to run while another host's holds the ledger's lease, and then nothing
        else is left running), catch up missed notifications, start the decisions."""
        if self.notifier is not None:
            self.notifier.start()
        try:
            self.ledger.open()
            self.ledger.sync_registry(self.registry)
            if self.coldchain is not None:
                self.coldchain.start()
        except BaseException:
            self.ledger.close()
            if self.notifier is not None:
                self.notifier.stop()
            raise
        if self.notifier is not None:
            self._catch_up(self.notifier)
        self.decisions.start()

    def _catch_up(self, notifier: Notifier) -> None:
        """Queue the open alerts the webhook queue may have missed (:mod:`gateway.alerts`);
        a queue that cannot take them now does not stop the gateway from starting."""
        with self.ledger.transaction(write=False) as tx:
            missed = unannounced_candidates(tx, utc_now())
        try:
            notifier.catch_up(missed)
        except NotifyError as exc:
            self._counters.incr("notify.catch_up_failed")
            log.error("notify: could not queue the alerts it may have missed: %s", exc)

    def wait_ready(self, timeout: float) -> bool:
        ready = self.decisions.wait_ready(timeout)
        return ready and (self.coldchain is None or self.coldchain.wait_ready(timeout))

    def stop(self) -> None:
        self.decisions.stop()
        if self.coldchain is not None:
            self.coldchain.stop()
        self.ledger.close()
        if self.notifier is not None:
            self.notifier.stop()


class _Lifecycle:
    """Stop requests and failures, shared by the two kinds of worker."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self.failure: BaseException | None = None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until a stop was requested or a part of this worker failed."""
        return self._stop.wait(timeout)

    def request_stop(self) -> None:
        self._stop.set()

    def _failed(self, exc: BaseException) -> None:
        self.failure = exc
        self._stop.set()


def _metrics(
    config: GatewayConfig, sources: list[Callable[[], Mapping[str, int]]], offset: int, name: str
) -> MetricsServer | None:
    if config.metrics.port is None:
        return None
    port = config.metrics.port + offset if config.metrics.port else 0
    return MetricsServer(sources, host=config.metrics.host, port=port, worker=name)


class LedgerWorker(_Lifecycle):
    """A process that runs only the :class:`LedgerPath` (``[ledger] own_process``)."""

    def __init__(self, config: GatewayConfig, *, client_id: str, metrics_port_offset: int) -> None:
        super().__init__()
        assert config.registry is not None
        self.counters = Counters()
        self.path = LedgerPath(
            config,
            load_registry(config.registry),
            self.counters,
            client_id=client_id,
            on_failure=self._failed,
        )
        self.metrics = _metrics(
            config, [self.counters.snapshot], metrics_port_offset, f"{client_id}-ledger"
        )

    def start(self) -> None:
        if self.metrics is not None:
            self.metrics.start()
        self.path.start()
        log.info(
            "ledger path (decisions%s) in a process of its own, pid %d",
            ", cold chain" if self.path.coldchain is not None else "",
            os.getpid(),
        )

    def wait_ready(self, timeout: float) -> bool:
        return self.path.wait_ready(timeout)

    def stop(self) -> None:
        self._stop.set()
        self.path.stop()
        if self.metrics is not None:
            self.metrics.stop()


class GatewayWorker(_Lifecycle):
    """Ingest worker ``index``: one consumer with its ingest thread, and (``decisions=True``,
    with a ``[ledger]`` section) the :class:`LedgerPath`; its metrics on ``metrics.port +
    index``. ``start()`` connects, ``stop()`` drains and leaves."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        client_id: str,
        decisions: bool = True,
        index: int = 0,
        notify_pickup: PickupNotifier | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.client_id = client_id
        self.counters = Counters()
        self.registry = load_registry(config.registry) if config.registry is not None else None
        self.store = open_store(config.store)
        self.consumer = MqttConsumer(
            config.broker,
            client_id=client_id,
            receive_maximum=config.ingest.receive_maximum,
            subscription=store_subscription(config.ingest.workers, index),
        )
        self.ingestor = Ingestor(
            self.consumer, self.store, config.ingest, client_id, registry=self.registry
        )
        self.ledger_path: LedgerPath | None = None
        if decisions and config.ledger is not None and self.registry is not None:
            self.ledger_path = LedgerPath(
                config,
                self.registry,
                self.counters,
                client_id=client_id,
                on_failure=self._failed,
                notify_pickup=notify_pickup,
            )
        self.metrics = _metrics(
            config,
            [self.counters.snapshot, self.ingestor.stats.as_counts],
            index,
            client_id,
        )
        self._thread: threading.Thread | None = None

    @property
    def coldchain(self) -> ColdChainWorker | None:
        return self.ledger_path.coldchain if self.ledger_path is not None else None

    def wait_ready(self, timeout: float) -> bool:
        """Connected and subscribed: the store's session and, if any, the ledger path's."""
        ready = self.consumer.wait_ready(timeout)
        return ready and (self.ledger_path is None or self.ledger_path.wait_ready(timeout))

    def start(self) -> None:
        if self.metrics is not None:
            self.metrics.start()
        if self.ledger_path is not None:
            self.ledger_path.start()
        self.store.open()
        self.consumer.start()
        self._thread = threading.Thread(
            target=self._ingest, name=f"{self.client_id}-ingest", daemon=True
        )
        self._thread.start()

    def _ingest(self) -> None:
        try:
            self.ingestor.run(self._stop)
        except Exception as exc:  # a bug, not input: stop this worker loudly, not silently
            log.exception("%s: ingest loop failed; stopping", self.client_id)
            self._failed(exc)

    def stop(self) -> None:
        """Finish the batch in hand, disconnect; unacknowledged messages stay at the broker."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.consumer.stop()
        self.store.close()
        if self.ledger_path is not None:
            self.ledger_path.stop()
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

    One worker runs in this process; more (or a ledger process of its own, ``[ledger]
    own_process``) run in child processes (``setup_logging`` is called in each, since
    spawned children start with a bare logging configuration). If a worker dies, the
    others are stopped too and the status is 1, for the service manager to restart the
    gateway as a whole.
    """
    ids = worker_ids(config)
    own = config.ledger is not None and config.ledger.own_process
    if len(ids) == 1 and not own:
        return _run_worker(config, ids[0], 0, None)
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_run_worker, args=(config, client_id, index, setup_logging), name=client_id
        )
        for index, client_id in enumerate(ids)
    ]
    if own:
        name = f"{config.broker.client_id}-ledger"
        args = (config, config.broker.client_id, len(ids), setup_logging)
        processes.append(context.Process(target=_run_ledger, args=args, name=name))
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
    """An ingest worker's life: start, wait for SIGINT, SIGTERM or a failure, stop cleanly.

    Worker 0 also runs the :class:`LedgerPath` (one per gateway: the ledger's decisions
    are serialised there, and the cold-chain engine's probe states live there), unless
    it has a process of its own; worker ``i`` serves its metrics on ``metrics.port + i``.
    Returns the exit status; in a child process, a failure ends the process with it.
    """
    own = config.ledger is not None and config.ledger.own_process
    return _serve(
        lambda: GatewayWorker(
            config, client_id=client_id, decisions=index == 0 and not own, index=index
        ),
        setup_logging,
    )


def _run_ledger(
    config: GatewayConfig, client_id: str, index: int, setup_logging: Callable[[], None] | None
) -> int:
    """The ledger process's life (``[ledger] own_process``); metrics on ``port + index``."""
    return _serve(
        lambda: LedgerWorker(config, client_id=client_id, metrics_port_offset=index),
        setup_logging,
    )


def _serve(
    make: Callable[[], GatewayWorker | LedgerWorker], setup_logging: Callable[[], None] | None
) -> int:
    if setup_logging is not None:
        setup_logging()
    worker = make()
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
