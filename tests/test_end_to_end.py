"""The walking skeleton end to end, every part real.

probe simulator (pymodbus RTU server on a pty) → edge agent (its own process) →
Mosquitto → gateway → InfluxDB → API: the API returns exactly the simulated values,
with the device timestamps the edge gave them.
"""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from contracts import TemperatureEnvelope, decode
from firmware_bridge.sim.probe import ProbeSimulator, Scenario, SimulatedProbe
from gateway.registry import DeviceEntry, Registry, StationEntry
from gateway.service import GatewayWorker
from gateway.telemetry.config import InfluxStoreConfig
from postedge.localservers import Influxd, Mosquitto
from tests.apiworld import api_over
from tests.conftest import (
    OBSERVER_PASSWORD,
    OBSERVER_USER,
    device_password,
)
from tests.helpers import BackgroundLoop, Observer, gateway_worker, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.hil]

STATION = "village-23"
DEVICE = "dev1"
READINGS = 12


ALL_TIME = {"start": "2020-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z"}


REGISTRY = Registry(
    stations=[StationEntry(id=STATION, name="村服务点", division="411523105201", tier="village")],
    devices=[DeviceEntry(id=DEVICE, station=STATION, role="probe")],
)

Api = tuple[TestClient, dict[str, str]]


def series(api: Api, probe: str) -> list[dict[str, object]]:
    client, headers = api
    url = f"/api/v1/probes/{STATION}/{DEVICE}/{probe}/temperature"
    body = client.get(url, params=ALL_TIME, headers=headers).json()
    points: list[dict[str, object]] = body["points"]
    return points


def has_points(api: Api, probe: str, count: int) -> bool:
    return len(series(api, probe)) >= count


def devices(api: Api) -> list[dict[str, object]]:
    client, headers = api
    items = client.get("/api/v1/stations", headers=headers).json()["items"]
    found: list[dict[str, object]] = items[0]["devices"] if items else []
    return found


def station_toml(tmp_path: Path, broker: Mosquitto, device_path: str) -> Path:
    path = tmp_path / "station.toml"
    path.write_text(
        f'station = "{STATION}"\ndata_dir = "edge-data"\n\n'
        f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\nreconnect_max_s = 2\n\n'
        f'[[devices]]\nid = "{DEVICE}"\npassword = "{device_password(DEVICE)}"\n'
        "interval_s = 0.2\n\n"
        f'[[devices.modbus]]\nport = "{device_path}"\ntimeout_s = 2\n\n'
        '[[devices.modbus.probes]]\nid = "medicine"\nunit = 1\n'
        'temperature = { register = 0, table = "holding", scale = 0.1, signed = true }\n'
        'humidity = { register = 1, table = "holding", scale = 0.1, signed = false }\n\n'
        '[[devices.modbus.probes]]\nid = "freezer"\nunit = 2\n'
        'temperature = { register = 0, table = "holding", scale = 0.1, signed = true }\n'
    )
    return path


@pytest.fixture
def simulator() -> Iterator[ProbeSimulator]:
    sim = ProbeSimulator(
        [
            SimulatedProbe(
                unit=1,
                temperature_register=0,
                humidity_register=1,
                scenario=Scenario.drift(4.0, per_minute=60.0),
            ),
            SimulatedProbe(
                unit=2,
                temperature_register=0,
                humidity_register=None,
                scenario=Scenario.steady(-19.0, noise=0.8, seed=7),
            ),
        ]
    )
    with BackgroundLoop() as background:
        background.run(sim.start())
        yield sim
        background.run(sim.stop())


@pytest.fixture
def store(influxd: Influxd, influx_db: str) -> InfluxStoreConfig:
    return InfluxStoreConfig(kind="influxdb", url=influxd.url, database=influx_db)


@pytest.fixture
def gateway(mosquitto: Mosquitto, store: InfluxStoreConfig) -> Iterator[GatewayWorker]:
    worker = gateway_worker(mosquitto, store, client_id="gw-e2e")
    worker.start()
    assert worker.consumer.wait_ready(10)
    yield worker
    worker.stop()


@pytest.fixture
def start_edge(
    tmp_path: Path, mosquitto: Mosquitto, simulator: ProbeSimulator
) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Starts ``postedge edge run`` on the simulator's bus, as its own process."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        config = station_toml(tmp_path, mosquitto, simulator.device_path)
        command = [sys.executable, "-m", "postedge.cli", "edge", "run", str(config)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_probe_readings_reach_the_api_exactly(
    tmp_path: Path,
    mosquitto: Mosquitto,
    store: InfluxStoreConfig,
    gateway: GatewayWorker,
    simulator: ProbeSimulator,
    start_edge: Callable[[], subprocess.Popen[bytes]],
) -> None:
    observer = Observer(mosquitto, OBSERVER_USER, OBSERVER_PASSWORD, "postedge/v1/+/+/telemetry")
    edge = start_edge()
    try:
        observer.wait_for(lambda seen: len(seen) >= 2 * READINGS, timeout=30)
        edge.send_signal(signal.SIGTERM)
        output = edge.communicate(timeout=20)[0].decode()
        assert edge.returncode == 0, output
        published = [decode(m.payload) for m in observer.messages]
        with api_over(tmp_path, store, REGISTRY) as api:
            for unit, probe in ((1, "medicine"), (2, "freezer")):
                sent = [
                    e
                    for e in published
                    if isinstance(e, TemperatureEnvelope) and e.body.probe == probe
                ]
                wait_until(
                    functools.partial(has_points, api, probe, len(sent)),
                    timeout=20,
                    what=f"{probe} readings in the API",
                )
                points = series(api, probe)
                assert [p["celsius"] for p in points] == simulator.served[unit]
                assert points == [
                    {"ts": e.model_dump(mode="json")["ts"], "celsius": e.body.celsius,
                     "min": None, "max": None}
                    for e in sent
                ]  # fmt: skip
            [device] = devices(api)
        assert (device["id"], device["role"], device["online"], device["probes"]) == (
            DEVICE, "probe", False, ["freezer", "medicine"]
        )  # fmt: skip
        humidity = [
            e.body.humidity
            for e in published
            if isinstance(e, TemperatureEnvelope) and e.body.probe == "medicine"
        ]
        assert all(h is not None and 0 <= h <= 100 for h in humidity)
    finally:
        observer.close()


def test_device_goes_offline_in_the_api_when_the_edge_dies(
    tmp_path: Path,
    mosquitto: Mosquitto,
    store: InfluxStoreConfig,
    gateway: GatewayWorker,
    start_edge: Callable[[], subprocess.Popen[bytes]],
) -> None:
    """A SIGKILLed agent says nothing; the broker's last will marks it offline."""
    observer = Observer(mosquitto, OBSERVER_USER, OBSERVER_PASSWORD, "postedge/v1/+/+/status")
    edge = start_edge()
    try:
        with api_over(tmp_path, store, REGISTRY) as api:

            def online() -> object:
                found = devices(api)
                return found[0]["online"] if found else None

            wait_until(lambda: online() is True, timeout=20, what="device online")
            edge.kill()
            edge.wait()
            wait_until(lambda: online() is False, timeout=90, what="device offline by last will")
        states = [json.loads(m.payload)["body"]["state"] for m in observer.messages]
        assert states[0] == "online"
        assert states[-1] == "offline"
    finally:
        observer.close()
