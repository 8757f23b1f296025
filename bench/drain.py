"""Drain benchmark: a station's 24-hour backlog, sent end to end once the link returns.

A station with 4 probes read at 1 Hz collects 345,600 readings in 24 hours without a
link. The benchmark writes exactly that backlog into a station's outbox, as the agent
would have written it while the link was down: temperature envelopes for one device, 4
probes, 1 s apart over the past 24 hours, committed with ``Outbox.add_many`` and
numbered by the device's ``SequenceStore`` (boot 1; the agent's own numbers continue
above). Then, against a private Mosquitto and the gateway running as its own process
(``postedge gateway run``, SQLite store by default, its session created beforehand),
it starts ``postedge edge run`` on a station file naming that device with no drivers.

- Drain time: from starting the agent until its outbox is empty, i.e. every reading was
  published, stored by the gateway and confirmed by a receipt (the outbox file is read
  by the benchmark every 100 ms). Afterwards the store must hold exactly the backlog,
  counted per probe with the store's own ``query_series`` (or an InfluxQL count).
- Time to the first receipt (agent start-up, connect, first stored batch) is taken by a
  subscriber to the device's receipt topic and reported apart, with the rate after it.
- Baseline, same run: the same payloads published from memory by a bare paho client
  (QoS 1, as the device user, in a process of its own that loaded them before the clock
  starts) into a fresh gateway and store, timed from the first publish until the store
  holds them all: no outbox, no receipts. It keeps at most 10,000 publishes unacknowledged
  by the broker, the agent's default in-flight window. (``--publisher chunks`` uses
  bench/ingest.py's way instead, paho's own in-flight limit of 2,000: on every PUBACK
  paho then walks its message table past the ~2,000 in flight to find the next queued
  one, which caps it near 5,000 messages/s here.)

Figures are readings/s and the ratio agent / baseline. CPU seconds of the agent, the
gateway (with its workers) and the broker over each drain are reported too, to show
what limits the rate.

    python bench/drain.py [--readings N] [--repeat R] [--store sqlite|influxdb]
        [--workers W] [--publisher window|chunks] [--json FILE]

With POSTEDGE_BENCH_PROFILE=DIR the agent runs under cProfile, one profile per thread
written to DIR (its rate is then not representative).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import forget_sessions, stop_process  # noqa: E402

from contracts import Channel, DeviceTopic, TemperatureBody, make_envelope, utc_now  # noqa: E402
from contracts.mqtt import new_client  # noqa: E402
from contracts.receipts import decode_receipt  # noqa: E402
from edge.outbox import Outbox  # noqa: E402
from edge.sequence import SequenceStore  # noqa: E402
from gateway.config import BrokerConfig  # noqa: E402
from gateway.consumer import create_session, store_subscription  # noqa: E402
from gateway.mosquitto import AclRule  # noqa: E402
from gateway.telemetry import SqliteStoreConfig, open_store  # noqa: E402
from postedge.localservers import Influxd, Mosquitto  # noqa: E402

STATION = "bench-station"
DEVICE = "bench-cold"
DEVICE_PASSWORD = "bench-device-secret"
GATEWAY_USER, GATEWAY_PASSWORD = "gateway", "bench-secret"
PROBES = ("p0", "p1", "p2", "p3")
OUTBOX_MAX_MB = 256  # the agent's default quota; the backlog (~90 MB) stays below it
CHUNK = 20_000
POLL_S = 0.1
WINDOW = 10_000  # the agent's default [limits] inflight
PROFILE_ENV = "POSTEDGE_BENCH_PROFILE"  # a directory: profile the agent (slows it down)
CLI = [sys.executable, "-m", "postedge.cli"]


def make_broker(workdir: Path, devices: dict[str, str]) -> Mosquitto:
    """A private broker: the gateway user may do anything, devices only their own topics."""
    return Mosquitto(
        workdir / "mosquitto",
        users={GATEWAY_USER: GATEWAY_PASSWORD, **devices},
        acl={GATEWAY_USER: [AclRule("readwrite", "#"), AclRule("readwrite", "$share/#")]},
    )


# -- the backlog -----------------------------------------------------------------------


def prefill(data_dir: Path, readings: int) -> None:
    """Write the backlog into ``data_dir``'s outbox as the agent would have while offline."""
    seconds = math.ceil(readings / len(PROBES))
    start = utc_now().replace(microsecond=0) - timedelta(seconds=seconds)
    block = max(400_000, readings + 1)  # one reservation covers the whole backlog
    sequence = SequenceStore(data_dir / f"{DEVICE}.seq.json", block=block)
    outbox = Outbox(data_dir / "outbox.sqlite", max_bytes=OUTBOX_MAX_MB * 1024 * 1024)
    topic = str(DeviceTopic(STATION, DEVICE, Channel.TELEMETRY))
    with sequence, outbox:
        for first in range(0, readings, CHUNK):
            items = []
            for index in range(first, min(first + CHUNK, readings)):
                boot, seq = sequence.next()
                second, probe = divmod(index, len(PROBES))
                body = TemperatureBody(
                    probe=PROBES[probe], celsius=round(3.0 + (second % 600) / 100 + probe, 2)
                )
                envelope = make_envelope(
                    station=STATION,
                    device=DEVICE,
                    boot=boot,
                    seq=seq,
                    ts=start + timedelta(seconds=second),
                    body=body,
                )
                items.append((envelope, topic))
            outbox.add_many(items)
            print(f"    prefill {min(first + CHUNK, readings):,}/{readings:,}", flush=True)
        depth = outbox.depth(DEVICE)
    if depth != readings:
        raise RuntimeError(f"prefill: outbox holds {depth} messages, expected {readings}")


