"""Fixtures that start real servers on free loopback ports.

Servers are started by ``postedge.localservers`` and waited for by readiness probes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.mosquitto import AclRule
from postedge.localservers import Influxd, Mosquitto

GATEWAY_USER = "gateway"
GATEWAY_PASSWORD = "gateway-secret"
OBSERVER_USER = "observer"
OBSERVER_PASSWORD = "observer-secret"


def device_password(device: str) -> str:
    return f"pw-{device}"


@pytest.fixture
def make_mosquitto(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """A factory for private brokers; ``devices`` are users confined by the device ACL.

    The gateway user may read and write everything; the observer may read everything.
    """
    started: list[Mosquitto] = []

    def factory(devices: Sequence[str] = (), name: str = "mosquitto", **kwargs: Any) -> Mosquitto:
        users = {GATEWAY_USER: GATEWAY_PASSWORD, OBSERVER_USER: OBSERVER_PASSWORD}
        users.update({device: device_password(device) for device in devices})
        broker = Mosquitto(
            tmp_path / name,
            users=users,
            acl={
                GATEWAY_USER: [AclRule("readwrite", "#"), AclRule("readwrite", "$share/#")],
                OBSERVER_USER: [AclRule("read", "#")],
            },
            **kwargs,
        )
        broker.start()
        started.append(broker)
        return broker

    yield factory
    for broker in started:
        broker.stop(kill=True)


@pytest.fixture
def mosquitto(make_mosquitto: Callable[..., Mosquitto]) -> Mosquitto:
    """A private broker with devices ``dev1`` .. ``dev3`` (password ``pw-{device}``)."""
    return make_mosquitto(devices=["dev1", "dev2", "dev3"])


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    """One InfluxDB server for the session; tests take their own database from ``influx_db``."""
    server = Influxd(tmp_path_factory.mktemp("influxd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def influx_db(influxd: Influxd) -> str:
    """A fresh database on the session's InfluxDB."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    influxd.create_database(name)
    return name


@pytest.fixture
def private_influxd(tmp_path: Path) -> Iterator[Influxd]:
    """An InfluxDB server of the test's own, for tests that stop and restart it."""
    server = Influxd(tmp_path / "influxd")
    server.start()
    yield server
    server.stop(kill=True)


@pytest.fixture(scope="session")
def influxd_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    """An InfluxDB server with HTTP auth on; its admin: ``admin_user``/``admin_password``."""
    server = Influxd(tmp_path_factory.mktemp("influxd-auth"), auth=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """One PostgreSQL server for the session (``tests.pg.PostgresServer``); take a fresh
    database per test with ``postgres.create_database()``. Fails if PostgreSQL is missing."""
    from tests.pg import PostgresServer  # here, not at the top: only ledger tests need it

    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh, empty ledger database: once SQLite, once PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    return str(request.getfixturevalue("postgres").create_database())
