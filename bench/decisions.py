"""Decision benchmark: sorter inductions to sort decisions through a real Mosquitto.

A private Mosquitto, a registry with one county station, 10 sorters (``sorter-0`` ..
``sorter-9``, routes ``41`` -> 1 and ``4105`` -> 2, exception chute 99), a counter and an
X-ray machine, and a ledger (SQLite in the temp dir unless ``--ledger-url``). Before any
clock starts, every parcel the run will induct is accepted (a valid resident ID) and
X-rayed PASS by calling ``Clearance.handle`` directly on that ledger, so each induction
names a fresh, cleared waybill and must be routed (reason None).

- Gateway: ``postedge gateway run`` as its own process (SQLite telemetry store, the
  ledger above; its two sessions created beforehand). 10 sorter clients, each with its
  own device credentials and TCP_NODELAY (``contracts.mqtt.new_client``), publish
  induction envelopes at 50/s each (QoS 1) for ``--seconds``, after ``--warmup`` seconds
  at the same rate that are checked but not counted. Latency: from just before the
  publish to the arrival of the decision whose ``request`` is the induction's id.
- Bare round trip, same run, same broker, same clients, same topics and schedule: an
  echo service (one paho process, the gateway's user, TCP_NODELAY) subscribes to the
  sorters' event topics and republishes each payload unchanged on the sorter's decision
  topic. The gateway is stopped and its sessions ended meanwhile.
- Durable echo, same again: the echo commits each payload to a SQLite file (WAL,
  ``synchronous = FULL``, plain ``sqlite3``) before republishing it: the floor of any
  service that answers only after a durable write, as the gateway must. Reported for
  reference; the target is against the bare echo.

Sends follow a computed schedule (sorter i's k-th induction at k/50 s + i/500 s), not a
sleep loop; lateness against it is reported. The sorters run in this process on one
thread that drives all ten paho clients with select(), so no hand-off between client
threads sits in any figure. Reported: p50, p99 and max for each, the ratios
gateway / bare, the target (p99 at most twice the bare p99 and under 20 ms), every
decision missing or not routed, and CPU seconds of each process during the window.

    python bench/decisions.py [--seconds S] [--warmup S] [--repeat R] [--sorters N]
        [--rate PER_S] [--workers W] [--own-process] [--ledger-url URL] [--threads DIR [--profile]]
        [--json FILE]

With ``--threads DIR`` the gateway runs in a wrapper that writes each thread's CPU
seconds to DIR/threads.txt; ``--profile`` adds one cProfile per thread there (the
figures are then not representative).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import select
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import forget_sessions, stop_process  # noqa: E402

from contracts import (  # noqa: E402
    AcceptanceBody,
    Channel,
    DecisionMessage,
    DeviceTopic,
    IdentityRead,
    InductionBody,
    Inspection,
    XrayBody,
    encode,
    make_envelope,
    utc_now,
)
from contracts.mqtt import new_client  # noqa: E402
from gateway.clearance import Clearance  # noqa: E402
from gateway.config import BrokerConfig  # noqa: E402
from gateway.consumer import (  # noqa: E402
    LEDGER_SUBSCRIPTION,
    create_session,
    store_subscription,
)
from gateway.decisions import DecisionWorker  # noqa: E402
from gateway.ledger import Ledger  # noqa: E402
from gateway.mosquitto import AclRule  # noqa: E402
from gateway.personal import Keyring  # noqa: E402
from gateway.registry import load_registry  # noqa: E402
from postedge.localservers import Mosquitto  # noqa: E402

STATION = "county-1"
COUNTER, XRAY = "counter-1", "xray-1"
GATEWAY_USER, GATEWAY_PASSWORD = "gateway", "bench-secret"
EXCEPTION_CHUTE = 99
DESTINATIONS = (("410523101001", 2), ("411102000000", 1))  # (destination, expected chute)
RESIDENT_ID = "11010519491231002X"  # a valid resident ID number (tests/test_identity.py)
TARGET_RATIO, TARGET_MS = 2.0, 20.0
OTHERS_LIMIT = 0.1  # cores other processes may keep busy before the figures are flagged
QUIET_S = 10.0  # answers still missing after this long without any are missing
CLI = [sys.executable, "-m", "postedge.cli"]


def sorters(count: int) -> list[str]:
    return [f"sorter-{index}" for index in range(count)]


def device_password(device: str) -> str:
    return f"pw-{device}"


def make_broker(workdir: Path, devices: list[str]) -> Mosquitto:
    """A private broker: the gateway user may do anything, devices only their own topics."""
    return Mosquitto(
        workdir / "mosquitto",
        users={GATEWAY_USER: GATEWAY_PASSWORD, **{d: device_password(d) for d in devices}},
        acl={GATEWAY_USER: [AclRule("readwrite", "#"), AclRule("readwrite", "$share/#")]},
    )


def write_registry(path: Path, sorter_ids: list[str]) -> None:
    text = (
        f'[[stations]]\nid = "{STATION}"\nname = "汤阴县分拣中心"\n'
        f'division = "410523000000"\ntier = "county"\n'
    )
    for device, role in ((COUNTER, "counter"), (XRAY, "xray")):
        text += f'\n[[devices]]\nid = "{device}"\nstation = "{STATION}"\nrole = "{role}"\n'
    for device in sorter_ids:
        text += (
            f'\n[[devices]]\nid = "{device}"\nstation = "{STATION}"\nrole = "sorter"\n'
            f"[devices.routing]\nexception_chute = {EXCEPTION_CHUTE}\n"
            'routes = { "41" = 1, "4105" = 2 }\n'
        )
    path.write_text(text)


# -- the parcels -----------------------------------------------------------------------


def waybill(index: int) -> str:
    return f"BD{index:08d}"


def seed(ledger_url: str, keys_file: Path, registry: Path, parcels: int) -> None:
    """Accept and X-ray PASS ``parcels`` waybills directly on the ledger (not through the
    broker: faster, and the same ``Clearance.handle`` the gateway runs)."""
    ledger = Ledger(ledger_url)
    ledger.open()
    try:
        ledger.sync_registry(load_registry(registry))
        clearance = Clearance(ledger, Keyring.from_file(keys_file))
        sender = IdentityRead(
            name="张三丰",
            id_type="resident",
            id_number=RESIDENT_ID,
            authority="北京市公安局西城分局",
            valid_from=dt.date(2020, 1, 1),
        )
        inspection = Inspection(inspected=True, declared_contents="dried dates")
        for index in range(parcels):
            now = utc_now()
            accept = AcceptanceBody(
                waybill=waybill(index),
                destination=DESTINATIONS[index % 2][0],
                sender=sender,
                sender_phone="13800138000",
                inspection=inspection,
                clerk="clerk-1",
            )
            scan = XrayBody(
                waybill=waybill(index), verdict="PASS", operator="op-1",
                image=f"img-{index}", scanned_at=now,
            )  # fmt: skip
            for device, body in ((COUNTER, accept), (XRAY, scan)):
                clearance.handle(
                    make_envelope(
                        station=STATION, device=device, boot=1, seq=index + 1, ts=now, body=body
                    )
                )
            if (index + 1) % 2000 == 0 or index + 1 == parcels:
                print(f"    seeded {index + 1:,}/{parcels:,} parcels", flush=True)
    finally:
        ledger.close()


@dataclass(frozen=True)
class Ask:
    """One scheduled induction: when (s after the start), from which sorter, and what."""

    offset: float
    sorter: int
    key: str
    topic: str
    payload: bytes
    chute: int
    measured: bool


def schedule(args: argparse.Namespace, boot: int, first_parcel: int) -> list[Ask]:
    """``--warmup`` + ``--seconds`` of inductions, each naming the next fresh waybill."""
    period = 1.0 / args.rate
    rounds = round((args.warmup + args.seconds) * args.rate)
    warm = round(args.warmup * args.rate)
    now = utc_now()
    asks = []
    for k in range(rounds):
        for index, device in enumerate(sorters(args.sorters)):
            parcel = first_parcel + k * args.sorters + index
            offset = k * period + index * period / args.sorters
            envelope = make_envelope(
                station=STATION, device=device, boot=boot, seq=k + 1,
                ts=now + dt.timedelta(seconds=offset),
                body=InductionBody(transaction=k, barcode=waybill(parcel)),
            )  # fmt: skip
            topic = str(DeviceTopic(STATION, device, Channel.EVENT))
            chute = DESTINATIONS[parcel % 2][1]
            asks.append(Ask(offset, index, envelope.id, topic, encode(envelope), chute, k >= warm))
    return asks


# -- the sorters -----------------------------------------------------------------------


class Sorters:
    """The sorter clients, all driven by the calling thread with select() (paho's
    external loop): sends happen on schedule and arrivals are stamped as read."""

    def __init__(self, broker: Mosquitto, devices: list[str]) -> None:
        self._broker = broker
        self._devices = devices
        self._clients: list[Any] = []
        self._sockets: dict[Any, Any] = {}
        self._subscribed = 0
        self.refused: list[str] = []
        self.arrivals: list[tuple[float, int, bytes]] = []

    def connect(self, timeout: float = 10.0) -> None:
        for index, device in enumerate(self._devices):
            client = new_client(
                f"{device}-bench", username=device, password=device_password(device)
            )
            client.max_inflight_messages_set(0)
            client.max_queued_messages_set(0)
            topic = str(DeviceTopic(STATION, device, Channel.DECISION))
            client.on_connect = lambda c, u, f, reason, p, t=topic: self._on_connect(c, reason, t)
            client.on_subscribe = lambda *args: self._on_subscribe()
            client.on_message = lambda c, u, m, i=index: self.arrivals.append(
                (time.perf_counter(), i, m.payload)
            )
            client.connect(self._broker.host, self._broker.port)
            self._clients.append(client)
            self._sockets[client.socket()] = client
        deadline = time.monotonic() + timeout
        while self._subscribed < len(self._clients) and not self.refused:
            if time.monotonic() > deadline:
                raise RuntimeError("sorters: not all connected and subscribed within 10 s")
            self.pump(0.05)
        if self.refused:
            raise RuntimeError(f"sorters: broker refused: {self.refused}")

    def _on_connect(self, client: Any, reason: Any, topic: str) -> None:
        if reason.value >= 128:
            self.refused.append(str(reason))
            return
        client.subscribe(topic, qos=1)

    def _on_subscribe(self) -> None:
        self._subscribed += 1

    def pump(self, timeout: float) -> None:
        """Read and write whatever the sockets allow, waiting up to ``timeout`` s."""
        sockets = self._sockets
        writable = [sock for sock, client in sockets.items() if client.want_write()]
        ready, can_write, _ = select.select(list(sockets), writable, [], max(0.0, timeout))
        for sock in ready:
            sockets[sock].loop_read()
        for sock in can_write:
            sockets[sock].loop_write()

    def run(self, asks: list[Ask]) -> tuple[dict[str, float], list[float]]:
        """Send every ask at its time; wait for the answers. Returns the send times by
        key and each send's lateness against the schedule (s)."""
        sent: dict[str, float] = {}
        lateness: list[float] = []
        start = time.perf_counter() + 0.2
        next_misc = start
        for ask in asks:
            due = start + ask.offset
            while (now := time.perf_counter()) < due:
                self.pump(due - now)
            if now >= next_misc:
                for client in self._clients:
                    client.loop_misc()  # keepalive pings
                next_misc = now + 1.0
            sent_at = time.perf_counter()
            self._clients[ask.sorter].publish(ask.topic, ask.payload, qos=1)
            sent[ask.key] = sent_at
            lateness.append(sent_at - due)
        self._drain(len(asks))
        return sent, lateness

    def _drain(self, expected: int) -> None:
        """Wait for the outstanding answers while they keep coming (a saturated responder
        may be far behind), then a moment more for duplicates."""
        seen, quiet_since = len(self.arrivals), time.perf_counter()
        while len(self.arrivals) < expected and time.perf_counter() - quiet_since < QUIET_S:
            self.pump(0.05)
            if len(self.arrivals) > seen:
                seen, quiet_since = len(self.arrivals), time.perf_counter()
                for client in self._clients:
                    client.loop_misc()
        self.pump(0.2)

    def close(self) -> None:
        for client in self._clients:
            client.disconnect()
            with contextlib.suppress(OSError):
                client.loop_write()