def backlog_payloads(outbox_path: Path) -> list[tuple[str, bytes]]:
    """The backlog exactly as the agent will publish it, in sequence order."""
    with contextlib.closing(sqlite3.connect(f"file:{outbox_path}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT topic, payload FROM messages ORDER BY device, seq")
        return [(topic, bytes(payload)) for topic, payload in rows]


# -- the store -------------------------------------------------------------------------


class Store:
    """The gateway's store for one contender: a fresh SQLite file or InfluxDB database."""

    def __init__(self, kind: str, workdir: Path, name: str, influx: Influxd | None) -> None:
        self.kind = kind
        self.path = workdir / f"{name}.sqlite"
        self.database = name
        self.influx = influx

    def toml(self) -> str:
        if self.kind == "sqlite":
            return f'[store]\nkind = "sqlite"\npath = "{self.path}"\n'
        assert self.influx is not None
        self.influx.create_database(self.database)
        return (
            f'[store]\nkind = "influxdb"\nurl = "{self.influx.url}"\ndatabase = "{self.database}"\n'
        )

    def count_fast(self) -> int:
        """Temperature points stored so far, cheap enough to poll."""
        if self.kind == "influxdb":
            return self._influx_count()
        if not self.path.exists():
            return 0
        uri = f"file:{self.path}?mode=ro"
        try:
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
                row = conn.execute(
                    "SELECT COUNT(*) FROM points WHERE series_id IN "
                    "(SELECT id FROM series WHERE measurement = 'temperature')"
                ).fetchone()
        except sqlite3.OperationalError:  # the gateway has not made its tables yet
            return 0
        return int(row[0])

    def count_exact(self) -> dict[str, int]:
        """Readings of the device per probe, through the store's own query interface."""
        if self.kind == "influxdb":
            return {"all": self._influx_count()}
        store = open_store(SqliteStoreConfig(kind="sqlite", path=self.path))
        store.open()
        try:
            tags = {"station": STATION, "device": DEVICE}
            return {
                probe: len(store.query_series("temperature", "celsius", {**tags, "probe": probe}))
                for probe in PROBES
            }
        finally:
            store.close()

    def _influx_count(self) -> int:
        assert self.influx is not None
        result = self.influx.query(
            f'SELECT count("celsius") FROM "temperature" WHERE "device" = \'{DEVICE}\'',  # noqa: S608
            db=self.database,
        )
        series = result["results"][0].get("series")  # type: ignore[index]
        return int(series[0]["values"][0][1]) if series else 0


# -- processes -------------------------------------------------------------------------


def start_gateway(
    broker: Mosquitto, store: Store, workers: int, workdir: Path, client_id: str
) -> tuple[subprocess.Popen[bytes], list[str]]:
    """The gateway as its own process, its session(s) created first; returns once every
    worker is connected. Returns the process and its workers' client ids."""
    ids = [client_id] if workers == 1 else [f"{client_id}-{index}" for index in range(workers)]
    broker_config = BrokerConfig(
        host=broker.host, port=broker.port, username=GATEWAY_USER, password=GATEWAY_PASSWORD
    )
    for index, worker_id in enumerate(ids):
        form = store_subscription(workers, index)
        create_session(broker_config, client_id=worker_id, subscription=form)
    config = workdir / f"{client_id}.toml"
    config.write_text(
        f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\nusername = "{GATEWAY_USER}"\n'
        f'password = "{GATEWAY_PASSWORD}"\nclient_id = "{client_id}"\n\n'
        f"{store.toml()}\n[ingest]\nworkers = {workers}\n"
    )
    log_path = workdir / f"{client_id}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*CLI, "--log-level", "INFO", "gateway", "run", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    wait_for_log(process, log_path, "connected to", workers, what="gateway workers connected")
    return process, ids


def wait_for_log(
    process: subprocess.Popen[bytes], path: Path, text: str, times: int, *, what: str
) -> None:
    deadline = time.monotonic() + 60
    while path.read_text(errors="replace").count(text) < times:
        if process.poll() is not None:
            raise RuntimeError(f"{what}: process exited: {path.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within 60 s: {path.read_text()[-2000:]}")
        time.sleep(0.05)  # polling a log file for readiness


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, *, tree: bool = False) -> float:
    """utime + stime of ``pid`` (and, with ``tree``, of its live descendants) from /proc."""
    pids = [pid, *descendants(pid)] if tree else [pid]
    total = 0
    for each in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _TICK


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat): with the processes' own
    CPU it shows how much else ran on the machine during a measurement."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values) - idle) / _TICK


def descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


class ReceiptWatch:
    """Subscribes to the device's receipts: when the first one naming the backlog came."""

    def __init__(self, broker: Mosquitto, backlog_last_seq: int) -> None:
        self.first_at: float | None = None
        self.first_count = 0
        self.receipts = 0
        self._last = backlog_last_seq
        self._subscribed = threading.Event()
        self._client = new_client(
            "bench-receipts", username=GATEWAY_USER, password=GATEWAY_PASSWORD
        )
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        topic = str(DeviceTopic(STATION, DEVICE, Channel.RECEIPT))
        self._client.on_connect = lambda client, *args: client.subscribe(topic, qos=1)
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("receipt watcher: no SUBACK")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        receipt = decode_receipt(bytes(message.payload))
        self.receipts += 1
        backlog = sum(max(0, min(last, self._last) - first + 1) for first, last in receipt.ranges)
        if self.first_at is None and backlog:
            self.first_at = time.monotonic()
            self.first_count = backlog

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


# -- the contenders --------------------------------------------------------------------


@dataclass
class AgentRun:
    seconds: float
    rate: float
    first_receipt_s: float
    rate_after_first: float
    receipts: int
    agent_cpu_s: float
    gateway_cpu_s: float
    broker_cpu_s: float
    machine_busy_s: float


def station_toml(path: Path, broker: Mosquitto, data_dir: Path) -> None:
    path.write_text(
        f'station = "{STATION}"\ndata_dir = "{data_dir}"\n\n'
        f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\n\n'
        f"[limits]\noutbox_max_mb = {OUTBOX_MAX_MB}\n\n"
        f'[[devices]]\nid = "{DEVICE}"\npassword = "{DEVICE_PASSWORD}"\n'
    )


def agent_command(station: Path) -> list[str]:
    """``postedge edge run``; under cProfile, every thread apart, if $PROFILE_DIR is set."""
    profile_dir = os.environ.get(PROFILE_ENV)
    if profile_dir:
        return [sys.executable, __file__, "profile-agent", profile_dir, str(station)]
    return [*CLI, "edge", "run", str(station)]


def profile_agent_main(argv: list[str]) -> None:
    """Run the agent in this process with one cProfile per thread (the sender and the
    link run on threads of their own); write ``{thread}.prof`` files on exit."""
    import cProfile

    out, station = Path(argv[0]), argv[1]
    out.mkdir(parents=True, exist_ok=True)
    profiles: list[tuple[str, cProfile.Profile]] = []
    thread_run = threading.Thread.run

    def profiled_run(self: threading.Thread) -> None:
        profile = cProfile.Profile()
        profiles.append((self.name, profile))
        profile.runcall(thread_run, self)

    threading.Thread.run = profiled_run  # type: ignore[method-assign]
    from postedge.cli import main as cli_main

    sys.argv = ["postedge", "edge", "run", station]
    main_profile = cProfile.Profile()
    profiles.append(("main", main_profile))
    try:
        main_profile.runcall(cli_main)
    except SystemExit:
        pass
    finally:
        for index, (name, profile) in enumerate(profiles):
            profile.dump_stats(out / f"{index:02d}-{name}.prof")


