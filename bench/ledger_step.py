"""Ledger step benchmark: what one sort decision costs inside the gateway, without MQTT.

``bench/decisions.py`` times the whole round trip; this times only the step between
taking an induction from the broker and publishing its decision:
``Clearance.handle(induction)`` on a SQLite ledger (the statements and the commit), for
fresh cleared parcels, one call at a time. Three ledgers, each seeded alike (accepted with
a valid resident ID and X-rayed PASS, as in ``bench/decisions.py``), are timed in turns
of 250 calls so that the machine's moods fall on all three:

- ``gateway``: the ledger as the gateway opens it (WAL, ``synchronous = FULL``: each
  commit fsyncs the WAL; SQLite's automatic checkpoint every 1,000 WAL pages, run inside
  the commit that crosses the mark);
- ``no_checkpoint``: the same without the automatic checkpoint (``wal_autocheckpoint =
  0``; the WAL only grows: the tail that the checkpoints add, not a configuration to run);
- ``no_fsync``: ``synchronous = OFF`` (the baseline: the same statements, no fsync; not
  durable, so not a configuration to run either).

Reported for each: p50, p99, max and mean in ms, the ratios to ``no_fsync``, and the WAL
pages one decision writes (from the ``no_checkpoint`` ledger's WAL size).

    python bench/ledger_step.py [--decisions N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decisions import (
    STATION,
    seed,
    sorters,
    waybill,
    write_registry,
)
from sqlalchemy import event

from contracts import InductionBody, make_envelope
from contracts.station import SortDecision
from contracts.timestamps import utc_now
from gateway.clearance import Clearance
from gateway.ledger import Ledger
from gateway.personal import Keyring

CONTENDERS: dict[str, str | None] = {
    "gateway": None,
    "no_checkpoint": "PRAGMA wal_autocheckpoint = 0",
    "no_fsync": "PRAGMA synchronous = OFF",
}
TURN = 250


@dataclass(frozen=True)
class Figures:
    decisions: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float


def figures(seconds: list[float]) -> Figures:
    ordered = sorted(seconds)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    return Figures(
        decisions=len(ordered),
        p50_ms=at(0.50) * 1000,
        p99_ms=at(0.99) * 1000,
        max_ms=ordered[-1] * 1000,
        mean_ms=statistics.mean(ordered) * 1000,
    )


def open_ledger(path: Path, pragma: str | None) -> Ledger:
    """The ledger as the gateway opens it, then ``pragma`` on every connection."""
    ledger = Ledger(f"sqlite:///{path}")
    ledger.open()
    if pragma is not None:
        engine = ledger._engine  # a bench may reach in: the pragma goes after the gateway's
        assert engine is not None

        @event.listens_for(engine, "connect")
        def _after_the_gateways(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute(pragma)

        engine.dispose()  # connections opened before the listener are gone
    return ledger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=5000, help="per contender")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="postedge-ledger-step-") as tmp:
        workdir = Path(tmp)
        keys = workdir / "personal.keys"
        keys.write_text(Keyring.generate().dump())
        keys.chmod(0o600)
        registry = workdir / "registry.toml"
        write_registry(registry, sorters(10))
        ledgers: dict[str, Ledger] = {}
        for name, pragma in CONTENDERS.items():
            print(f"seeding {args.decisions:,} cleared parcels for {name} ...", flush=True)
            path = workdir / f"{name}.sqlite"
            seed(f"sqlite:///{path}", keys, registry, args.decisions)
            ledgers[name] = open_ledger(path, pragma)
        wal = workdir / "no_checkpoint.sqlite-wal"
        wal_before = wal.stat().st_size if wal.exists() else 0
        keyring = Keyring.from_file(keys)
        clearances = {name: Clearance(ledger, keyring) for name, ledger in ledgers.items()}
        times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
        now = utc_now()
        print(f"timing {args.decisions:,} inductions each, in turns of {TURN} ...", flush=True)
        for start in range(0, args.decisions, TURN):
            for name, clearance in clearances.items():
                for index in range(start, min(start + TURN, args.decisions)):
                    envelope = make_envelope(
                        station=STATION, device=f"sorter-{index % 10}", boot=2, seq=index + 1,
                        ts=now, body=InductionBody(transaction=index, barcode=waybill(index)),
                    )  # fmt: skip
                    began = time.perf_counter()
                    outcome = clearance.handle(envelope)
                    times[name].append(time.perf_counter() - began)
                    body = outcome.decision.body if outcome.decision is not None else None
                    if not isinstance(body, SortDecision) or body.reason is not None:
                        raise SystemExit(f"{name}: induction {index} was not routed: {outcome}")
        wal_pages = (wal.stat().st_size - wal_before) / (4096 + 24)  # a frame: header + page
        for ledger in ledgers.values():
            ledger.close()
    results = {name: figures(seconds) for name, seconds in times.items()}
    base = results["no_fsync"]
    print("\n| ledger step (Clearance.handle of one induction) | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|")
    for name, result in results.items():
        print(f"| {name} | {result.p50_ms:.3f} | {result.p99_ms:.3f} | {result.max_ms:.2f} |")
    for name in ("gateway", "no_checkpoint"):
        result = results[name]
        print(
            f"| ratio {name} / no_fsync | {result.p50_ms / base.p50_ms:.2f} | "
            f"{result.p99_ms / base.p99_ms:.2f} | {result.max_ms / base.max_ms:.2f} |"
        )
    per_decision = wal_pages / args.decisions
    print(f"\nWAL pages written per decision: {per_decision:.1f} (4 KiB each, one fsync)")
    if args.json:
        summary = {name: asdict(result) for name, result in results.items()}
        args.json.write_text(json.dumps({**summary, "wal_pages_per_decision": per_decision}))


if __name__ == "__main__":
    main()
