"""End-to-end delivery through power cuts, broker crashes and gateway crashes.

The edge agent runs as its own process on a simulated probe bus and is killed with
SIGKILL (a power cut, as far as the agent can tell); the broker and the gateway are
killed too. Every reading the agent committed to its outbox must reach the telemetry
store exactly once, in order: the outbox's persistent ``enqueued`` counter says how
many readings it ever took, and the store must hold exactly that many distinct ones.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge.outbox import Outbox
from firmware_bridge.sim.probe import ProbeSimulator, Scenario, SimulatedProbe
from gateway.config import BrokerConfig
from gateway.consumer import create_session
from gateway.telemetry import TelemetryStore, open_store
from gateway.telemetry.config import SqliteStoreConfig
from postedge.localservers import Mosquitto
from tests.conftest import GATEWAY_PASSWORD, GATEWAY_USER, device_password
from tests.helpers import BackgroundLoop, gateway_worker, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.hil]

STATION = "village-7"
DEVICE = "dev1"
PROBES = ("cold", "freezer")
GATEWAY_ID = "gw-delivery"


class Station:
    """A probe simulator, an edge agent process (started and killed at will), and its files."""

    def __init__(self, tmp_path: Path, broker: Mosquitto, background: BackgroundLoop) -> None:
        self.tmp_path = tmp_path
        self.broker = broker
        self.background = background
        self.sim = ProbeSimulator(
            [
                SimulatedProbe(unit=1, temperature_register=0, humidity_register=None,
                               scenario=Scenario.drift(3.0, per_minute=30.0)),
                SimulatedProbe(unit=2, temperature_register=0, humidity_register=None,
                               scenario=Scenario.steady(-19.0, noise=0.5, seed=3)),
            ]
        )  # fmt: skip
        self.agent: subprocess.Popen[bytes] | None = None
        self.outputs: list[bytes] = []
        self.config = tmp_path / "station.toml"
        self.outbox_path = tmp_path / "edge-data" / "outbox.sqlite"

    def start_sim(self) -> None:
        self.background.run(self.sim.start())
        self.config.write_text(
            f'station = "{STATION}"\ndata_dir = "edge-data"\n\n'
            f'[broker]\nhost = "{self.broker.host}"\nport = {self.broker.port}\n'
            "reconnect_min_s = 0.1\nreconnect_max_s = 0.5\n\n"
            "[limits]\nreceipt_timeout_s = 3\n\n"
            "[health]\ninterval_s = 3600\n\n"
            f'[[devices]]\nid = "{DEVICE}"\npassword = "{device_password(DEVICE)}"\n'
            "interval_s = 0.1\n\n"
            f'[[devices.modbus]]\nport = "{self.sim.device_path}"\ntimeout_s = 0.3\n\n'
            f'[[devices.modbus.probes]]\nid = "{PROBES[0]}"\nunit = 1\n'
            'temperature = { register = 0, table = "holding", scale = 0.1, signed = true }\n\n'
            f'[[devices.modbus.probes]]\nid = "{PROBES[1]}"\nunit = 2\n'
            'temperature = { register = 0, table = "holding", scale = 0.1, signed = true }\n'
        )

    def stop_sim(self) -> None:
        """No more readings: the agent's probes time out from now on."""
        self.background.run(self.sim.stop())

    def start_agent(self) -> None:
        command = [sys.executable, "-m", "postedge.cli", "edge", "run", str(self.config)]
        self.agent = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def kill_agent(self) -> None:
        assert self.agent is not None
        self.agent.send_signal(signal.SIGKILL)
        self.outputs.append(self.agent.communicate(timeout=10)[0])
        self.agent = None

    def stop_agent(self) -> int:
        assert self.agent is not None
        self.agent.send_signal(signal.SIGTERM)
        output, _ = self.agent.communicate(timeout=20)
        self.outputs.append(output)
        code = self.agent.returncode
        self.agent = None
        return code

    def outbox_depth(self) -> int:
        if not self.outbox_path.exists():
            return -1
        with Outbox(self.outbox_path, max_bytes=1 << 30) as outbox:
            return outbox.depth(DEVICE)

    def enqueued_readings(self) -> int:
        with Outbox(self.outbox_path, max_bytes=1 << 30) as outbox:
            return outbox.stats().enqueued.get("temperature", 0)

    def close(self) -> None:
        if self.agent is not None:
            self.agent.kill()
            self.outputs.append(self.agent.communicate()[0])
        if self.sim.link is not None or getattr(self.sim, "running", False):
            self.background.run(self.sim.stop())


def stored_readings(store: TelemetryStore) -> dict[str, list[tuple[int, int, str]]]:
    """(time, seq, message id) of every stored reading, per probe, oldest first.

    One query per probe: the seq is the last part of the message id, so no second query
    can see a different moment of a store the gateway is writing to.
    """
    result = {}
    for probe in PROBES:
        tags = {"station": STATION, "device": DEVICE, "probe": probe}
        ids = store.query_series("temperature", "msg_id", tags)
        result[probe] = [
            (v.time_ns, int(str(v.value).rsplit(":", 1)[1]), str(v.value)) for v in ids
        ]
    return result


def count_readings(store: TelemetryStore) -> int:
    return sum(len(values) for values in stored_readings(store).values())