def outbox_rows(path: Path, *, count: bool) -> int:
    """Rows left in the agent's outbox: a count, or 0/1 for empty/not (cheap, by key)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as conn:
        sql = "SELECT COUNT(*) FROM messages" if count else "SELECT EXISTS(SELECT 1 FROM messages)"
        return int(conn.execute(sql).fetchone()[0])


def run_agent(
    args: argparse.Namespace,
    broker: Mosquitto,
    influx: Influxd | None,
    workdir: Path,
    template: Path,
    tag: str,
) -> AgentRun:
    """Copy the prefilled station, start the gateway, then the agent; time the drain."""
    data_dir = workdir / f"agent-{tag}"
    shutil.copytree(template, data_dir)
    outbox_path = data_dir / "outbox.sqlite"
    store = Store(args.store, workdir, f"agent_{tag}", influx)
    gateway, ids = start_gateway(broker, store, args.workers, workdir, f"gw-agent-{tag}")
    watch = ReceiptWatch(broker, backlog_last_seq=args.readings)
    station = workdir / f"station-{tag}.toml"
    station_toml(station, broker, data_dir)
    broker_cpu = broker_cpu_s(broker)
    log_path = workdir / f"agent-{tag}.log"
    busy = machine_busy_s()
    try:
        with log_path.open("wb") as log_file:
            started = time.monotonic()
            agent = subprocess.Popen(
                agent_command(station), stdout=subprocess.DEVNULL, stderr=log_file
            )
        try:
            next_report = started + 5
            while outbox_rows(outbox_path, count=False):
                now = time.monotonic()
                if agent.poll() is not None:
                    raise RuntimeError(f"agent exited: {log_path.read_text()[-2000:]}")
                if now - started > args.timeout:
                    left = outbox_rows(outbox_path, count=True)
                    raise RuntimeError(f"agent: {left} still in the outbox after {args.timeout} s")
                if now >= next_report:
                    left = outbox_rows(outbox_path, count=True)
                    done = 100 * (1 - left / args.readings)
                    print(f"    {now - started:5.0f} s: {done:5.1f} % drained", flush=True)
                    next_report += 5
                time.sleep(POLL_S)  # sampling interval of the measurement
            elapsed = time.monotonic() - started
            agent_cpu = cpu_seconds(agent.pid)
            gateway_cpu = cpu_seconds(gateway.pid, tree=True)
            broker_cpu = broker_cpu_s(broker) - broker_cpu
            busy = machine_busy_s() - busy
        finally:
            stop_process(agent)
    finally:
        watch.close()
        stop_process(gateway)
        forget_sessions(broker, ids, username=GATEWAY_USER, password=GATEWAY_PASSWORD)
    check_stored(store, args.readings)
    if watch.first_at is None:
        raise RuntimeError("the outbox emptied but no receipt was seen")
    first = watch.first_at - started
    return AgentRun(
        seconds=elapsed,
        rate=args.readings / elapsed,
        first_receipt_s=first,
        rate_after_first=(args.readings - watch.first_count) / (elapsed - first),
        receipts=watch.receipts,
        agent_cpu_s=agent_cpu,
        gateway_cpu_s=gateway_cpu,
        broker_cpu_s=broker_cpu,
        machine_busy_s=busy,
    )


def broker_cpu_s(broker: Mosquitto) -> float:
    return cpu_seconds(broker.process.pid) if broker.process is not None else 0.0


def check_stored(store: Store, readings: int) -> None:
    counts = store.count_exact()
    total = sum(counts.values())
    if total != readings:
        raise RuntimeError(f"store holds {total} readings of {DEVICE} ({counts}), sent {readings}")


@dataclass
class BaselineRun:
    seconds: float
    rate: float
    gateway_cpu_s: float
    broker_cpu_s: float
    publisher_cpu_s: float
    machine_busy_s: float


def run_baseline(
    args: argparse.Namespace,
    broker: Mosquitto,
    influx: Influxd | None,
    workdir: Path,
    outbox_path: Path,
    tag: str,
) -> BaselineRun:
    """The same payloads from memory by a bare QoS 1 publisher; timed until all stored."""
    store = Store(args.store, workdir, f"bare_{tag}", influx)
    gateway, ids = start_gateway(broker, store, args.workers, workdir, f"gw-bare-{tag}")
    total = args.readings
    publisher = subprocess.Popen(
        [sys.executable, __file__, "publish", args.publisher, str(outbox_path), broker.host,
         str(broker.port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert publisher.stdin is not None
    assert publisher.stdout is not None
    try:
        if publisher.stdout.readline() != b"ready\n":  # the payloads are in its memory
            raise RuntimeError("baseline publisher failed to start")
        started = time.monotonic()
        broker_cpu, busy = broker_cpu_s(broker), machine_busy_s()
        publisher.stdin.write(b"go\n")
        publisher.stdin.flush()
        next_report = started + 5
        while (done := store.count_fast()) < total:
            now = time.monotonic()
            if now - started > args.timeout:
                raise RuntimeError(f"baseline: {done}/{total} stored after {args.timeout} s")
            if publisher.poll() not in (None, 0):
                raise RuntimeError(f"baseline publisher failed ({publisher.returncode})")
            if now >= next_report:
                print(f"    {now - started:5.0f} s: {100 * done / total:5.1f} % stored", flush=True)
                next_report += 5
            time.sleep(POLL_S)  # sampling interval of the measurement
        elapsed = time.monotonic() - started
        gateway_cpu = cpu_seconds(gateway.pid, tree=True)
        broker_cpu, busy = broker_cpu_s(broker) - broker_cpu, machine_busy_s() - busy
        publisher_cpu = float(publisher.stdout.readline().split()[1])  # "cpu SECONDS"
        publisher.wait(60)
    finally:
        if publisher.poll() is None:
            publisher.kill()
            publisher.wait()
        stop_process(gateway)
        forget_sessions(broker, ids, username=GATEWAY_USER, password=GATEWAY_PASSWORD)
    check_stored(store, total)
    return BaselineRun(
        seconds=elapsed,
        rate=total / elapsed,
        gateway_cpu_s=gateway_cpu,
        broker_cpu_s=broker_cpu,
        publisher_cpu_s=publisher_cpu,
        machine_busy_s=busy,
    )


def publish_main(argv: list[str]) -> None:
    """The baseline publisher's process: load the payloads, say ready, publish on "go"."""
    how, outbox_path, host, port = argv
    payloads = backlog_payloads(Path(outbox_path))
    client = new_client("bench-publisher", username=DEVICE, password=DEVICE_PASSWORD)
    client.max_queued_messages_set(0)
    # paho takes its in-flight limit only before connecting; 0 means no limit.
    client.max_inflight_messages_set(0 if how == "window" else 2000)
    client.connect(host, int(port))
    client.loop_start()
    print("ready", flush=True)
    sys.stdin.readline()
    if how == "window":
        publish_window(client, payloads)
    else:
        publish_chunks(client, payloads)
    client.disconnect()
    client.loop_stop()
    print(f"cpu {time.process_time():.3f}", flush=True)


