"""A small supervised world for the API's tests: stations in two provinces, devices,
users of every role with tokens, readings, alerts and a parcel, in a real SQLite (or
PostgreSQL) ledger and a real SQLite telemetry store."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cloud_api.app import create_app
from cloud_api.auth import Accounts
from cloud_api.config import ApiConfig
from contracts import StatusBody, TemperatureBody, make_envelope
from contracts.events import IdentityRead
from gateway.convert import to_points
from gateway.ledger import Ledger, RealnameRow
from gateway.personal import Keyring
from gateway.registry import DeviceEntry, Registry, Routing, StationEntry
from gateway.telemetry import TelemetryStore, open_store
from gateway.telemetry.config import SqliteStoreConfig, StoreConfig
from postedge.localservers import free_port
from tests.helpers import wait_until

T0 = datetime(2025, 1, 10, 0, 0, tzinfo=UTC)
PASSWORD = "correct horse battery"
NUMBER = "11010519491231002X"  # the GB 11643-1999 worked example
NAME = "张三丰"
WAYBILL = "SF1000000001"

USERS = {
    # name: (role, scopes)
    "admin": ("admin", ["*"]),
    "sup": ("supervisor", ["division:411523"]),
    "op": ("operator", ["station:village-23"]),
    "aud": ("auditor", ["*"]),
    "outsider": ("supervisor", ["division:32"]),
}


def registry() -> Registry:
    return Registry(
        stations=[
            StationEntry(id="county-01", name="县分拣中心", division="411523000000", tier="county"),
            StationEntry(id="town-05", name="镇服务站", division="411523105000", tier="township"),
            StationEntry(id="village-23", name="村服务点", division="411523105201", tier="village"),
            StationEntry(id="other-99", name="Other", division="320101000000", tier="county"),
        ],
        devices=[
            DeviceEntry(id="county-01-counter", station="county-01", role="counter"),
            DeviceEntry(
                id="county-01-sorter",
                station="county-01",
                role="sorter",
                routing=Routing(exception_chute=99, routes={"4115": 3}),
            ),
            DeviceEntry(id="county-01-xray", station="county-01", role="xray"),
            DeviceEntry(id="village-23-medbox", station="village-23", role="probe"),
            DeviceEntry(id="village-23-locker", station="village-23", role="locker"),
            DeviceEntry(id="other-99-probe", station="other-99", role="probe"),
        ],
    )  # fmt: skip


@dataclass
class World:
    ledger: Ledger
    store: TelemetryStore
    keyring: Keyring
    tokens: dict[str, str] = field(default_factory=dict)
    alerts: dict[str, int] = field(default_factory=dict)
    """alert id by station"""

    def auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def raise_alert(self, station: str, device: str, *, at: datetime = T0) -> int:
        with self.ledger.transaction() as tx:
            return tx.add_alert(
                station=station,
                kind="temperature_high",
                waybill=None,
                severity="warning",
                details={"celsius": 9.25, "profile": "pharma"},
                raised_at=at,
                subject=f"{device}/medicine",
                device=device,
            )


def readings() -> list[Any]:
    envelopes = [
        make_envelope(
            station="village-23", device="village-23-medbox", boot=1, seq=seq,
            ts=T0 + timedelta(minutes=seq),
            body=TemperatureBody(probe=probe, celsius=celsius, humidity=50.0),
        )
        for seq, (probe, celsius) in enumerate(
            [("medicine", 5.0), ("produce", 7.5), ("medicine", 5.5), ("medicine", 9.25)], start=1
        )
    ]  # fmt: skip
    envelopes += [
        make_envelope(
            station="village-23", device="village-23-medbox", boot=1, seq=10, ts=T0,
            body=StatusBody(state="online", boot=1, version="test"),
        ),
        make_envelope(
            station="other-99", device="other-99-probe", boot=1, seq=1, ts=T0,
            body=TemperatureBody(probe="p1", celsius=3.0, humidity=None),
        ),
    ]  # fmt: skip
    return envelopes


def build_world(ledger_url: str, tmp_path: Path) -> World:
    """Open (and migrate) the ledger and the store and fill them; the caller closes."""
    ledger = Ledger(ledger_url)
    ledger.open()
    ledger.sync_registry(registry())
    store = open_store(SqliteStoreConfig(kind="sqlite", path=tmp_path / "telemetry.sqlite"))
    store.open()
    store.write([point for envelope in readings() for point in to_points(envelope)])
    keyring = Keyring.generate()
    world = World(ledger, store, keyring)
    accounts = Accounts(ledger, session_ttl=timedelta(hours=1))
    now = datetime.now(UTC)
    for name, (role, scopes) in USERS.items():
        accounts.save_user(name, role=role, scopes=scopes, password=PASSWORD, now=now)
        world.tokens[name] = accounts.issue(name, kind="api", label="tests", now=now).token
    world.alerts["village-23"] = world.raise_alert("village-23", "village-23-medbox")
    world.alerts["other-99"] = world.raise_alert("other-99", "other-99-probe")
    _parcel(world)
    return world


@contextlib.contextmanager
def world_at(ledger_url: str, tmp_path: Path) -> Iterator[World]:
    """:func:`build_world`, closed again after the block."""
    built = build_world(ledger_url, tmp_path)
    try:
        yield built
    finally:
        built.store.close()
        built.ledger.close()


def _parcel(world: World) -> None:
    protected = world.keyring.protect(
        IdentityRead(
            name=NAME, id_type="resident", id_number=NUMBER, authority="北京市公安局西城分局",
            valid_from=dt.date(2015, 3, 1), valid_until=dt.date(2035, 3, 1),
        )
    )  # fmt: skip
    with world.ledger.transaction() as tx:
        tx.add_parcel(
            waybill=WAYBILL, station="county-01", device="county-01-counter",
            destination="411523105201", accepted_at=T0, clerk="clerk-1",
            request="county-01-counter:1:1",
        )  # fmt: skip
        tx.add_realname(
            WAYBILL,
            RealnameRow(
                protected.id_type, protected.key_id, protected.nonce, protected.ciphertext,
                protected.lookup, protected.masked_number, protected.masked_name, "138****5678",
            ),
        )  # fmt: skip
        tx.add_xray(
            waybill=WAYBILL, verdict="PASS", operator="op-7", image="img/1.png",
            scanned_at=T0 + timedelta(minutes=5), station="county-01",
            device="county-01-xray", request="county-01-xray:1:1",
        )  # fmt: skip


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` on a real uvicorn server on a free loopback port; yield its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: server.started, timeout=20, what="the API server to start")
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@contextlib.contextmanager
def api_over(
    tmp_path: Path, store: StoreConfig, registry: Registry
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The API over ``store`` and a fresh SQLite ledger holding ``registry``, with the
    headers of a supervisor who sees every station."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'api-ledger.sqlite'}")
    ledger.open()
    try:
        ledger.sync_registry(registry)
        accounts = Accounts(ledger, session_ttl=timedelta(hours=1))
        now = datetime.now(UTC)
        accounts.save_user("qa", role="supervisor", scopes=["*"], password=PASSWORD, now=now)
        token = accounts.issue("qa", kind="api", label="tests", now=now).token
        app = create_app(ApiConfig(store=store), ledger=ledger)
        with TestClient(app) as client:
            yield client, {"Authorization": f"Bearer {token}"}
    finally:
        ledger.close()
