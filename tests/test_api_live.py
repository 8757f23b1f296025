"""The API on a real uvicorn server: live events (SSE) and commands through a real
Mosquitto."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from cloud_api.app import create_app
from cloud_api.config import ApiBrokerConfig, ApiConfig
from postedge.localservers import Mosquitto
from tests.apiworld import World, serve, world_at
from tests.conftest import GATEWAY_PASSWORD, GATEWAY_USER, OBSERVER_PASSWORD, OBSERVER_USER
from tests.helpers import Observer

pytestmark = pytest.mark.integration


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with world_at(f"sqlite:///{tmp_path / 'ledger.sqlite'}", tmp_path) as built:
        yield built


class EventStream:
    """An SSE client on a real socket: events are collected by a thread."""

    def __init__(self, base: str, token: str) -> None:
        url = urllib.parse.urlsplit(base)
        self.connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
        self.connection.request(
            "GET", "/api/v1/events", headers={"Authorization": f"Bearer {token}"}
        )
        self.response = self.connection.getresponse()
        self.events: list[tuple[str, dict[str, object]]] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        name = ""
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line[len("event: ") :]
                elif line.startswith("data: "):
                    with self._changed:
                        self.events.append((name, json.loads(line[len("data: ") :])))
                        self._changed.notify_all()
        except (OSError, ValueError, AttributeError):  # closed under the reader
            return

    def wait_for(
        self, predicate: Callable[[tuple[str, dict[str, object]]], bool], timeout: float = 10
    ) -> tuple[str, dict[str, object]]:
        with self._changed:
            found: list[tuple[str, dict[str, object]]] = []

            def seen() -> bool:
                found[:] = [event for event in self.events if predicate(event)]
                return bool(found)

            if not self._changed.wait_for(seen, timeout):
                raise AssertionError(f"no such event in {self.events}")
            return found[0]

    def close(self) -> None:
        """Shut the socket first: closing under a blocked reader would wait for its read."""
        if self.connection.sock is not None:
            with contextlib.suppress(OSError):
                self.connection.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)
        self.connection.close()


def test_alerts_arrive_live_and_only_for_stations_in_scope(world: World) -> None:
    app = create_app(ApiConfig(), world.store, ledger=world.ledger, poll_s=0.05)
    with serve(app) as base:
        streams = {user: EventStream(base, world.tokens[user]) for user in ("sup", "outsider")}
        try:
            for stream in streams.values():
                assert stream.response.status == 200
                assert stream.response.getheader("content-type", "").startswith("text/event-stream")
                stream.wait_for(lambda e: e[0] == "hello")
            number = world.raise_alert("village-23", "village-23-medbox")
            name, alert = streams["sup"].wait_for(lambda e: e[1].get("id") == number)
            assert (name, alert["state"], alert["station"]) == ("alert", "open", "village-23")
            _, station = streams["sup"].wait_for(
                lambda e: e[0] == "station" and e[1]["open_alerts"] == 2
            )
            assert station["id"] == "village-23"
            with world.ledger.transaction() as tx:
                assert tx.acknowledge_alert(number, by="someone", at=datetime.now(UTC))
            streams["sup"].wait_for(
                lambda e: e[1].get("id") == number and e[1]["state"] == "acknowledged"
            )
            other = world.raise_alert("other-99", "other-99-probe")
            streams["outsider"].wait_for(lambda e: e[1].get("id") == other)
            # Everything the supervisor was sent is about their own division.
            assert all(
                e[1].get("station", e[1].get("id")) == "village-23"
                for e in streams["sup"].events
                if e[0] != "hello"
            )
        finally:
            for stream in streams.values():
                stream.close()


def test_events_need_a_token(world: World) -> None:
    app = create_app(ApiConfig(), world.store, ledger=world.ledger)
    with TestClient(app) as client:
        assert client.get("/api/v1/events").status_code == 401


# -- commands over a real broker -------------------------------------------------------


def _api(world: World, broker: Mosquitto, user: str, password: str) -> TestClient:
    config = ApiConfig(
        broker=ApiBrokerConfig(
            host=broker.host, port=broker.port, username=user, password=SecretStr(password)
        )
    )
    return TestClient(create_app(config, world.store, ledger=world.ledger))


OPEN_SLOT = {
    "station": "village-23",
    "device": "village-23-locker",
    "command": "open_slot",
    "args": {"board": 1, "lock": 3},
}


def test_a_command_reaches_the_device_topic_and_is_audited(
    world: World, make_mosquitto: Callable[..., Mosquitto]
) -> None:
    broker = make_mosquitto()
    observer = Observer(broker, OBSERVER_USER, OBSERVER_PASSWORD, "postedge/v1/+/+/cmd")
    with _api(world, broker, GATEWAY_USER, GATEWAY_PASSWORD) as api:
        response = api.post("/api/v1/commands", json=OPEN_SLOT, headers=world.auth("op"))
        assert response.status_code == 202, response.text
        sent = response.json()
        assert sent["topic"] == "postedge/v1/village-23/village-23-locker/cmd"
        [seen] = observer.wait_for(lambda messages: len(messages) == 1)
        command = json.loads(seen.payload)
        assert (command["id"], command["command"], command["args"]) == (
            sent["id"], "open_slot", {"board": 1, "lock": 3}
        )  # fmt: skip
        assert command["expires"] == sent["expires"]
        audit = api.get("/api/v1/audit", headers=world.auth("admin")).json()["items"]
        assert (audit[0]["action"], audit[0]["user"], audit[0]["details"]["id"]) == (
            "command_sent", "op", sent["id"]
        )  # fmt: skip


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"device": "village-23-medbox"}, "goes to a locker"),
        ({"args": {"board": 1, "lock": 99}}, "bad arguments"),
        ({"command": "reboot"}, "one of"),
    ],
)
def test_bad_commands_are_422_and_nothing_is_sent(
    world: World, make_mosquitto: Callable[..., Mosquitto], change: dict[str, object],
    fragment: str,
) -> None:  # fmt: skip
    broker = make_mosquitto()
    with _api(world, broker, GATEWAY_USER, GATEWAY_PASSWORD) as api:
        response = api.post("/api/v1/commands", json=OPEN_SLOT | change, headers=world.auth("op"))
    assert response.status_code == 422
    assert fragment in response.json()["title"]


def test_a_command_the_broker_refuses_is_503_and_audited_as_failed(
    world: World, make_mosquitto: Callable[..., Mosquitto]
) -> None:
    broker = make_mosquitto()
    with _api(world, broker, OBSERVER_USER, OBSERVER_PASSWORD) as api:  # may only read
        response = api.post("/api/v1/commands", json=OPEN_SLOT, headers=world.auth("op"))
        assert response.status_code == 503
        audit = api.get("/api/v1/audit", headers=world.auth("admin")).json()["items"]
    assert audit[0]["action"] == "command_failed"
