"""Daily metrics per probe, and metrics per parcel stay, written when they are complete.

A probe's day is measured once the local day has ended and ``settle_s`` has passed (the
telemetry store may still be writing its last readings); a parcel's stay in a cold
compartment once it was picked up and ``settle_s`` has passed. Both read the readings
back from the telemetry store, so what is written is what a supervisor can re-check,
and both are idempotent (a rewrite of the same point overwrites it): after a crash, the
ledger's ``reported_day`` and ``reported_at`` say where to resume.

The store is read and written outside any ledger transaction (a ledger write holds
SQLite's only write lock, which sort decisions need), and at most ``_ITEMS_PER_PASS``
days or stays are measured per pass, so the engine goes back to its readings between
passes; the ledger learns what was measured in one short transaction afterwards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from contracts.timestamps import to_epoch_ns
from gateway.coldchain.config import ColdChainConfig
from gateway.coldchain.exposure import daily_point, parcel_point, probe_exposure
from gateway.coldchain.metrics import day_window
from gateway.ledger import Ledger, StayRow
from gateway.metrics import Counters
from gateway.telemetry.model import StoreError, TelemetryStore

if TYPE_CHECKING:
    from gateway.coldchain.engine import ColdChainEngine, ProbeKey, WatchedProbe

log = logging.getLogger(__name__)

_ITEMS_PER_PASS = 20
"""Days or stays measured per pass: a long-silent gateway catches up over several ticks."""
CATCH_UP_DAYS = 62
"""How far back unmeasured days are still measured (two monthly ledgers)."""


@dataclass
class _Measured:
    days: list[tuple[ProbeKey, str]]
    stays: list[int]


class Reporter:
    def __init__(self, config: ColdChainConfig, store: TelemetryStore, counters: Counters) -> None:
        self._config = config
        self._zone = config.zone()
        self._store = store
        self._counters = counters

    def report(self, ledger: Ledger, engine: ColdChainEngine, now: datetime) -> int:
        """Measure what is due (up to ``_ITEMS_PER_PASS``); returns how many were."""
        settled = now - timedelta(seconds=self._config.settle_s)
        with ledger.transaction(write=False) as tx:
            stays = tx.stays_to_report(settled)
        done = _Measured([], [])
        try:
            for key, watched in engine.probes.items():
                self._days(key, watched, settled, done)
            for stay in stays[: max(0, _ITEMS_PER_PASS - len(done.days))]:
                self._stay(engine, stay)
                done.stays.append(stay.id)
        except StoreError as exc:
            self._counters.incr("coldchain.report_retries")
            log.warning("cold-chain metrics wait for the telemetry store: %s", exc)
        if done.days or done.stays:
            with ledger.transaction() as tx:
                for key, day in done.days:
                    tx.save_probe(*key, reported_day=day)
                for stay_id in done.stays:
                    tx.stay_reported(stay_id, now.astimezone(UTC))
        return len(done.days) + len(done.stays)

    def _days(
        self, key: ProbeKey, watched: WatchedProbe, settled: datetime, done: _Measured
    ) -> None:
        if watched.reported_day is None:
            return
        # a probe whose clock was years behind must not send us measuring every day since
        earliest = settled.astimezone(self._zone).date() - timedelta(days=CATCH_UP_DAYS + 1)
        day = max(date.fromisoformat(watched.reported_day), earliest)
        rules = watched.machine.rules
        while len(done.days) < _ITEMS_PER_PASS:
            day += timedelta(days=1)
            start_ns, end_ns = day_window(day, self._zone)
            if end_ns > to_epoch_ns(settled):
                return
            exposure = probe_exposure(
                self._store,
                *key,
                start_ns,
                end_ns,
                watched.limits,
                rules.offline_after_s,
                rules.plausible,
            )
            if exposure.covered_s > 0:
                point = daily_point(*key, day, watched.profile, watched.limits, exposure)
                self._store.write([point])
                self._counters.incr("coldchain.days_measured")
            watched.reported_day = day.isoformat()
            done.days.append((key, watched.reported_day))

    def _stay(self, engine: ColdChainEngine, stay: StayRow) -> None:
        assert stay.until is not None
        key = (stay.station, stay.probe_device, stay.probe)
        watched = engine.probes.get(key)
        if watched is None:  # its probe never reported: nothing to measure, say so
            self._counters.incr("coldchain.stays_unmeasured")
            return
        rules = watched.machine.rules
        exposure = probe_exposure(
            self._store,
            *key,
            to_epoch_ns(stay.since),
            to_epoch_ns(stay.until),
            watched.limits,
            rules.offline_after_s,
            rules.plausible,
        )
        point = parcel_point(*key, stay.waybill, watched.profile, watched.limits, exposure)
        self._store.write([point])
        self._counters.incr("coldchain.stays_measured")
