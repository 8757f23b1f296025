"""Ingest benchmark: drain a backlog queued at the broker into a real InfluxDB.

N temperature messages are queued at a private Mosquitto while the consumer is away
(its persistent session holds them), then the consumer starts and drains them into a
private InfluxDB. The drain rate is (points stored) / (time from the first stored batch
to the last), taken by polling ``SELECT count(*)``; the same method measures:

- ``postedge gateway`` with 1 and 2 workers: validates every envelope, writes through
  the telemetry store and acknowledges only after InfluxDB accepted the write;
- a bare paho consumer (bench/bare_consumer.py): json.loads, hand-built line protocol,
  batched writes, acknowledged after the write;
- the same bare consumer acknowledging on receipt, which loses whatever is in flight
  when InfluxDB restarts.

Figures are reported as points/s and as ratios to the bare consumer (ack after write,
same number of processes) measured in the same run.

    python bench/ingest.py [--messages N] [--devices D] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contracts import TemperatureBody, encode, make_envelope  # noqa: E402
from contracts.mqtt import new_client  # noqa: E402
from gateway.mosquitto import AclRule  # noqa: E402
from postedge.localservers import Influxd, Mosquitto  # noqa: E402

USER, PASSWORD = "gateway", "bench-secret"


def messages(count: int, devices: int) -> list[tuple[str, bytes]]:
    """``count`` valid temperature envelopes from ``devices`` devices of 4 probes each."""
    t0 = datetime(2026, 11, 25, tzinfo=UTC)
    out = []
    for index in range(count):
        device = f"dev{index % devices:03d}"
        seq = index // devices
        envelope = make_envelope(
            station=f"st{index % devices:03d}",
            device=device,
            boot=1,
            seq=seq,
            ts=t0 + timedelta(milliseconds=seq * 250 + index % devices),
            body=TemperatureBody(probe=f"p{seq % 4}", celsius=round(-20 + (index % 400) / 10, 1)),
        )
        out.append((f"postedge/v1/{envelope.station}/{device}/telemetry", encode(envelope)))
    return out


def publish_all(broker: Mosquitto, payloads: list[tuple[str, bytes]]) -> None:
    client = new_client("bench-publisher", username=USER, password=PASSWORD)
    client.max_inflight_messages_set(2000)
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    info = None
    for topic, payload in payloads:
        info = client.publish(topic, payload, qos=1)
    if info is not None:
        info.wait_for_publish(120)
    client.disconnect()
    client.loop_stop()


def count_points(influx: Influxd, database: str) -> int:
    result = influx.query('SELECT count("celsius") FROM "temperature"', db=database)
    series = result["results"][0].get("series")  # type: ignore[index]
    return int(series[0]["values"][0][1]) if series else 0


class Contender:
    def __init__(self, name: str, processes: int, command: list[str] | None) -> None:
        self.name = name
        self.processes = processes
        self.command = command


def gateway_command(
    broker: Mosquitto, influx: Influxd, database: str, workdir: Path, workers: int
) -> list[str]:
    config = workdir / f"gateway-{database}.toml"
    config.write_text(
        f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\nusername = "{USER}"\n'
        f'password = "{PASSWORD}"\nclient_id = "gw-{database}"\n\n'
        f'[store]\nkind = "influxdb"\nurl = "{influx.url}"\ndatabase = "{database}"\n\n'
        f"[ingest]\nworkers = {workers}\nbatch_max = 5000\nbatch_wait_ms = 50\n"
    )
    return [
        sys.executable,
        "-m",
        "postedge.cli",
        "--log-level",
        "WARNING",
        "gateway",
        "run",
        str(config),
    ]


def bare_commands(
    broker: Mosquitto, influx: Influxd, database: str, processes: int, ack_on_receipt: bool
) -> list[list[str]]:
    extra = ["--ack-on-receipt"] if ack_on_receipt else []
    return [
        [
            sys.executable,
            str(ROOT / "bench" / "bare_consumer.py"),
            broker.host,
            str(broker.port),
            USER,
            PASSWORD,
            f"bare-{database}-{index}",
            influx.url,
            database,
            *extra,
        ]
        for index in range(processes)
    ]


def run_once(
    kind: str,
    processes: int,
    broker: Mosquitto,
    influx: Influxd,
    workdir: Path,
    payloads: list[tuple[str, bytes]],
    tag: str,
) -> float:
    database = f"{kind.replace('-', '_')}_{processes}_{tag}"
    influx.create_database(database)
    if kind == "gateway":
        commands = [gateway_command(broker, influx, database, workdir, processes)]
    else:
        commands = bare_commands(broker, influx, database, processes, kind == "bare-ack-on-receipt")
    # First start: create the persistent sessions and subscriptions, then leave.
    _start_and_stop(commands, broker, expected_sessions=processes, database=database)
    publish_all(broker, payloads)
    children = [subprocess.Popen(command, stdout=subprocess.DEVNULL) for command in commands]
    try:
        first_at, first_count = _wait_first(influx, database)
        total = len(payloads)
        while (done := count_points(influx, database)) < total:
            if time.monotonic() - first_at > 600:
                raise RuntimeError(f"{kind}: only {done}/{total} points after 600 s")
            time.sleep(0.05)  # sampling interval of the measurement
        elapsed = time.monotonic() - first_at
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(30)
    if kind == "gateway":
        ids = (
            [f"gw-{database}"]
            if processes == 1
            else [f"gw-{database}-{i}" for i in range(processes)]
        )
    else:
        ids = [f"bare-{database}-{i}" for i in range(processes)]
    forget_sessions(broker, ids)
    if done != total:
        raise RuntimeError(f"{kind}: {done} points stored, {total} sent")
    return (total - first_count) / elapsed


def _wait_first(influx: Influxd, database: str) -> tuple[float, int]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        count = count_points(influx, database)
        if count:
            return time.monotonic(), count
        time.sleep(0.02)
    raise RuntimeError("no point stored within 120 s")


def _start_and_stop(
    commands: list[list[str]], broker: Mosquitto, *, expected_sessions: int, database: str
) -> None:
    """Run the consumers until their subscriptions exist at the broker, then stop them."""
    children = [subprocess.Popen(command, stdout=subprocess.DEVNULL) for command in commands]
    try:
        deadline = time.monotonic() + 60
        while _subscriptions(broker, database) < expected_sessions:
            if time.monotonic() > deadline:
                raise RuntimeError(f"consumers for {database} did not subscribe within 60 s")
            time.sleep(0.05)  # readiness poll of the broker log
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(30)


def _subscriptions(broker: Mosquitto, database: str) -> int:
    """Telemetry subscriptions by this run's clients, from the broker's subscribe log."""
    text = broker.log_path.read_text(errors="replace") if broker.log_path.exists() else ""
    return sum(
        1
        for line in text.splitlines()
        if database in line and "$share/gateway/postedge/v1/+/+/telemetry" in line
    )


def forget_sessions(broker: Mosquitto, client_ids: list[str]) -> None:
    """End the persistent sessions of a finished contender, so that its offline share of
    the subscription group takes no messages from the next one."""
    for client_id in client_ids:
        client = new_client(client_id, username=USER, password=PASSWORD)
        client.connect(broker.host, broker.port, clean_start=True)
        client.loop_start()
        client.disconnect()
        client.loop_stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    payloads = messages(args.messages, args.devices)
    contenders = [
        ("bare", 1),
        ("bare", 2),
        ("bare-ack-on-receipt", 1),
        ("gateway", 1),
        ("gateway", 2),
    ]
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="postedge-bench-") as tmp:
        workdir = Path(tmp)
        broker = Mosquitto(
            workdir / "mosquitto",
            users={USER: PASSWORD},
            acl={USER: [AclRule("readwrite", "#")]},
            extra_conf=["log_type subscribe"],
        )
        influx = Influxd(workdir / "influxd")
        broker.start()
        influx.start()
        try:
            for round_ in range(args.repeat):
                for kind, processes in contenders:
                    name = f"{kind} x{processes}"
                    print(
                        f"[{round_ + 1}/{args.repeat}] {name}: "
                        f"draining {args.messages} messages ...",
                        flush=True,
                    )
                    rate = run_once(
                        kind, processes, broker, influx, workdir, payloads, f"r{round_}"
                    )
                    results.setdefault(name, []).append(rate)
                    print(f"    {rate:,.0f} points/s", flush=True)
        finally:
            influx.stop()
            broker.stop()
    report(results, args)


def report(results: dict[str, list[float]], args: argparse.Namespace) -> None:
    median = {name: statistics.median(rates) for name, rates in results.items()}
    print(f"\n{args.messages} messages, {args.devices} devices, median of {args.repeat} run(s):\n")
    print("| consumer | points/s | ratio to bare consumer, same processes |")
    print("|---|---:|---:|")
    for name, rate in median.items():
        processes = name.split(" x")[1]
        base = median.get(f"bare x{processes}")
        ratio = f"{rate / base:.2f}" if base else "-"
        print(f"| {name} | {rate:,.0f} | {ratio} |")
    if args.json:
        args.json.write_text(json.dumps({"median": median, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
