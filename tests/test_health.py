"""Health sampling: uptime, CPU share between samples, memory and disk, with fake clocks."""

from __future__ import annotations

import os
import resource
import shutil
from pathlib import Path
from typing import Any

import pytest

from contracts.telemetry import HealthBody
from edge.health import MAX_WARNING_CHARS, MAX_WARNINGS, HealthSampler, clip_warnings, rss_bytes
from tests.helpers import FakeClock


def sample(sampler: HealthSampler, **overrides: Any) -> HealthBody:
    values: dict[str, Any] = {
        "outbox_depth": 0,
        "outbox_bytes": 0,
        "oldest_unconfirmed_s": None,
        "thinned": 0,
        "links": {},
        "warnings": [],
    }
    values.update(overrides)
    return sampler.sample(**values)


def test_uptime_and_cpu_share_follow_the_clocks(tmp_path: Path) -> None:
    wall, cpu = FakeClock(500.0), FakeClock(7.0)
    sampler = HealthSampler(tmp_path, clock=wall, cpu_clock=cpu)

    wall.at(10.0)
    cpu.at(2.5)  # a quarter of one core since construction
    first = sample(sampler)
    wall.at(70.0)
    cpu.at(2.5 + 54.0)  # 90 % over the minute since the first sample, not since start
    second = sample(sampler)
    third = sample(sampler)  # no time passed: no share to report

    assert (first.uptime_s, first.cpu_percent) == (10.0, 25.0)
    assert second.uptime_s == 70.0
    assert second.cpu_percent == pytest.approx(90.0)
    assert third.cpu_percent == 0.0


def test_the_agents_figures_pass_through(tmp_path: Path) -> None:
    sampler = HealthSampler(tmp_path, clock=FakeClock(), cpu_clock=FakeClock())
    body = sample(
        sampler,
        outbox_depth=12,
        outbox_bytes=3400,
        oldest_unconfirmed_s=4.5,
        thinned=7,
        links={"cold-1": "up", "locker-1": "down"},
        warnings=["probe fridge silent"],
    )
    assert (body.outbox_depth, body.outbox_bytes, body.oldest_unconfirmed_s, body.thinned) == (
        12,
        3400,
        4.5,
        7,
    )
    assert body.links == {"cold-1": "up", "locker-1": "down"}
    assert body.warnings == ["probe fridge silent"]


def test_memory_and_disk_are_this_process_and_this_data_dir(tmp_path: Path) -> None:
    body = sample(HealthSampler(tmp_path))
    statm_pages = int(Path("/proc/self/statm").read_text().split()[1])
    page = os.sysconf("SC_PAGE_SIZE")
    # Resident memory moves a little between the two reads; it is this process's, in bytes.
    assert abs(body.rss_bytes - statm_pages * page) < 16 * 1024 * 1024
    assert body.rss_bytes > 10 * 1024 * 1024  # a Python with pydantic is never this small
    free = shutil.disk_usage(tmp_path).free
    assert abs(body.disk_free_bytes - free) < 256 * 1024 * 1024


def test_without_proc_the_peak_rss_stands_in(tmp_path: Path) -> None:
    missing = tmp_path / "no-proc" / "statm"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert rss_bytes(missing) >= peak
    assert sample(HealthSampler(tmp_path, statm=missing)).rss_bytes >= peak


def test_a_missing_data_dir_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    body = sample(HealthSampler(tmp_path / "gone"), warnings=["first"])
    assert body.disk_free_bytes == 0
    assert body.warnings[0] == "first"
    assert body.warnings[1].startswith(f"free disk of {tmp_path / 'gone'} unknown")


def test_warnings_are_clipped_to_the_contract_limits(tmp_path: Path) -> None:
    many = [f"warning {index}" for index in range(30)]
    long = "x" * 500
    clipped = clip_warnings([long, *many])
    assert len(clipped) == MAX_WARNINGS
    assert clipped[0] == "x" * (MAX_WARNING_CHARS - 1) + "…"
    assert clipped[-1] == "and 12 more warnings"
    assert clip_warnings(many[:MAX_WARNINGS]) == many[:MAX_WARNINGS]
    body = sample(HealthSampler(tmp_path), warnings=[long, *many])
    assert body.warnings == clipped