def publish_window(client: Any, payloads: list[tuple[str, bytes]]) -> None:
    """At most WINDOW publishes unacknowledged by the broker (the agent's default inflight)."""
    window = threading.Semaphore(WINDOW)
    finished = threading.Event()
    acked = 0

    def on_publish(*args: Any) -> None:
        nonlocal acked
        acked += 1
        window.release()
        if acked == len(payloads):
            finished.set()

    client.on_publish = on_publish
    for topic, payload in payloads:
        window.acquire()
        client.publish(topic, payload, qos=1)
    finished.wait(600)


def publish_chunks(client: Any, payloads: list[tuple[str, bytes]]) -> None:
    """As bench/ingest.py's publish_all: paho's in-flight limit of 2000, 20,000 at a time."""
    # paho's message ids wrap at 65535: never have more than that outstanding.
    for start in range(0, len(payloads), 20_000):
        infos = [
            client.publish(topic, payload, qos=1)
            for topic, payload in payloads[start : start + 20_000]
        ]
        for info in infos:
            info.wait_for_publish(300)


# -- main ------------------------------------------------------------------------------


@contextlib.contextmanager
def servers(workdir: Path, store: str) -> Iterator[tuple[Mosquitto, Influxd | None]]:
    broker = make_broker(workdir, {DEVICE: DEVICE_PASSWORD})
    influx = Influxd(workdir / "influxd") if store == "influxdb" else None
    broker.start()
    try:
        if influx is not None:
            influx.start()
        yield broker, influx
    finally:
        if influx is not None:
            influx.stop()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readings", type=int, default=345_600)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--store", choices=["sqlite", "influxdb"], default="sqlite")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800, help="give up a drain after this")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--publisher",
        choices=["window", "chunks"],
        default="window",
        help="baseline publisher: a 10,000-message window (default), or ingest.py's chunks",
    )
    args = parser.parse_args()
    agent_runs: list[AgentRun] = []
    baseline_runs: list[BaselineRun] = []
    with tempfile.TemporaryDirectory(prefix="postedge-drain-") as tmp:
        workdir = Path(tmp)
        template = workdir / "template"
        print(f"prefilling the outbox with {args.readings:,} readings ...", flush=True)
        began = time.monotonic()
        prefill(template, args.readings)
        print(f"    done in {time.monotonic() - began:.0f} s", flush=True)
        with servers(workdir, args.store) as (broker, influx):
            for round_ in range(args.repeat):
                tag = f"r{round_}"
                print(f"[{round_ + 1}/{args.repeat}] agent: starting ...", flush=True)
                run = run_agent(args, broker, influx, workdir, template, tag)
                agent_runs.append(run)
                print(
                    f"    {run.rate:,.0f} readings/s ({run.seconds:.1f} s, first receipt "
                    f"after {run.first_receipt_s:.2f} s, then {run.rate_after_first:,.0f}/s)",
                    flush=True,
                )
                print(f"[{round_ + 1}/{args.repeat}] baseline: publishing ...", flush=True)
                base = run_baseline(args, broker, influx, workdir, template / "outbox.sqlite", tag)
                baseline_runs.append(base)
                print(f"    {base.rate:,.0f} readings/s ({base.seconds:.1f} s)", flush=True)
    report(args, agent_runs, baseline_runs)