# -- the answering side ----------------------------------------------------------------


def echo_main(argv: list[str]) -> None:
    """The bare echo service's process: every event payload back on its decision topic.

    With a third argument, a SQLite file: each payload is first committed there (WAL,
    ``synchronous = FULL``, one transaction each, plain ``sqlite3``), the least any
    service does that answers only after a durable write."""
    host, port, *durable = argv
    client = new_client("bench-echo", username=GATEWAY_USER, password=GATEWAY_PASSWORD)
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    store = None
    if durable:
        store = sqlite3.connect(durable[0], isolation_level=None)
        store.execute("PRAGMA journal_mode = WAL")
        store.execute("PRAGMA synchronous = FULL")
        store.execute("CREATE TABLE IF NOT EXISTS kept (payload BLOB NOT NULL)")

    def on_message(c: Any, userdata: Any, message: Any) -> None:
        if store is not None:
            store.execute("INSERT INTO kept VALUES (?)", (message.payload,))  # its own commit
        c.publish(message.topic.rsplit("/", 1)[0] + "/decision", message.payload, qos=1)

    client.on_connect = lambda c, *args: c.subscribe("postedge/v1/+/+/event", qos=1)
    client.on_subscribe = lambda *args: print("ready", flush=True)
    client.on_message = on_message
    client.connect(host, int(port))
    client.loop_forever()


