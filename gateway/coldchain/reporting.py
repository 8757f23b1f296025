"""Daily metrics per probe, and metrics per parcel stay, written when they are complete.

A probe's day is measured once the local day has ended and ``settle_s`` has passed (the
telemetry store may still be writing its last readings); a parcel's stay in a cold
compartment once it was picked up and ``settle_s`` has passed. Both read the readings
back from the telemetry store, so what is written is what a supervisor can re-check,
and both are idempotent (a rewrite of the same point overwrites it): after a crash, the
ledger's ``reported_day`` and ``reported_at`` say where to resume.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from gateway.coldchain.config import ColdChainConfig
from gateway.coldchain.exposure import daily_point, parcel_point, probe_exposure
from gateway.coldchain.metrics import day_window
from gateway.ledger import LedgerTx, StayRow
from gateway.metrics import Counters
from gateway.telemetry.model import StoreError, TelemetryStore

if TYPE_CHECKING:
    from gateway.coldchain.engine import ColdChainEngine, WatchedProbe

log = logging.getLogger(__name__)

_DAYS_PER_PASS = 31
"""Days measured per probe in one pass, so a long-silent gateway catches up in steps."""


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1000) * 1_000_000


class Reporter:
    def __init__(self, config: ColdChainConfig, store: TelemetryStore, counters: Counters) -> None:
        self._config = config
        self._zone = config.zone()
        self._store = store
        self._counters = counters

    def report(self, tx: LedgerTx, engine: ColdChainEngine, now: datetime) -> list[None]:
        """Measure what is due; returns nothing (a ledger work item, see the worker)."""
        settled = now - timedelta(seconds=self._config.settle_s)
        try:
            for key, watched in engine.probes.items():
                self._days(tx, key, watched, settled)
            for stay in tx.stays_to_report(settled):
                self._stay(tx, engine, stay, now)
        except StoreError as exc:
            self._counters.incr("coldchain.report_retries")
            log.warning("cold-chain metrics wait for the telemetry store: %s", exc)
        return []

    def _days(
        self, tx: LedgerTx, key: tuple[str, str, str], watched: WatchedProbe, settled: datetime
    ) -> None:
        if watched.reported_day is None:
            return
        day = date.fromisoformat(watched.reported_day)
        rules = watched.machine.rules
        for _ in range(_DAYS_PER_PASS):
            day += timedelta(days=1)
            start_ns, end_ns = day_window(day, self._zone)
            if end_ns > _ns(settled):
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
            tx.save_probe(*key, reported_day=watched.reported_day)

    def _stay(self, tx: LedgerTx, engine: ColdChainEngine, stay: StayRow, now: datetime) -> None:
        assert stay.until is not None
        key = (stay.station, stay.probe_device, stay.probe)
        watched = engine.probes.get(key)
        if watched is not None:
            exposure = probe_exposure(
                self._store,
                *key,
                _ns(stay.since),
                _ns(stay.until),
                watched.limits,
                watched.machine.rules.offline_after_s,
                watched.machine.rules.plausible,
            )
            point = parcel_point(*key, stay.waybill, watched.profile, watched.limits, exposure)
            self._store.write([point])
            self._counters.incr("coldchain.stays_measured")
        else:  # no readings from its probe ever: nothing to measure, say so once
            self._counters.incr("coldchain.stays_unmeasured")
        tx.stay_reported(stay.id, now.astimezone(UTC))
