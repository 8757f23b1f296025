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

from gateway.config import GatewayConfig
from gateway.consumer import MqttConsumer
from gateway.ingest import Ingestor
from gateway.telemetry import open_store

log = logging.getLogger(__name__)


class GatewayWorker:
    """One consumer with its ingest thread. ``start()`` connects, ``stop()`` drains and leaves."""

    def __init__(self, config: GatewayConfig, *, client_id: str) -> None:
        self.config = config
        self.client_id = client_id
        self.store = open_store(config.store)
        self.consumer = MqttConsumer(
            config.broker, client_id=client_id, receive_maximum=config.ingest.receive_maximum
        )
        self.ingestor = Ingestor(self.consumer, self.store, config.ingest, client_id)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None

    def start(self) -> None:
        self.store.open()
        self.consumer.start()
        self._thread = threading.Thread(
            target=self._ingest, name=f"{self.client_id}-ingest", daemon=True
        )
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until a stop was requested or the ingest loop failed."""
        return self._stop.wait(timeout)

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
        return _run_worker(config, ids[0], None)
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_run_worker, args=(config, client_id, setup_logging), name=client_id)
        for client_id in ids
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
    config: GatewayConfig, client_id: str, setup_logging: Callable[[], None] | None
) -> int:
    """A worker's life: start, wait for SIGINT, SIGTERM or a failure, stop cleanly.

    Returns the exit status; in a child process, a failure ends the process with it.
    """
    if setup_logging is not None:
        setup_logging()
    worker = GatewayWorker(config, client_id=client_id)
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