def report(args: argparse.Namespace, agent: list[AgentRun], baseline: list[BaselineRun]) -> None:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    rate, base = med([r.rate for r in agent]), med([b.rate for b in baseline])
    summary = {
        "readings": args.readings,
        "store": args.store,
        "workers": args.workers,
        "agent_rate": rate,
        "agent_seconds": med([r.seconds for r in agent]),
        "first_receipt_s": med([r.first_receipt_s for r in agent]),
        "agent_rate_after_first": med([r.rate_after_first for r in agent]),
        "baseline_rate": base,
        "ratio": rate / base,
    }
    print(
        f"\n{args.readings:,} readings, store {args.store}, {args.workers} gateway worker(s), "
        f"median of {len(agent)} run(s):\n"
    )
    print("| contender | readings/s | seconds | ratio to baseline |")
    print("|---|---:|---:|---:|")
    print(f"| bare paho publisher from memory (baseline) | {base:,.0f} | "
          f"{med([b.seconds for b in baseline]):.1f} | 1.00 |")  # fmt: skip
    print(f"| **edge agent, outbox drain** | {rate:,.0f} | {summary['agent_seconds']:.1f} | "
          f"{rate / base:.2f} |")  # fmt: skip
    print(
        f"\ntime to first receipt {summary['first_receipt_s']:.2f} s; rate after it "
        f"{summary['agent_rate_after_first']:,.0f} readings/s; target 5,000 readings/s: "
        f"{'met' if rate >= 5000 else 'NOT met'}"
    )
    for index, (run, bare) in enumerate(zip(agent, baseline, strict=True)):
        print(
            f"run {index + 1}: agent {run.rate:,.0f}/s ({run.seconds:.1f} s; cpu agent "
            f"{run.agent_cpu_s:.1f} s, gateway {run.gateway_cpu_s:.1f} s, broker "
            f"{run.broker_cpu_s:.1f} s, machine busy {run.machine_busy_s:.1f} s; "
            f"{run.receipts} receipts); baseline {bare.rate:,.0f}/s ({bare.seconds:.1f} s; cpu "
            f"publisher {bare.publisher_cpu_s:.1f} s, gateway {bare.gateway_cpu_s:.1f} s, "
            f"broker {bare.broker_cpu_s:.1f} s, machine busy {bare.machine_busy_s:.1f} s)"
        )
    if args.json:
        runs = {"agent": [asdict(r) for r in agent], "baseline": [asdict(b) for b in baseline]}
        args.json.write_text(json.dumps({"median": summary, "runs": runs}, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["publish"]:
        publish_main(sys.argv[2:])
    elif sys.argv[1:2] == ["profile-agent"]:
        profile_agent_main(sys.argv[2:])
    else:
        main()
