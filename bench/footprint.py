"""Footprint benchmark: the edge agent's memory and CPU at a station's steady load.

The real agent (``postedge edge run``, its own process) runs a station of two devices:
one with a Modbus RTU bus of 4 probes polled at 1 Hz (firmware_bridge's ProbeSimulator
on a pty) and one with a serial barcode scanner sending one code per second
(ScannerSimulator, continuous, 1 s per read, on a pty). A private Mosquitto and the
gateway (its own process, SQLite store) run too, so every message takes the full path:
outbox commit, publish, receipt, delete.

After a warm-up (``--warmup``, default 10 s) the agent's ``/proc/PID/stat`` (utime +
stime) and ``/proc/PID/status`` (VmRSS) are sampled once a second for ``--seconds``
(default 120). Figures: mean and peak RSS in MB (MiB, 2**20 bytes), and CPU share of one
core = CPU seconds / wall seconds x 100. The store's counts of readings and scans at the
start and end of the window show the load really flowed (about 4/s and 1/s).

Baselines, same run and same window: a bare interpreter (``python -c "import time;
time.sleep(...)"``) and a process that only imports the agent's modules (``postedge.cli``
and ``edge.agent``, as ``postedge edge run`` does) and sleeps: how much of the RSS is the
interpreter and libraries, how much the agent's work. The import-only process is also
the CPU baseline (about 0).

    python bench/footprint.py [--seconds S] [--warmup W] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import forget_sessions, stop_process  # noqa: E402
from drain import (  # noqa: E402
    CLI,
    GATEWAY_PASSWORD,
    GATEWAY_USER,
    STATION,
    Store,
    cpu_seconds,
    make_broker,
    start_gateway,
)

from firmware_bridge.sim.probe import ProbeSimulator, Scenario, SimulatedProbe  # noqa: E402
from firmware_bridge.sim.scanner import (  # noqa: E402
    ScannerScenario,
    ScannerSimulator,
    SimulatedCode,
)
from gateway.telemetry import SqliteStoreConfig, open_store  # noqa: E402

PROBE_DEVICE, SCAN_DEVICE = "bench-cold", "bench-scan"
PASSWORDS = {PROBE_DEVICE: "bench-cold-secret", SCAN_DEVICE: "bench-scan-secret"}
PROBES = ("p1", "p2", "p3", "p4")
MB = 1024 * 1024


class Simulators:
    """The probe bus and the scanner on an asyncio loop of their own thread."""

    def __init__(self) -> None:
        self.probes = ProbeSimulator(
            [
                SimulatedProbe(
                    unit=unit,
                    temperature_register=0,
                    humidity_register=None,
                    scenario=Scenario.steady(4.0, noise=0.5, seed=unit),
                )
                for unit in range(1, len(PROBES) + 1)
            ]
        )
        code = SimulatedCode("YT7523198460012", delay_s=1.0)  # one read per second
        self.scanner = ScannerSimulator(ScannerScenario(codes=(code,)))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    def __enter__(self) -> Simulators:
        self._thread.start()
        self._run(self.probes.start())
        self._run(self.scanner.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self._run(self.scanner.stop())
        self._run(self.probes.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def station_toml(path: Path, broker: Any, data_dir: Path, sims: Simulators) -> None:
    probes = "".join(
        f'[[devices.modbus.probes]]\nid = "{probe}"\nunit = {unit}\n'
        'temperature = { register = 0, table = "holding", scale = 0.1, signed = true }\n\n'
        for unit, probe in enumerate(PROBES, start=1)
    )
    path.write_text(
        f'station = "{STATION}"\ndata_dir = "{data_dir}"\n\n'
        f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\n\n'
        f'[[devices]]\nid = "{PROBE_DEVICE}"\npassword = "{PASSWORDS[PROBE_DEVICE]}"\n'
        "interval_s = 1\n\n"
        f'[[devices.modbus]]\nport = "{sims.probes.device_path}"\ntimeout_s = 1\n\n'
        f"{probes}"
        f'[[devices]]\nid = "{SCAN_DEVICE}"\npassword = "{PASSWORDS[SCAN_DEVICE]}"\n'
        f'scanner = {{ port = "{sims.scanner.device_path}", reader = "counter-scanner" }}\n'
    )


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def stored_counts(path: Path, start_ns: int, end_ns: int) -> tuple[int, int]:
    """(temperature readings, scan events) with device timestamps in ``[start_ns, end_ns)``,
    counted through the store's query interface."""
    store = open_store(SqliteStoreConfig(kind="sqlite", path=path))
    store.open()
    try:
        readings = sum(
            len(
                store.query_series(
                    "temperature", "celsius", {"device": PROBE_DEVICE, "probe": p}, start_ns, end_ns
                )
            )
            for p in PROBES
        )
        scans = len(
            store.query_series(
                "event", "seq", {"device": SCAN_DEVICE, "kind": "scan"}, start_ns, end_ns
            )
        )
    finally:
        store.close()
    return readings, scans