def start_echo(broker: Mosquitto, durable: Path | None = None) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "echo",
            broker.host,
            str(broker.port),
            *([str(durable)] if durable else []),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError("echo service did not subscribe")
    return process


def start_gateway(
    args: argparse.Namespace, broker: Mosquitto, workdir: Path, client_id: str
) -> tuple[subprocess.Popen[bytes], list[str]]:
    """The gateway as its own process, all its sessions created first; returns the
    process once every session is connected, and the sessions' client ids."""
    broker_config = BrokerConfig(
        host=broker.host, port=broker.port, username=GATEWAY_USER, password=GATEWAY_PASSWORD
    )
    ids = [client_id] if args.workers == 1 else [f"{client_id}-{i}" for i in range(args.workers)]
    for index, worker_id in enumerate(ids):
        form = store_subscription(args.workers, index)
        create_session(broker_config, client_id=worker_id, subscription=form)
    # worker 0 decides, or the ledger process, which takes the gateway's own client id
    ledger_id = DecisionWorker.subscription_client_id(client_id if args.own_process else ids[0])
    create_session(broker_config, client_id=ledger_id, subscription=LEDGER_SUBSCRIPTION)
    config = workdir / f"{client_id}.toml"
    config.write_text(
        f'registry = "{workdir / "registry.toml"}"\n\n'
        f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\nusername = "{GATEWAY_USER}"\n'
        f'password = "{GATEWAY_PASSWORD}"\nclient_id = "{client_id}"\n\n'
        f'[store]\nkind = "sqlite"\npath = "{workdir / f"telemetry-{client_id}.sqlite"}"\n\n'
        f"[ingest]\nworkers = {args.workers}\n\n"
        f'[ledger]\nurl = "{args.ledger_url}"\nkeys_file = "{workdir / "personal.keys"}"\n'
        f"own_process = {'true' if args.own_process else 'false'}\n"
    )
    command = [*CLI, "--log-level", "INFO", "gateway", "run", str(config)]
    if args.threads:
        profile = "1" if args.profile else "0"
        command = [sys.executable, __file__, "threads", str(args.threads), str(config), profile]
    log_path = workdir / f"{client_id}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log_file)
    deadline = time.monotonic() + 60
    while log_path.read_text(errors="replace").count("connected to") < len(ids) + 1:
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError(f"gateway did not connect: {log_path.read_text()[-2000:]}")
        time.sleep(0.05)  # polling a log file for readiness
    return process, [*ids, ledger_id]


