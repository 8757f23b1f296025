"""The edge agent as a whole: commands over MQTT, health, reloads and a full outbox.

Commands travel as they do in the field: published by the gateway user on the device's
``cmd`` topic, carried out by the agent process against the lock-board simulator on a
pty, answered on ``cmd/result`` through the outbox.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contracts import CommandResultEnvelope, HealthEnvelope, decode
from contracts.commands import Command, encode_command
from edge.agent import EdgeAgent
from edge.config import load_station_config
from edge.errors import EdgeError
from edge.outbox import Outbox
from firmware_bridge.sim.lockboard import LockboardScenario, LockboardSim, SimBoard
from firmware_bridge.sim.probe import ProbeSimulator, Scenario, SimulatedProbe
from gateway.telemetry import open_store
from gateway.telemetry.config import SqliteStoreConfig
from postedge.localservers import Mosquitto, free_port
from tests.conftest import (
    GATEWAY_PASSWORD,
    GATEWAY_USER,
    OBSERVER_PASSWORD,
    OBSERVER_USER,
    device_password,
)
from tests.helpers import BackgroundLoop, Observer, Publisher, gateway_worker, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.hil]

STATION = "village-9"
LOCKER = "dev1"
CMD = f"postedge/v1/{STATION}/{LOCKER}/cmd"


def locker_toml(path: Path, broker: Mosquitto, port: str, *, interval: float = 5.0) -> Path:
    path.write_text(
        f'station = "{STATION}"\ndata_dir = "edge-data"\n\n'
        f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\n'
        "reconnect_min_s = 0.1\nreconnect_max_s = 0.5\n\n"
        "[health]\ninterval_s = 3600\n\n"
        f'[[devices]]\nid = "{LOCKER}"\npassword = "{device_password(LOCKER)}"\n'
        f"interval_s = {interval}\n"
        f'lockboard = {{ port = "{port}", boards = [1], poll_interval_s = 0.2 }}\n'
    )
    return path


@pytest.fixture
def background() -> Iterator[BackgroundLoop]:
    with BackgroundLoop() as loop:
        yield loop


@pytest.fixture
def lockboard(background: BackgroundLoop) -> Iterator[LockboardSim]:
    sim = LockboardSim(LockboardScenario((SimBoard(1, occupied=frozenset({2})),)))
    background.run(sim.start())
    yield sim
    background.run(sim.stop())


class Agent:
    """``postedge edge run`` as its own process."""

    def __init__(self, config: Path) -> None:
        command = [sys.executable, "-m", "postedge.cli", "edge", "run", str(config)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        output = self.process.communicate(timeout=20)[0].decode()
        assert self.process.returncode == 0, output[-3000:]
        return output


@pytest.fixture
def results(mosquitto: Mosquitto) -> Iterator[Observer]:
    observer = Observer(
        mosquitto, OBSERVER_USER, OBSERVER_PASSWORD, f"postedge/v1/{STATION}/+/cmd/result"
    )
    yield observer
    observer.close()


@pytest.fixture
def gateway(mosquitto: Mosquitto) -> Iterator[Publisher]:
    publisher = Publisher(mosquitto, GATEWAY_USER, GATEWAY_PASSWORD)
    yield publisher
    publisher.close()


def result_bodies(observer: Observer) -> list[dict[str, Any]]:
    bodies = []
    for message in observer.messages:
        envelope = decode(message.payload)
        assert isinstance(envelope, CommandResultEnvelope)
        bodies.append(envelope.body.model_dump(mode="json"))
    return bodies


def command(command_id: str, name: str, **args: Any) -> bytes:
    return encode_command(Command(id=command_id, command=name, args=args))


def wait_results(observer: Observer, count: int) -> list[dict[str, Any]]:
    wait_until(lambda: len(observer.messages) >= count, timeout=20, what=f"{count} results")
    return result_bodies(observer)


def result_for(observer: Observer, command_id: str) -> dict[str, Any]:
    """The first result for ``command_id``, waiting for it."""

    def found() -> dict[str, Any] | None:
        return next((b for b in result_bodies(observer) if b["command_id"] == command_id), None)

    return wait_until(found, timeout=20, what=f"the result of {command_id}")


def wait_answering(gateway: Publisher, observer: Observer) -> None:
    """Commands are not queued for an offline device: ask until the agent answers."""

    def answered() -> bool:
        gateway.publish(CMD, command("hello", "query_slots", board=1))
        return any(b["command_id"] == "hello" for b in result_bodies(observer))

    wait_until(answered, timeout=20, what="the agent to answer")


def start_locker(tmp_path: Path, broker: Mosquitto, sim: LockboardSim) -> Agent:
    return Agent(locker_toml(tmp_path / "station.toml", broker, sim.device_path))


def test_a_command_id_is_carried_out_once(
    tmp_path: Path, mosquitto: Mosquitto, lockboard: LockboardSim, results: Observer,
    gateway: Publisher,
) -> None:  # fmt: skip
    """open_slot sent twice with one id opens the slot once; the repeat replays the outcome."""
    agent = start_locker(tmp_path, mosquitto, lockboard)
    try:
        wait_answering(gateway, results)
        for _ in range(3):
            gateway.publish(CMD, command("c-1", "open_slot", board=1, lock=3))
        wait_until(
            lambda: sum(b["command_id"] == "c-1" for b in result_bodies(results)) == 3,
            timeout=20,
            what="three results for c-1",
        )
        bodies = [b for b in result_bodies(results) if b["command_id"] == "c-1"]
        assert lockboard.open_commands[1, 3] == 1
        assert lockboard.is_open(1, 3)
        first = bodies[0]
        assert first["ok"] is True
        assert first["command_id"] == "c-1"
        assert first["result"]["door"] == "open"
        assert first["replayed"] is False
        assert bodies[1:] == [{**first, "replayed": True}] * 2
    finally:
        agent.stop()


def test_bad_commands_get_error_results_and_the_agent_carries_on(
    tmp_path: Path, mosquitto: Mosquitto, lockboard: LockboardSim, results: Observer,
    gateway: Publisher,
) -> None:  # fmt: skip
    agent = start_locker(tmp_path, mosquitto, lockboard)
    try:
        wait_answering(gateway, results)
        result_for(results, "hello")
        count = len(results.messages)
        gateway.publish(CMD, b"{not json")
        gateway.publish(CMD, json.dumps({"schema": 1, "id": "c-2", "command": "fly"}).encode())
        gateway.publish(CMD, command("c-3", "open_slot", board=1, lock=99))
        gateway.publish(CMD, command("c-4", "set_profile", probe="nope", profile="pharma"))
        gateway.publish(CMD, b"x" * 100_000)
        gateway.publish(CMD, command("c-5", "query_slots", board=1))
        result_for(results, "c-5")  # commands are carried out in order: all are answered
        bodies = [b for b in result_bodies(results)[count:] if b["command_id"] != "hello"]
        by_id = {body["command_id"]: body for body in bodies}
        assert by_id["c-2"]["reason"] == "unknown_command"
        assert by_id["c-3"]["reason"] == "schema"
        assert by_id["c-4"]["reason"] == "unknown_probe"
        anonymous = sorted(body["reason"] for body in bodies if body["command_id"] is None)
        assert anonymous == ["malformed", "oversize"]
        slots = by_id["c-5"]["result"]["slots"]
        assert by_id["c-5"]["ok"] is True
        assert [slot["occupied"] for slot in slots if slot["lock"] == 2] == [True]
    finally:
        agent.stop()


def test_report_status_and_reload_config(
    tmp_path: Path, mosquitto: Mosquitto, lockboard: LockboardSim, results: Observer,
    gateway: Publisher,
) -> None:  # fmt: skip
    """report_status answers with the health and publishes it; reload_config refuses a
    broken file, and applies a good one."""
    telemetry = Observer(
        mosquitto, OBSERVER_USER, OBSERVER_PASSWORD, f"postedge/v1/{STATION}/+/telemetry"
    )
    config = tmp_path / "station.toml"
    agent = start_locker(tmp_path, mosquitto, lockboard)
    try:
        wait_answering(gateway, results)
        gateway.publish(CMD, command("s-1", "report_status"))
        status = result_for(results, "s-1")
        assert status["ok"] is True
        assert status["result"]["links"] == {LOCKER: "up"}
        health = telemetry.wait_for(lambda seen: len(seen) >= 1, timeout=10)
        assert isinstance(decode(health[0].payload), HealthEnvelope)

        good = config.read_text()
        config.write_text(good + "surprise = 1\n")
        gateway.publish(CMD, command("r-1", "reload_config"))
        refused = result_for(results, "r-1")
        assert refused["reason"] == "invalid_config"
        assert "surprise" in refused["error"]

        config.write_text(good.replace("poll_interval_s = 0.2", "poll_interval_s = 0.3"))
        gateway.publish(CMD, command("r-2", "reload_config"))
        reloaded = result_for(results, "r-2")
        assert reloaded["ok"] is True
        assert reloaded["result"] == {"devices": [LOCKER]}

        def answered_after_reload() -> dict[str, Any] | None:
            gateway.publish(CMD, command("q-1", "query_slots", board=1))
            return next((b for b in result_bodies(results) if b["command_id"] == "q-1"), None)

        after = wait_until(answered_after_reload, timeout=20, what="an answer after the reload")
        assert after["ok"] is True, "the reloaded agent answers commands"
        output = agent.stop()
        assert "configuration reloaded" in output
    finally:
        telemetry.close()
        if agent.process.poll() is None:
            agent.process.kill()


def test_a_full_outbox_thins_readings_and_says_so_in_its_health(
    tmp_path: Path, background: BackgroundLoop
) -> None:
    """With the link down and a tiny quota, readings are thinned, counted and warned about."""
    sim = ProbeSimulator(
        [SimulatedProbe(unit=1, temperature_register=0, humidity_register=None,
                        scenario=Scenario.drift(4.0, per_minute=120.0))]
    )  # fmt: skip
    background.run(sim.start())
    config = tmp_path / "station.toml"
    config.write_text(
        f'station = "{STATION}"\ndata_dir = "edge-data"\n\n'
        f"[broker]\nport = {free_port()}\nreconnect_min_s = 0.1\nreconnect_max_s = 0.2\n\n"
        "[limits]\noutbox_max_mb = 0.01\n\n"
        f'[[devices]]\nid = "{LOCKER}"\ninterval_s = 0.1\n\n'
        f'[[devices.modbus]]\nport = "{sim.device_path}"\ntimeout_s = 0.5\n\n'
        '[[devices.modbus.probes]]\nid = "cold"\nunit = 1\n'
        'temperature = { register = 0, table = "holding", scale = 0.1, signed = true }\n'
    )
    agent = EdgeAgent(load_station_config(config), config_path=config)

    async def scenario() -> Any:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        deadline = asyncio.get_running_loop().time() + 30

        def thinned() -> int:
            try:
                return agent.outbox.stats().thinned
            except EdgeError:  # the agent has not opened its outbox yet
                return 0

        while thinned() < 20:
            assert asyncio.get_running_loop().time() < deadline, "nothing thinned in 30 s"
            await asyncio.sleep(0.05)  # polling the outbox, not waiting for an effect
        health = agent.health()
        stop.set()
        await task
        return health

    try:
        health = background.run(scenario(), timeout=60)
    finally:
        background.run(sim.stop())
    stats_after = agent.outbox
    assert health.thinned >= 20
    assert health.links == {LOCKER: "down"}
    assert any("thinned" in warning for warning in health.warnings)
    assert any("connection refused" in w or "cannot reach" in w for w in health.warnings)
    assert health.outbox_bytes <= 0.01 * 1024 * 1024 * 1.5
    with stats_after:
        remaining = stats_after.stats()
    assert remaining.enqueued["temperature"] == remaining.depth + remaining.thinned
    assert remaining.dropped == 0


def test_the_gateway_stores_what_the_agent_sends_and_the_outbox_empties(
    tmp_path: Path, mosquitto: Mosquitto, lockboard: LockboardSim, results: Observer,
    gateway: Publisher, background: BackgroundLoop,
) -> None:  # fmt: skip
    """A command result and the door event that follows reach the store; receipts empty
    the outbox."""
    store_config = SqliteStoreConfig(kind="sqlite", path=tmp_path / "telemetry.sqlite")
    worker = gateway_worker(mosquitto, store_config, client_id="gw-agent")
    worker.start()
    agent = start_locker(tmp_path, mosquitto, lockboard)
    outbox_path = tmp_path / "edge-data" / "outbox.sqlite"
    try:
        assert worker.consumer.wait_ready(10)
        wait_answering(gateway, results)
        gateway.publish(CMD, command("o-1", "open_slot", board=1, lock=4))
        assert result_for(results, "o-1")["ok"] is True
        background.loop.call_soon_threadsafe(lockboard.close_door, 1, 4)  # the courier
        store = open_store(store_config)
        store.open()
        try:
            tags = {"station": STATION, "device": LOCKER, "kind": "door"}

            def door_closed() -> bool:
                bodies = [
                    json.loads(str(v.value)) for v in store.query_series("event", "body", tags)
                ]
                return any(b["lock"] == 4 and b["door"] == "closed" for b in bodies)

            wait_until(door_closed, timeout=20, what="the door event in the store")
            stored = store.query_series(
                "command_result", "command_id", {"station": STATION, "device": LOCKER}
            )
            assert {value.value for value in stored} == {"hello", "o-1"}
        finally:
            store.close()

        def outbox_empty() -> bool:
            with Outbox(outbox_path, max_bytes=1 << 30) as outbox:
                return outbox.depth(LOCKER) == 0

        wait_until(outbox_empty, timeout=20, what="receipts to empty the outbox")
    finally:
        agent.stop()
        worker.stop()


def test_a_camera_stands_in_for_a_serial_scanner(
    tmp_path: Path, background: BackgroundLoop
) -> None:
    """Labels in front of a camera (a folder of frames here) become scan events, one per
    waybill however many frames show it, kept in the outbox while the link is down."""
    import cv2

    from tests.labels import code128, pad, qr

    frames = tmp_path / "frames"
    frames.mkdir()
    labels = [("YT0001", code128), ("YT0001", code128), ("YT0002", qr), ("YT0002", qr)]
    for index, (text, make) in enumerate(labels):
        cv2.imwrite(str(frames / f"{index:03d}.png"), pad(make(text)))
    config = tmp_path / "station.toml"
    config.write_text(
        f'station = "{STATION}"\ndata_dir = "edge-data"\n\n'
        f"[broker]\nport = {free_port()}\nreconnect_min_s = 0.1\nreconnect_max_s = 0.2\n\n"
        f'[[devices]]\nid = "{LOCKER}"\n'
        f'camera = {{ source = "{frames}", reader = "cam-1", max_fps = 50 }}\n'
    )
    agent = EdgeAgent(load_station_config(config), config_path=config)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        deadline = asyncio.get_running_loop().time() + 20

        def scans() -> int:
            try:
                return agent.outbox.stats().enqueued.get("scan", 0)
            except EdgeError:  # the agent has not opened its outbox yet
                return 0

        while scans() < 2:
            assert asyncio.get_running_loop().time() < deadline, "no scans in 20 s"
            await asyncio.sleep(0.05)  # polling the outbox, not waiting for an effect
        stop.set()
        await task

    background.run(scenario(), timeout=60)
    with agent.outbox as outbox:
        pending = outbox.pending(LOCKER)
    scans = [decode(row.payload) for row in pending if row.kind == "scan"]
    assert [scan.body.model_dump()["code"] for scan in scans] == ["YT0001", "YT0002"]
