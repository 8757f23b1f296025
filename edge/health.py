"""The edge agent's own health: what a supervisor needs to see a box is struggling.

A station box is a small computer in a village shop; it runs out of disk, leaks memory or
loses its uplink long before anyone visits. :class:`HealthSampler` measures the process
(uptime, CPU share, resident memory, free disk) with the standard library alone, so it
works on any Linux box without psutil; the agent adds what only it knows (outbox, links,
warnings) and publishes the result as a ``health`` body.
"""

from __future__ import annotations

import os
import resource
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

from contracts.telemetry import HealthBody, LinkState

MAX_WARNINGS: Final = 20
MAX_WARNING_CHARS: Final = 200
"""The HealthBody limits; longer lists and lines are clipped, not rejected."""
STATM: Final = Path("/proc/self/statm")


class HealthSampler:
    """Samples the process's health; ``clock`` is wall time (monotonic), ``cpu_clock``
    the process's CPU time, both in seconds."""

    def __init__(
        self,
        data_dir: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
        statm: Path = STATM,
    ) -> None:
        self.data_dir = Path(data_dir)
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._statm = statm
        self._started = clock()
        self._last_wall = self._started
        self._last_cpu = cpu_clock()

    def sample(
        self,
        *,
        outbox_depth: int,
        outbox_bytes: int,
        oldest_unconfirmed_s: float | None,
        thinned: int,
        links: Mapping[str, LinkState],
        warnings: Sequence[str],
    ) -> HealthBody:
        """One health body; the CPU share is over the time since the previous sample."""
        wall, cpu = self._clock(), self._cpu_clock()
        elapsed = wall - self._last_wall
        used = cpu - self._last_cpu
        self._last_wall, self._last_cpu = wall, cpu
        all_warnings = list(warnings)
        try:
            disk_free = shutil.disk_usage(self.data_dir).free
        except OSError as exc:
            disk_free = 0
            all_warnings.append(f"free disk of {self.data_dir} unknown: {exc.strerror}")
        return HealthBody(
            uptime_s=max(0.0, wall - self._started),
            cpu_percent=max(0.0, used / elapsed * 100) if elapsed > 0 else 0.0,
            rss_bytes=rss_bytes(self._statm),
            disk_free_bytes=disk_free,
            outbox_depth=outbox_depth,
            outbox_bytes=outbox_bytes,
            oldest_unconfirmed_s=oldest_unconfirmed_s,
            thinned=thinned,
            links=dict(links),
            warnings=clip_warnings(all_warnings),
        )


def rss_bytes(statm: Path = STATM) -> int:
    """The resident set size now, from ``statm``; where that is missing (not Linux), the
    peak RSS from ``getrusage``, which is the best the standard library offers."""
    try:
        pages = int(statm.read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def clip_warnings(warnings: Sequence[str]) -> list[str]:
    """At most :data:`MAX_WARNINGS` lines of at most :data:`MAX_WARNING_CHARS` each; when
    some are left out, the last line says how many."""
    lines = [_clip(text) for text in warnings]
    if len(lines) > MAX_WARNINGS:
        left_out = len(lines) - (MAX_WARNINGS - 1)
        lines = [*lines[: MAX_WARNINGS - 1], f"and {left_out} more warnings"]
    return lines


def _clip(text: str) -> str:
    return text if len(text) <= MAX_WARNING_CHARS else text[: MAX_WARNING_CHARS - 1] + "…"
