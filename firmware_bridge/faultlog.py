"""Fault counting with one log line per episode, and a bounded window of recent keys.

A device that keeps failing the same way must not write a line per read or frame: a probe
unplugged for a night would write ten thousand. :class:`FaultLog` counts every fault by
kind and logs one line when a kind of fault starts, then nothing more about that kind
until the driver says the device worked again (:meth:`FaultLog.good`). What "worked
again" means stays the driver's call: one good read, a streak of clean frames, or good
news about some kinds only (a PLC answering says nothing about its mailboxes' checksums).

:class:`RecentKeys` is how drivers of devices that repeat themselves (at-least-once
delivery) recognise a repeat without remembering everything they ever saw.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

UNTIL_RECOVERED = "[{kind}; logged once until it recovers]"
"""A ``note`` for :class:`FaultLog`: the probe drivers' wording."""
COUNTED_IN_STATS = "(counted in stats[{kind!r}])"
"""A ``note`` for :class:`FaultLog`: for drivers whose ``stats`` are its ``counts``."""


@dataclass
class _Episode:
    kinds: set[str] = field(default_factory=set)
    """The kinds of fault logged and not yet over."""
    streak: int = 0
    """Calls of :meth:`FaultLog.good` since the source's last fault."""


class FaultLog:
    """Counts faults by kind; logs the first of each kind until the device works again.

    A line reads ``{where}: {message} {note}``: without ``where`` the message names the
    device itself, and ``note`` (empty, or a template such as :data:`COUNTED_IN_STATS`)
    is formatted with ``kind``. Faults are tracked per ``source`` (a unit on a bus; None
    for a device on its own), so one failing source never silences another. Faults of a
    source are over, and logged again if they recur, after ``clean_streak`` calls of
    :meth:`good` with no fault of that source in between.

    Messages are logged as given; drivers keep them free of personal data.
    """

    def __init__(
        self, logger: logging.Logger, where: str = "", *, clean_streak: int = 1, note: str = ""
    ) -> None:
        if isinstance(clean_streak, bool) or not isinstance(clean_streak, int) or clean_streak < 1:
            raise ValueError(f"clean_streak must be a positive int, not {clean_streak!r}")
        self.counts: Counter[str] = Counter()
        """Every fault, by kind; a driver may count its other events here too."""
        self.where = where
        self._log = logger
        self._clean_streak = clean_streak
        self._note = note
        self._episodes: dict[str | None, _Episode] = {}

    def fault(
        self, kind: str, message: str, *, source: str | None = None, level: int = logging.WARNING
    ) -> None:
        """Count one fault of ``kind``; log ``message`` if ``source`` was not failing so already."""
        self.counts[kind] += 1
        episode = self._episodes.setdefault(source, _Episode())
        episode.streak = 0
        if kind in episode.kinds:
            return
        episode.kinds.add(kind)
        line = f"{self.where}: {message}" if self.where else message
        if self._note:
            line = f"{line} {self._note.format(kind=kind)}"
        self._log.log(level, "%s", line)

    def good(self, *kinds: str, source: str | None = None) -> tuple[str, ...]:
        """``source`` worked: end its faults (of ``kinds`` only, if given) once the streak is clean.

        Returns the kinds that ended, sorted (empty if none did), for the caller to log in
        its own words if it wants a "working again" line.
        """
        episode = self._episodes.get(source)
        if episode is None:
            return ()
        episode.streak += 1
        if episode.streak < self._clean_streak:
            return ()
        ended = episode.kinds.intersection(kinds) if kinds else set(episode.kinds)
        episode.kinds -= ended
        if not episode.kinds:
            del self._episodes[source]
        return tuple(sorted(ended))


class RecentKeys(Generic[K]):
    """The last ``size`` distinct keys added; the oldest is forgotten first.

    With ``refresh``, adding a key that is already there makes it the newest again, so a
    key that keeps coming back is never forgotten; without, keys are forgotten in the
    order they first came, however often they were repeated since.
    """

    def __init__(self, size: int, *, refresh: bool = False) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int, not {size!r}")
        self._keys: OrderedDict[K, None] = OrderedDict()
        self._size = size
        self._refresh = refresh

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: K) -> bool:
        """Remember ``key``; False if it was already there."""
        if key in self._keys:
            if self._refresh:
                self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self._size:
            self._keys.popitem(last=False)
        return True