def threads_main(argv: list[str]) -> None:
    """Run a one-worker gateway in this process and write each thread's CPU seconds to
    DIR/threads.txt on exit (decisions, ingest and paho's network threads are threads of
    their own); with cProfile on, also one ``{thread}.prof`` per thread."""
    import cProfile
    import logging

    out, config, with_profile = Path(argv[0]), argv[1], argv[2] == "1"
    out.mkdir(parents=True, exist_ok=True)
    profiles: list[tuple[str, cProfile.Profile]] = []
    cpu: list[str] = []
    thread_run = threading.Thread.run

    def measured_run(self: threading.Thread) -> None:
        try:
            if with_profile:
                profile = cProfile.Profile()
                profiles.append((self.name, profile))
                profile.runcall(thread_run, self)
            else:
                thread_run(self)
        finally:
            cpu.append(f"{self.name}: {time.thread_time():.2f} s")

    threading.Thread.run = measured_run  # type: ignore[method-assign]
    from gateway.config import load_gateway_config
    from gateway.service import run_gateway

    logging.basicConfig(level=logging.INFO)
    try:
        run_gateway(load_gateway_config(Path(config)))
    finally:
        cpu.append(f"main: {time.thread_time():.2f} s; process: {time.process_time():.2f} s")
        (out / "threads.txt").write_text("\n".join(cpu) + "\n")
        for index, (name, profile) in enumerate(profiles):
            profile.dump_stats(out / f"{index:02d}-{name}.prof")