def assert_exactly_once_in_order(store: TelemetryStore, enqueued: int) -> None:
    readings = stored_readings(store)
    total = sum(len(values) for values in readings.values())
    ids = {msg_id for values in readings.values() for _, _, msg_id in values}
    assert len(ids) == total, "a reading is stored twice under different timestamps"
    assert total == enqueued, f"{enqueued} readings committed at the edge, {total} stored"
    for probe, values in readings.items():
        seqs = [seq for _, seq, _ in values]
        assert seqs == sorted(set(seqs)), f"{probe}: readings out of order or repeated"


@pytest.fixture
def background() -> Iterator[BackgroundLoop]:
    with BackgroundLoop() as loop:
        yield loop


@pytest.fixture
def station(tmp_path: Path, mosquitto: Mosquitto, background: BackgroundLoop) -> Iterator[Station]:
    station = Station(tmp_path, mosquitto, background)
    station.start_sim()
    yield station
    station.close()


@pytest.fixture
def store_config(tmp_path: Path) -> SqliteStoreConfig:
    return SqliteStoreConfig(kind="sqlite", path=tmp_path / "telemetry.sqlite")


@pytest.fixture
def store(store_config: SqliteStoreConfig) -> Iterator[TelemetryStore]:
    store = open_store(store_config)
    store.open()
    yield store
    store.close()


def drain_and_stop(station: Station) -> None:
    """Stop new readings, let the outbox empty through receipts, stop the agent cleanly."""
    station.stop_sim()
    wait_until(lambda: station.outbox_depth() == 0, timeout=60, what="the outbox to drain")
    assert station.stop_agent() == 0, station.outputs[-1].decode()[-2000:]


def test_twenty_power_cuts_lose_and_duplicate_nothing(
    station: Station, mosquitto: Mosquitto, store_config: SqliteStoreConfig,
    store: TelemetryStore,
) -> None:  # fmt: skip
    """SIGKILL at random points while streaming, 20 times: each reading stored once, in order."""
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    worker = gateway_worker(mosquitto, store_config, client_id=GATEWAY_ID)
    worker.start()
    try:
        assert worker.consumer.wait_ready(10)
        for _ in range(20):
            before = count_readings(store)
            station.start_agent()
            more = rng.randint(1, 40)
            wait_until(
                lambda before=before, more=more: count_readings(store) >= before + more,
                timeout=30,
                what=f"{more} more readings (seed {seed})",
            )
            station.kill_agent()
        before = count_readings(store)
        station.start_agent()
        wait_until(lambda: count_readings(store) > before + 10, timeout=30, what="streaming")
        drain_and_stop(station)
        assert_exactly_once_in_order(store, station.enqueued_readings())
    finally:
        worker.stop()


def gateway_toml(tmp_path: Path, broker: Mosquitto, store_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'username = "{GATEWAY_USER}"\npassword = "{GATEWAY_PASSWORD}"\n'
        f'client_id = "{GATEWAY_ID}"\nreconnect_max_s = 1\n\n'
        f'[store]\nkind = "sqlite"\npath = "{store_path}"\n\n'
        "[ingest]\nbatch_wait_ms = 20\n"
    )
    return path


@pytest.fixture
def start_gateway(
    tmp_path: Path, mosquitto: Mosquitto, store_config: SqliteStoreConfig
) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """``postedge gateway run`` as its own process, with its session created beforehand."""
    config = gateway_toml(tmp_path, mosquitto, store_config.path)
    create_session(
        BrokerConfig(host=mosquitto.host, port=mosquitto.port, username=GATEWAY_USER,
                     password=GATEWAY_PASSWORD, client_id=GATEWAY_ID),
        client_id=GATEWAY_ID,
    )  # fmt: skip
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "postedge.cli", "gateway", "run", str(config)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_broker_stopped_then_crashed_loses_nothing(
    station: Station, mosquitto: Mosquitto, store: TelemetryStore,
    start_gateway: Callable[[], subprocess.Popen[bytes]],
) -> None:  # fmt: skip
    """Broker down for a while (the outbox fills), back, then SIGKILLed and restarted:
    what the broker acknowledged but lost with its memory is sent again from the outbox."""
    gateway = start_gateway()
    station.start_agent()
    wait_until(lambda: count_readings(store) >= 20, timeout=30, what="streaming")
    mosquitto.stop()
    depth = station.outbox_depth()
    wait_until(lambda: station.outbox_depth() >= depth + 60, timeout=30, what="a backlog")
    mosquitto.start()
    stored = count_readings(store)
    wait_until(lambda: count_readings(store) > stored, timeout=30, what="delivery resuming")
    mosquitto.stop(kill=True)  # whatever it took since its last snapshot is gone
    mosquitto.start()
    drain_and_stop(station)
    assert_exactly_once_in_order(store, station.enqueued_readings())
    gateway.send_signal(signal.SIGTERM)
    assert gateway.wait(20) == 0


def test_gateway_killed_mid_batch_loses_nothing(
    station: Station, store: TelemetryStore,
    start_gateway: Callable[[], subprocess.Popen[bytes]],
) -> None:  # fmt: skip
    """The gateway SIGKILLed three times while it stores batches: nothing is lost."""
    station.start_agent()
    for kills in range(4):
        gateway = start_gateway()
        stored = count_readings(store)
        wait_until(
            lambda stored=stored: count_readings(store) > stored + 5, timeout=30, what="storing"
        )
        if kills < 3:
            gateway.kill()
            gateway.wait()
    drain_and_stop(station)
    assert_exactly_once_in_order(store, station.enqueued_readings())
    gateway.send_signal(signal.SIGTERM)
    assert gateway.wait(20) == 0
