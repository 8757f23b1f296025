"""Ingest benchmark: drain a backlog queued at the broker into a real InfluxDB.

N temperature messages are queued at a private Mosquitto while the consumer is away
(its persistent session, created beforehand, holds them), then the consumer starts and
drains them into a private InfluxDB. The drain rate is (points stored) / (time from the
first stored batch to the last), taken by polling ``SELECT count(*)`` every 50 ms; the
same method measures every contender:

- ``postedge gateway`` with 1 and 2 worker processes: validates every envelope, writes
  through the telemetry store, acknowledges only after InfluxDB accepted the write;
- a bare paho consumer (bench/bare_consumer.py): json.loads, hand-built line protocol,
  batched writes, acknowledged after the write;
- the same bare consumer acknowledging on receipt, which loses whatever is in flight
  when InfluxDB restarts.

Figures are points/s and ratios to the bare consumer (ack after write, same number of
processes) measured in the same run.

    python bench/ingest.py [--messages N] [--devices D] [--repeat R] [--json FILE]
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

from benchlib import forget_sessions  # noqa: E402

from contracts import TemperatureBody, encode, make_envelope  # noqa: E402
from contracts.mqtt import new_client  # noqa: E402
from gateway.config import BrokerConfig  # noqa: E402
from gateway.consumer import STORE_SUBSCRIPTION, create_session, store_subscription  # noqa: E402
from gateway.mosquitto import AclRule  # noqa: E402
from postedge.localservers import Influxd, Mosquitto  # noqa: E402

USER, PASSWORD = "gateway", "bench-secret"
CONTENDERS = [("bare", 1), ("bare-ack-on-receipt", 1), ("gateway", 1), ("bare", 2), ("gateway", 2)]


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
            ts=t0 + timedelta(milliseconds=seq * 250),
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
    # paho's message ids wrap at 65535: never have more than that outstanding.
    for start in range(0, len(payloads), 20_000):
        infos = [
            client.publish(topic, payload, qos=1)
            for topic, payload in payloads[start : start + 20_000]
        ]
        for info in infos:
            info.wait_for_publish(300)
    client.disconnect()
    client.loop_stop()


def count_points(influx: Influxd, database: str) -> int:
    result = influx.query('SELECT count("celsius") FROM "temperature"', db=database)
    series = result["results"][0].get("series")  # type: ignore[index]
    return int(series[0]["values"][0][1]) if series else 0


def client_ids(kind: str, processes: int, database: str) -> list[str]:
    prefix = "gw" if kind == "gateway" else "bare"
    if kind == "gateway" and processes == 1:
        return [f"{prefix}-{database}"]  # the gateway names a single worker by its client id
    return [f"{prefix}-{database}-{index}" for index in range(processes)]


def commands(
    kind: str, processes: int, broker: Mosquitto, influx: Influxd, database: str, workdir: Path
) -> list[list[str]]:
    if kind == "gateway":
        config = workdir / f"gateway-{database}.toml"
        config.write_text(
            f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\nusername = "{USER}"\n'
            f'password = "{PASSWORD}"\nclient_id = "gw-{database}"\n\n'
            f'[store]\nkind = "influxdb"\nurl = "{influx.url}"\ndatabase = "{database}"\n\n'
            f"[ingest]\nworkers = {processes}\nbatch_max = 5000\nbatch_wait_ms = 50\n"
        )
        cli = [sys.executable, "-m", "postedge.cli", "--log-level", "WARNING"]
        return [[*cli, "gateway", "run", str(config)]]
    extra = ["--ack-on-receipt"] if kind == "bare-ack-on-receipt" else []
    script = str(ROOT / "bench" / "bare_consumer.py")
    return [
        [
            sys.executable,
            script,
            broker.host,
            str(broker.port),
            USER,
            PASSWORD,
            client_id,
            influx.url,
            database,
            *extra,
        ]
        for client_id in client_ids(kind, processes, database)
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
    """Queue the backlog for one contender's sessions, start it, time the drain."""
    database = f"{kind.replace('-', '_')}_{processes}_{tag}"
    influx.create_database(database)
    ids = client_ids(kind, processes, database)
    broker_config = BrokerConfig(
        host=broker.host, port=broker.port, username=USER, password=PASSWORD
    )
    for index, client_id in enumerate(ids):
        # the bare consumer subscribes on the shared group itself, whatever its number
        form = store_subscription(len(ids), index) if kind == "gateway" else STORE_SUBSCRIPTION
        create_session(broker_config, client_id=client_id, subscription=form)
    publish_all(broker, payloads)
    children = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL)
        for command in commands(kind, processes, broker, influx, database, workdir)
    ]
    total = len(payloads)
    try:
        first_at, first_count = _wait_first(influx, database)
        while (done := count_points(influx, database)) < total:
            if time.monotonic() - first_at > 600:
                raise RuntimeError(f"{kind}: only {done}/{total} points after 600 s")
            time.sleep(0.05)  # sampling interval of the measurement
        elapsed = time.monotonic() - first_at
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(60)
        forget_sessions(broker, ids, username=USER, password=PASSWORD)
    if done != total:
        raise RuntimeError(f"{kind}: {done} points stored, {total} sent")
    return (total - first_count) / elapsed


def _wait_first(influx: Influxd, database: str) -> tuple[float, int]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        count = count_points(influx, database)
        if count:
            return time.monotonic(), count
        time.sleep(0.02)  # sampling interval of the measurement
    raise RuntimeError("no point stored within 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    print(f"encoding {args.messages} envelopes ...", flush=True)
    payloads = messages(args.messages, args.devices)
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="postedge-bench-") as tmp:
        workdir = Path(tmp)
        broker = Mosquitto(
            workdir / "mosquitto", users={USER: PASSWORD}, acl={USER: [AclRule("readwrite", "#")]}
        )
        influx = Influxd(workdir / "influxd")
        broker.start()
        influx.start()
        try:
            for round_ in range(args.repeat):
                for kind, processes in CONTENDERS:
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
    print(
        f"\n{args.messages} messages from {args.devices} devices, median of {args.repeat} run(s):\n"
    )
    print("| consumer | processes | points/s | ratio to bare consumer, same processes |")
    print("|---|---:|---:|---:|")
    for name, rate in median.items():
        kind, processes = name.split(" x")
        base = median.get(f"bare x{processes}")
        ratio = f"{rate / base:.2f}" if base else "-"
        print(f"| {kind} | {processes} | {rate:,.0f} | {ratio} |")
    if args.json:
        args.json.write_text(json.dumps({"median": median, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