# -- measuring -------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and of its live descendants (a gateway's worker and
    ledger processes) from /proc."""
    total = 0.0
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / _TICK
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        total += sum(cpu_seconds(int(child)) for child in children)
    return total


def all_cpu_s() -> float:
    """CPU seconds of every process alive, with the children each has reaped: the
    difference over a window, less our own processes', is what else ran meanwhile.
    (/proc/stat's busy ticks miss the short bursts this benchmark is made of.)"""
    total = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                total += sum(int(value) for value in fields[11:15])
    return total / _TICK


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass
class Run:
    contender: str
    sent: int
    answered: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    measured: int
    lateness_p99_ms: float
    lateness_max_ms: float
    responder_cpu_s: float
    broker_cpu_s: float
    sorters_cpu_s: float
    others_cpu_s: float
    window_s: float
    answer_rate: float
    p50_first_ms: float
    p50_last_ms: float
    missing: list[str] = field(default_factory=list)
    not_routed: list[str] = field(default_factory=list)
    duplicates: int = 0


def measure(
    contender: str,
    broker: Mosquitto,
    responder: subprocess.Popen[Any],
    asks: list[Ask],
    devices: list[str],
) -> Run:
    """Drive the schedule against whichever responder is running; check every answer."""
    clients = Sorters(broker, devices)
    clients.connect()
    pids = (responder.pid, broker_pid(broker))
    before = (*map(cpu_seconds, pids), time.process_time(), all_cpu_s())
    began = time.monotonic()
    try:
        sent, lateness = clients.run(asks)
    finally:
        cpu = (*map(cpu_seconds, pids), time.process_time(), all_cpu_s())
        window = time.monotonic() - began
        clients.close()
    used = [after - earlier for after, earlier in zip(cpu, before, strict=True)]
    arrived, not_routed, duplicates = check(contender, asks, clients.arrivals)
    measured = [a for a in asks if a.measured]
    latency = {a.key: (arrived[a.key] - sent[a.key]) * 1000 for a in measured if a.key in arrived}
    latencies = sorted(latency.values())
    if not latencies:
        raise RuntimeError(f"{contender}: not one answer arrived")
    tenth = max(1, len(measured) // 10)
    first, last = sent[measured[0].key], sent[measured[-1].key]
    late = sorted(x * 1000 for x in lateness)
    return Run(
        contender=contender,
        sent=len(sent),
        answered=len(arrived),
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        max_ms=latencies[-1],
        mean_ms=statistics.fmean(latencies),
        measured=len(latencies),
        lateness_p99_ms=percentile(late, 0.99),
        lateness_max_ms=late[-1],
        responder_cpu_s=used[0],
        broker_cpu_s=used[1],
        sorters_cpu_s=used[2],
        others_cpu_s=used[3] - used[0] - used[1] - used[2],
        window_s=window,
        answer_rate=sum(first <= at <= last for at in arrived.values()) / (last - first),
        p50_first_ms=median_of(latency, measured[:tenth]),
        p50_last_ms=median_of(latency, measured[-tenth:]),
        missing=[a.key for a in asks if a.key not in arrived],
        not_routed=not_routed,
        duplicates=duplicates,
    )


def median_of(latency: dict[str, float], asks: list[Ask]) -> float:
    values = [latency[a.key] for a in asks if a.key in latency]
    return statistics.median(values) if values else math.nan


def check(
    contender: str, asks: list[Ask], arrivals: list[tuple[float, int, bytes]]
) -> tuple[dict[str, float], list[str], int]:
    """First arrival time by key, the answers that were not a routed decision for the
    right sorter and chute, and the number of duplicates."""
    by_key = {ask.key: ask for ask in asks}
    arrived: dict[str, float] = {}
    not_routed, duplicates = [], 0
    for at, sorter, payload in arrivals:
        if contender == "gateway":
            decision = DecisionMessage.model_validate_json(payload)
            key, body = decision.request or "", decision.body
            ask = by_key.get(key)
            if ask is None or body.kind != "sort" or ask.sorter != sorter:
                not_routed.append(f"{key}: unexpected {payload[:200]!r}")
                continue
            if body.reason is not None or body.chute != ask.chute:
                not_routed.append(f"{key}: chute {body.chute}, reason {body.reason}")
        else:
            key = json.loads(payload)["id"]
        if key in arrived:
            duplicates += 1
            continue
        arrived[key] = at
    return arrived, not_routed, duplicates


def broker_pid(broker: Mosquitto) -> int:
    assert broker.process is not None
    return broker.process.pid


def show(run: Run) -> None:
    print(
        f"    p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms, max {run.max_ms:.2f} ms "
        f"({run.measured:,} measured; {run.answered:,}/{run.sent:,} answered; "
        f"{len(run.not_routed)} not routed; {run.duplicates} duplicates)\n"
        f"    answered {run.answer_rate:,.0f}/s while sending; p50 of the first tenth "
        f"{run.p50_first_ms:.2f} ms, of the last {run.p50_last_ms:.2f} ms",
        flush=True,
    )
    for problem in (run.missing[:5], run.not_routed[:5]):
        for line in problem:
            print(f"      ! {line}", flush=True)


# -- main ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per run")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds sent before, not counted"
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--sorters", type=int, default=10)
    parser.add_argument("--rate", type=float, default=50.0, help="inductions per second per sorter")
    parser.add_argument("--ledger-url", help="default: a SQLite file in the temp dir")
    parser.add_argument("--workers", type=int, default=1, help="gateway [ingest] workers")
    parser.add_argument(
        "--own-process", action="store_true", help="[ledger] own_process: decisions apart"
    )
    parser.add_argument(
        "--threads", type=Path, help="write the gateway's CPU seconds per thread to DIR"
    )
    parser.add_argument("--profile", action="store_true", help="with --threads: cProfile too")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    if args.threads and args.workers != 1:
        parser.error("--threads runs the gateway in one process: use --workers 1")
    runs: list[tuple[Run, Run, Run]] = []
    devices = sorters(args.sorters)
    per_run = round((args.warmup + args.seconds) * args.rate) * args.sorters
    with tempfile.TemporaryDirectory(prefix="postedge-decisions-") as tmp:
        workdir = Path(tmp)
        args.ledger_url = args.ledger_url or f"sqlite:///{workdir / 'ledger.sqlite'}"
        write_registry(workdir / "registry.toml", devices)
        (workdir / "personal.keys").write_text(Keyring.generate().dump())
        (workdir / "personal.keys").chmod(0o600)
        print(f"seeding {per_run * args.repeat:,} cleared parcels ...", flush=True)
        began = time.monotonic()
        seed(args.ledger_url, workdir / "personal.keys", workdir / "registry.toml",
             per_run * args.repeat)  # fmt: skip
        print(f"    done in {time.monotonic() - began:.0f} s", flush=True)
        broker = make_broker(workdir, [*devices, COUNTER, XRAY])
        broker.start()
        try:
            for round_ in range(args.repeat):
                runs.append(one_round(args, broker, workdir, devices, round_, per_run))
        finally:
            broker.stop()
    report(args, runs)


def one_round(
    args: argparse.Namespace,
    broker: Mosquitto,
    workdir: Path,
    devices: list[str],
    round_: int,
    per_run: int,
) -> tuple[Run, Run, Run]:
    tag = f"[{round_ + 1}/{args.repeat}]"
    total = f"{args.sorters} sorters x {args.rate:g}/s for {args.warmup:g} + {args.seconds:g} s"
    print(f"{tag} bare echo round trip: {total} ...", flush=True)
    echo = start_echo(broker)
    try:
        bare = measure("bare", broker, echo, schedule(args, 1000 + round_, 0), devices)
    finally:
        stop_process(echo)
    show(bare)
    print(f"{tag} durable echo (a SQLite commit before each echo): {total} ...", flush=True)
    echo = start_echo(broker, workdir / f"durable-echo-{round_}.sqlite")
    try:
        durable = measure("durable", broker, echo, schedule(args, 2000 + round_, 0), devices)
    finally:
        stop_process(echo)
    show(durable)
    print(f"{tag} gateway: {total} ...", flush=True)
    client_id = f"gw-bench-r{round_}"
    gateway, sessions = start_gateway(args, broker, workdir, client_id)
    try:
        asks = schedule(args, round_ + 1, round_ * per_run)
        decided = measure("gateway", broker, gateway, asks, devices)
    finally:
        stop_process(gateway)
        forget_sessions(broker, sessions, username=GATEWAY_USER, password=GATEWAY_PASSWORD)
    show(decided)
    return bare, durable, decided


def report(args: argparse.Namespace, runs: list[tuple[Run, Run, Run]]) -> None:
    keys = ("p50_ms", "p99_ms", "max_ms")

    def med(index: int) -> dict[str, float]:
        return {k: statistics.median([getattr(run[index], k) for run in runs]) for k in keys}

    bare, durable, gw = med(0), med(1), med(2)
    ratio = {k: gw[k] / bare[k] for k in keys}
    floor = {k: durable[k] / bare[k] for k in keys}
    met = gw["p99_ms"] <= TARGET_RATIO * bare["p99_ms"] and gw["p99_ms"] < TARGET_MS
    problems = sum(len(g.missing) + len(g.not_routed) for *_, g in runs)
    print(
        f"\n{args.sorters} sorters x {args.rate:g} inductions/s, {args.seconds:g} s measured, "
        f"median of {len(runs)} run(s):\n"
    )
    print("| round trip | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|")
    for name, row in (("bare paho echo", bare), ("durable echo (SQLite commit first)", durable),
                      ("**gateway decision**", gw), ("ratio gateway / bare", ratio),
                      ("ratio durable echo / bare", floor)):  # fmt: skip
        print(f"| {name} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['max_ms']:.2f} |")
    print(
        f"\ntarget (p99 <= {TARGET_RATIO:g} x bare p99 and < {TARGET_MS:g} ms): "
        f"{'met' if met else 'NOT met'}; decisions missing or not routed: {problems}"
    )
    others = max(run.others_cpu_s / run.window_s for triple in runs for run in triple)
    if others > OTHERS_LIMIT:
        print(
            f"WARNING: other processes kept up to {others:.2f} cores busy during a window: "
            "the figures are disturbed; run again on a quiet machine"
        )
    for index, triple in enumerate(runs):
        for run in triple:
            print(
                f"run {index + 1} {run.contender}: p50/p99/max {run.p50_ms:.2f}/{run.p99_ms:.2f}/"
                f"{run.max_ms:.2f} ms; send lateness p99/max {run.lateness_p99_ms:.2f}/"
                f"{run.lateness_max_ms:.2f} ms; answered {run.answer_rate:,.0f}/s; cpu over "
                f"{run.window_s:.1f} s: responder {run.responder_cpu_s:.1f} s, broker "
                f"{run.broker_cpu_s:.1f} s, sorters {run.sorters_cpu_s:.1f} s, other "
                f"processes {run.others_cpu_s:.1f} s"
            )
    if args.json:
        summary = {"bare": bare, "durable_echo": durable, "gateway": gw, "ratio": ratio,
                   "durable_ratio": floor, "target_met": met, "problems": problems,
                   "others_cores": others}  # fmt: skip
        detail = [{"bare": asdict(b), "durable_echo": asdict(d), "gateway": asdict(g)}
                  for b, d, g in runs]  # fmt: skip
        args.json.write_text(json.dumps({"median": summary, "runs": detail}, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["echo"]:
        echo_main(sys.argv[2:])
    elif sys.argv[1:2] == ["threads"]:
        threads_main(sys.argv[2:])
    else:
        main()