@contextlib.contextmanager
def sleeper(code: str, seconds: float) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-c", f"{code}import time; time.sleep({seconds})"], cwd=ROOT
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    broker = make_broker(workdir, PASSWORDS)
    broker.start()
    store = Store("sqlite", workdir, "footprint", None)
    gateway, ids = start_gateway(broker, store, 1, workdir, "gw-footprint")
    life = args.warmup + args.seconds + 60
    try:
        with (
            Simulators() as sims,
            sleeper("", life) as bare,
            sleeper("import postedge.cli, edge.agent; ", life) as imports,
        ):
            station = workdir / "station.toml"
            station_toml(station, broker, workdir / "edge-data", sims)
            log_path = workdir / "agent.log"
            with log_path.open("wb") as log_file:
                agent = subprocess.Popen(
                    [*CLI, "edge", "run", str(station)],
                    stdout=subprocess.DEVNULL,
                    stderr=log_file,
                )
            try:
                return sample(args, agent, bare, imports, store.path, log_path)
            finally:
                stop_process(agent)
    finally:
        stop_process(gateway)
        forget_sessions(broker, ids, username=GATEWAY_USER, password=GATEWAY_PASSWORD)
        broker.stop()


def sample(
    args: argparse.Namespace,
    agent: subprocess.Popen[bytes],
    bare: subprocess.Popen[bytes],
    imports: subprocess.Popen[bytes],
    store_path: Path,
    log_path: Path,
) -> dict[str, Any]:
    print(f"warming up for {args.warmup:g} s ...", flush=True)
    time.sleep(args.warmup)  # the warm-up itself: the agent connects and starts polling
    if agent.poll() is not None:
        raise RuntimeError(f"agent exited: {log_path.read_text()[-2000:]}")
    window_start_ns = time.time_ns()
    wall_start = time.monotonic()
    processes = (("agent", agent), ("imports", imports))
    cpu_start = {name: cpu_seconds(p.pid) for name, p in processes}
    rss: list[int] = []
    print(f"sampling for {args.seconds:g} s ...", flush=True)
    next_at = wall_start
    while (now := time.monotonic()) < wall_start + args.seconds:
        if agent.poll() is not None:
            raise RuntimeError(f"agent exited: {log_path.read_text()[-2000:]}")
        rss.append(rss_bytes(agent.pid))
        if len(rss) % 30 == 0:
            print(f"    {now - wall_start:4.0f} s: RSS {rss[-1] / MB:.1f} MB", flush=True)
        next_at += 1.0
        time.sleep(max(0.0, next_at - time.monotonic()))  # the sampling interval
    wall = time.monotonic() - wall_start
    window_end_ns = time.time_ns()
    cpu = {name: cpu_seconds(p.pid) - cpu_start[name] for name, p in processes}
    time.sleep(2)  # let the window's last messages reach the store before counting
    readings, scans = stored_counts(store_path, window_start_ns, window_end_ns)
    return {
        "seconds": wall,
        "samples": len(rss),
        "rss_mean_mb": statistics.mean(rss) / MB,
        "rss_peak_mb": max(rss) / MB,
        "cpu_percent": 100 * cpu["agent"] / wall,
        "cpu_seconds": cpu["agent"],
        "bare_python_rss_mb": rss_bytes(bare.pid) / MB,
        "imports_only_rss_mb": rss_bytes(imports.pid) / MB,
        "imports_only_cpu_percent": 100 * cpu["imports"] / wall,
        "readings_per_s": readings / wall,
        "scans_per_s": scans / wall,
        "readings_in_window": readings,
        "scans_in_window": scans,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--warmup", type=float, default=10)
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="postedge-footprint-") as tmp:
        result = measure(args, Path(tmp))
    report(result, args)


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    ok_rss = "met" if r["rss_peak_mb"] < 80 else "NOT met"
    ok_cpu = "met" if r["cpu_percent"] < 10 else "NOT met"
    print(f"\nagent footprint over {r['seconds']:.0f} s ({r['samples']} samples):\n")
    print("| process | RSS mean (MB) | RSS peak (MB) | CPU (% of one core) |")
    print("|---|---:|---:|---:|")
    print(f"| bare python (sleep) | {r['bare_python_rss_mb']:.1f} | - | - |")
    print(
        f"| imports only (postedge.cli, edge.agent) | {r['imports_only_rss_mb']:.1f} | - | "
        f"{r['imports_only_cpu_percent']:.2f} |"
    )
    print(
        f"| **edge agent** | {r['rss_mean_mb']:.1f} | {r['rss_peak_mb']:.1f} | "
        f"{r['cpu_percent']:.2f} |"
    )
    print(
        f"\nload: {r['readings_per_s']:.2f} readings/s, {r['scans_per_s']:.2f} scans/s stored "
        f"during the window; targets: RSS < 80 MB {ok_rss}, CPU < 10 % {ok_cpu}"
    )
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
