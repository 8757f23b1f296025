"""``postedge demo``: the whole system on one machine, on embedded defaults.

A private Mosquitto, the gateway (SQLite telemetry store, a device registry of the
demo's stations, an SQLite ledger and ``/metrics``) and the API run as child processes;
three simulated stations (a county centre, a township station and a village point),
each with a cold-chain device of two Modbus probes on a real pty, are read by three edge
agents, also child processes. Everything lives in one work directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from firmware_bridge.sim.probe import ProbeSimulator, Scenario, SimulatedProbe
from gateway.config import load_gateway_config
from gateway.consumer import COLDCHAIN_SUBSCRIPTION, LEDGER_SUBSCRIPTION, create_session
from gateway.mosquitto import AclRule
from gateway.personal import Keyring
from postedge.localservers import Mosquitto, ServerError, free_port

READY_TIMEOUT_S = 30.0
DEMO_USERS = ("supervisor", "operator", "auditor", "admin")
"""Dashboard users, each with the role of its name and every station in scope."""


@dataclass(frozen=True)
class DemoProbe:
    id: str
    unit: int
    scenario: Scenario
    profile: str = "chilled"


@dataclass(frozen=True)
class DemoStation:
    id: str
    device: str
    probes: tuple[DemoProbe, ...]
    name: str = ""
    division: str = ""
    tier: str = ""


STATIONS = (
    DemoStation(
        "county-01",
        "county-01-coldroom",
        (
            DemoProbe("coldroom", 1, Scenario.steady(3.0, noise=0.2, seed=1)),
            DemoProbe("precool", 2, Scenario.steady(1.0, noise=0.2, seed=2)),
        ),
        "汤阴县寄递物流共配中心",
        "410523000000",
        "county",
    ),
    DemoStation(
        "township-07",
        "township-07-locker",
        (
            DemoProbe("fridge-a", 1, Scenario.steady(4.0, noise=0.3, seed=3), "fresh"),
            DemoProbe("freezer-b", 2, Scenario.steady(-19.5, noise=0.4, seed=4), "frozen"),
        ),
        "菜园镇快递综合服务站",
        "410523101000",
        "township",
    ),
    DemoStation(
        "village-23",
        "village-23-medbox",
        (
            # Pharma 2–8 °C: drifts out of range a few seconds into the demo.
            DemoProbe(
                "medicine",
                1,
                Scenario.excursion(5.0, 11.5, start_s=15, ramp_s=20, hold_s=60),
                "pharma",
            ),
            DemoProbe("produce", 2, Scenario.drift(6.0, per_minute=0.5), "fresh"),
        ),
        "东街村村级寄递物流服务点",
        "410523101201",
        "village",
    ),
)


def coldchain_toml(stations: tuple[DemoStation, ...]) -> str:
    """The cold-chain section: each probe's profile, with alarm delays short enough to
    see an alert within the first minute (production keeps the 10-minute default)."""
    profiles = "".join(
        f"[coldchain.profiles.{name}]\ndelay_s = 20\nclear_after_s = 20\noffline_after_s = 60\n\n"
        for name in sorted({probe.profile for station in stations for probe in station.probes})
    )
    probes = "".join(
        f'[[coldchain.probes]]\nstation = "{station.id}"\ndevice = "{station.device}"\n'
        f'probe = "{probe.id}"\nprofile = "{probe.profile}"\n\n'
        for station in stations
        for probe in station.probes
    )
    return "[coldchain]\ntick_s = 1\n\n" + profiles + probes


def registry_toml(stations: tuple[DemoStation, ...]) -> str:
    """The device registry of the demo's stations: one probe device each."""
    parts = [
        f'[[stations]]\nid = "{s.id}"\nname = "{s.name}"\ndivision = "{s.division}"\n'
        f'tier = "{s.tier}"\n'
        for s in stations
    ]
    parts += [
        f'[[devices]]\nid = "{s.device}"\nstation = "{s.id}"\nrole = "probe"\n' for s in stations
    ]
    return "\n".join(parts)


