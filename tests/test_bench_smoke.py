"""The edge benchmarks still run: each at a tiny size, checking what it reports.

The figures themselves are not checked (they belong in docs/PERFORMANCE.md, measured on
demand); only that each benchmark completes its method and its own consistency checks
(drain: the store holds exactly the backlog; footprint: readings and scans flowed).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.hil, pytest.mark.slow]

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run_bench(script: str, *args: str, json_path: Path) -> dict[str, object]:
    command = [sys.executable, str(BENCH / script), *args, "--json", str(json_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result: dict[str, object] = json.loads(json_path.read_text())
    return result


def test_drain_delivers_a_small_backlog_and_reports_a_ratio(tmp_path: Path) -> None:
    result = run_bench("drain.py", "--readings", "2000", json_path=tmp_path / "drain.json")
    median = result["median"]
    assert isinstance(median, dict)
    assert median["readings"] == 2000
    assert median["agent_rate"] > 0
    assert median["baseline_rate"] > 0
    assert median["first_receipt_s"] < median["agent_seconds"]


def test_footprint_samples_the_agent_under_load(tmp_path: Path) -> None:
    result = run_bench(
        "footprint.py", "--seconds", "3", "--warmup", "3", json_path=tmp_path / "fp.json"
    )
    assert result["samples"] == 3
    assert 0 < result["bare_python_rss_mb"] < result["imports_only_rss_mb"]  # type: ignore[operator]
    assert result["rss_peak_mb"] >= result["rss_mean_mb"] > 0  # type: ignore[operator]
    assert result["readings_in_window"] > 0  # type: ignore[operator]
    assert result["scans_in_window"] > 0  # type: ignore[operator]


def test_decisions_routes_every_induction_and_times_every_round_trip(tmp_path: Path) -> None:
    result = run_bench(
        "decisions.py",
        *("--seconds", "1", "--warmup", "0.5", "--sorters", "2", "--rate", "20"),
        json_path=tmp_path / "decisions.json",
    )
    median, runs = result["median"], result["runs"]
    assert isinstance(median, dict)
    assert isinstance(runs, list)
    assert median["problems"] == 0
    assert len(runs) == 1
    for contender in ("bare", "durable_echo", "gateway"):
        figures = runs[0][contender]
        assert figures["answered"] == figures["sent"] == 60
        assert figures["missing"] == figures["not_routed"] == []
        assert figures["measured"] == 40
        assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]


def test_ledger_step_times_every_contender_on_routed_inductions(tmp_path: Path) -> None:
    result = run_bench("ledger_step.py", "--decisions", "300", json_path=tmp_path / "ls.json")
    for contender in ("gateway", "no_checkpoint", "no_fsync"):
        figures = result[contender]
        assert isinstance(figures, dict)
        assert figures["decisions"] == 300
        assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    pages = result["wal_pages_per_decision"]
    assert isinstance(pages, float)
    assert pages >= 3  # a decision writes at least the induction, the decision, the mark