def run_demo(
    *,
    api_port: int,
    duration: float | None,
    workdir: Path | None,
    interval: float,
    mosquitto: str | None = None,
) -> int:
    """Run the demo; return the exit status."""
    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="postedge-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if not _port_free(api_port):
        print(
            f"postedge demo: port {api_port} is in use; choose another with --api-port",
            file=sys.stderr,
        )
        return 1
    passwords = {station.device: secrets.token_hex(8) for station in STATIONS}
    passwords["gateway"] = secrets.token_hex(8)
    passwords["observer"] = secrets.token_hex(8)
    passwords["dashboard"] = secrets.token_hex(6)
    try:
        broker = Mosquitto(
            workdir / "mosquitto",
            users=passwords,
            acl={
                "gateway": [AclRule("readwrite", "#")],
                "observer": [AclRule("read", "#")],
            },
            binary=mosquitto,
        )
    except ServerError as exc:
        print(f"postedge demo: {exc}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(_Demo(workdir, broker, passwords, api_port, interval).run(duration))
    except ServerError as exc:
        print(f"postedge demo: {exc}", file=sys.stderr)
        return 1


class _Demo:
    def __init__(
        self,
        workdir: Path,
        broker: Mosquitto,
        passwords: dict[str, str],
        api_port: int,
        interval: float,
    ) -> None:
        self.workdir = workdir
        self.broker = broker
        self.passwords = passwords
        self.api_port = api_port
        self.metrics_port = free_port()
        self.interval = interval
        self.logs = workdir / "logs"
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.api_token = ""

    async def run(self, duration: float | None) -> int:
        started = time.monotonic()
        self.logs.mkdir(exist_ok=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        self.broker.start()
        try:
            async with contextlib.AsyncExitStack() as stack:
                devices = {}
                for station in STATIONS:
                    simulator = ProbeSimulator(
                        [
                            SimulatedProbe(
                                unit=p.unit,
                                temperature_register=0,
                                humidity_register=None,
                                scenario=p.scenario,
                            )
                            for p in station.probes
                        ]
                    )
                    await stack.enter_async_context(simulator)
                    devices[station.id] = simulator.device_path
                self._start_gateway_and_api()
                for station in STATIONS:
                    self._start_edge(station, devices[station.id])
                await self._announce(started, stop)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=duration)
                print("postedge demo: stopping ...", flush=True)
                await asyncio.to_thread(self._stop_children)
        finally:
            self._stop_children()
            self.broker.stop()
        print(f"postedge demo: stopped. Data and logs are kept in {self.workdir}", flush=True)
        return 0

    def _spawn(self, name: str, *args: str) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        with log:
            process = subprocess.Popen(
                [sys.executable, "-m", "postedge.cli", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops children in order
            )
        self.children.append((name, process))

    def _start_gateway_and_api(self) -> None:
        store = f'[store]\nkind = "sqlite"\npath = "{self.workdir / "telemetry.sqlite"}"\n'
        (self.workdir / "registry.toml").write_text(registry_toml(STATIONS))
        keys = self.workdir / "personal.keys"
        if not keys.exists():  # the demo's own work directory: nobody races us here
            with os.fdopen(os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(Keyring.generate().dump())
        (self.workdir / "gateway.toml").write_text(
            'registry = "registry.toml"\n\n'
            "[broker]\n"
            f'host = "{self.broker.host}"\nport = {self.broker.port}\n'
            f'username = "gateway"\npassword = "{self.passwords["gateway"]}"\n'
            'client_id = "gateway"\n\n'
            "[ingest]\nbatch_wait_ms = 20\nstats_interval_s = 30\n\n"
            '[ledger]\nurl = "sqlite:///ledger.sqlite"\nkeys_file = "personal.keys"\n\n'
            f"[metrics]\nport = {self.metrics_port}\n\n" + store + "\n" + coldchain_toml(STATIONS)
        )
        (self.workdir / "api.toml").write_text(
            f"[api]\nport = {self.api_port}\n\n"
            '[ledger]\nurl = "sqlite:///ledger.sqlite"\nkeys_file = "personal.keys"\n\n'
            "[broker]\n"
            f'host = "{self.broker.host}"\nport = {self.broker.port}\n'
            f'username = "gateway"\npassword = "{self.passwords["gateway"]}"\n'
            'client_id = "api"\n\n' + store + "\n" + coldchain_toml(STATIONS)
        )
        self._make_dashboard_users()
        # The sessions exist before any agent publishes, so the broker queues everything.
        broker = load_gateway_config(self.workdir / "gateway.toml").broker
        create_session(broker, client_id="gateway")
        create_session(broker, client_id="gateway-ledger", subscription=LEDGER_SUBSCRIPTION)
        create_session(broker, client_id="gateway-coldchain", subscription=COLDCHAIN_SUBSCRIPTION)
        self._spawn("gateway", "gateway", "run", str(self.workdir / "gateway.toml"))
        self._spawn("api", "api", "--config", str(self.workdir / "api.toml"))

    def _make_dashboard_users(self) -> None:
        """Users for the dashboard (one password, printed) and an API token for scripts
        (in ``api-token``, readable by this user only)."""
        from cloud_api.auth import Accounts
        from gateway.ledger import Ledger

        now = datetime.now(UTC)
        with Ledger(f"sqlite:///{self.workdir / 'ledger.sqlite'}") as ledger:
            accounts = Accounts(ledger, session_ttl=timedelta(hours=12))
            for name in DEMO_USERS:
                accounts.save_user(
                    name, role=name, scopes=["*"], password=self.passwords["dashboard"], now=now
                )
            issued = accounts.issue("admin", kind="api", label="postedge demo", now=now)
        self.api_token = issued.token
        token_file = self.workdir / "api-token"
        token_file.unlink(missing_ok=True)
        with os.fdopen(os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(issued.token + "\n")

    def _start_edge(self, station: DemoStation, device_path: str) -> None:
        probes = "".join(
            "\n[[devices.modbus.probes]]\n"
            f'id = "{probe.id}"\nunit = {probe.unit}\n'
            'temperature = { register = 0, table = "holding", scale = 0.1, signed = true }\n'
            for probe in station.probes
        )
        path = self.workdir / f"{station.id}.toml"
        path.write_text(
            f'station = "{station.id}"\ndata_dir = "edge-data/{station.id}"\n\n'
            f'[broker]\nhost = "{self.broker.host}"\nport = {self.broker.port}\n\n'
            f'[[devices]]\nid = "{station.device}"\npassword = "{self.passwords[station.device]}"\n'
            f"interval_s = {self.interval}\n\n"
            f'[[devices.modbus]]\nport = "{device_path}"\n' + probes
        )
        self._spawn(f"edge-{station.id}", "edge", "run", str(path))

    async def _announce(self, started: float, stop: asyncio.Event) -> None:
        base = f"http://127.0.0.1:{self.api_port}"
        while not await asyncio.to_thread(_get_json, f"{base}/healthz"):
            self._check_children()
            if time.monotonic() - started > READY_TIMEOUT_S:
                raise ServerError(f"the API did not come up; see {self.logs / 'api.log'}")
            if stop.is_set():
                return
            await asyncio.sleep(0.2)  # readiness poll interval
        token = self.workdir / "api-token"
        print(
            "postedge demo is running.\n"
            f"  Dashboard: {base}/  (log in as supervisor, operator, auditor or admin, "
            f"password {self.passwords['dashboard']})\n"
            f"  API:       {base}/docs; a token for scripts is in {token}:\n"
            f'             curl -H "Authorization: Bearer $(cat {token})" {base}/api/v1/stations\n'
            f"  Readings:  {base}/api/v1/probes/village-23/village-23-medbox/medicine/temperature\n"
            f"  Metrics:   http://127.0.0.1:{self.metrics_port}/metrics\n"
            f"  Broker:    127.0.0.1:{self.broker.port} "
            f"(read-only user 'observer', password '{self.passwords['observer']}')\n"
            f"  Data:      {self.workdir / 'telemetry.sqlite'}, ledger "
            f"{self.workdir / 'ledger.sqlite'}, registry {self.workdir / 'registry.toml'}\n"
            f"  Alerts:    on the dashboard, or postedge gateway alerts list "
            f"{self.workdir / 'gateway.toml'} (live on postedge/v1/+/_alerts/#; the medicine "
            "probe alarms about a minute in)\n"
            f"  Logs:      {self.logs}/\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        expected = {station.id for station in STATIONS}
        while not stop.is_set():
            page = await asyncio.to_thread(_get_json, f"{base}/api/v1/stations", self.api_token)
            stations = page.get("items", []) if isinstance(page, dict) else []
            reading = {s["id"] for s in stations if any(d["probes"] for d in s["devices"])}
            if reading >= expected:
                print(
                    f"postedge demo: readings from all {len(expected)} stations "
                    f"{time.monotonic() - started:.1f} s after start.",
                    flush=True,
                )
                return
            self._check_children()
            await asyncio.sleep(0.5)  # readiness poll interval

    def _check_children(self) -> None:
        for name, process in self.children:
            if process.poll() is not None:
                raise ServerError(
                    f"{name} exited with {process.returncode}; see {self.logs / (name + '.log')}"
                )

    def _stop_children(self) -> None:
        """In reverse start order: edge agents first (they say offline), then the API and
        the gateway, which by then has stored what the agents sent last."""
        for name, process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                print(f"postedge demo: {name} did not stop; killing it", file=sys.stderr)
                process.kill()
                process.wait()
        self.children.clear()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As uvicorn binds: connections of an earlier run in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _get_json(url: str, token: str | None = None) -> object | None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback URL
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
            result: object = json.load(response)
            return result
    except (urllib.error.URLError, OSError, ValueError):
        return None
