"""Compliance reports: one station, one local day or month, from the ledger and the
cold-chain figures in the telemetry store.

What each figure counts (the period is ``[start, end)``, local midnights in the API's
time zone; "by now" means as the ledger stands when the report is made):

- **Real-name coverage**: outbound parcels = parcels accepted at the station in the
  period (``parcels.accepted_at``); with a record = those with a real-name record (a
  record is stored only after the identity passed the rules); ratio = with / all, None
  without parcels.
- **X-ray coverage**: those outbound parcels with at least one X-ray verdict (at any
  station, at any time); plus the verdicts given at this station in the period
  (``scanned_at``), by verdict.
- **Holds**: holds opened in the period (``since``) on parcels accepted or X-rayed at the
  station, by reason; how many are released by now and how many still hold.
- **Exceptions**: the station's sort decisions in the period (``decided_at``): routed,
  and sent to the exception chute by reason (every reason of
  :data:`contracts.station.SortReason`, zeros included); send-deposit requests its
  lockers refused, by reason.
- **Cold chain**: per probe of the station (known to the cold-chain engine, or with
  daily figures in the store), from the daily figures (``coldchain_daily``) of the
  period's local days: minutes out of range (sum), min and max, mean weighted by covered
  time, and the mean kinetic temperature. A day's MKT is ``ΔH/R ÷ −ln(m)`` where ``m`` is
  the day's time-weighted mean Arrhenius term ``exp(−ΔH/(R·T))``, so ``m`` comes back
  from the day's MKT; weighting each day's ``m`` by the day's ``covered_s`` gives the
  period's mean term, hence its MKT, exactly (:func:`_probe_figures`). Readings are the
  days' counts summed (a reading that holds across midnight counts on both days). Days
  are those the reporter wrote, in its own zone (``[coldchain] timezone``, normally the
  API's); a day without any reading is not written and does not count. Also the alerts
  raised at the station in the period by kind, but for the holds' ``xray_hold``.
- **Locker dwell**: delivery deposits at the station's lockers in the period (pickup
  codes issued): picked up by now, with the hours from deposit to pickup (mean, median,
  max); superseded (a later deposit of the parcel, or into its slot, closed the code);
  still waiting by now (the code neither used nor superseded, expired or not).
- **Device uptime**: per device registered at the station, the share of the period up
  to now during which its latest ``device_status`` said ``online``. Its state at the
  start is its last status before the start, however old (looked for in
  :data:`_LOOKBACK` steps); without one, the time until its first status is not online.
  None when it sent no status before the period's end, or the period has not begun.
- **Deliveries per village point**: every village-tier station under the station's
  division (county: the first 6 digits, township: the first 9; a village point: itself),
  with its delivery deposits in the period.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Select, and_, exists, func, or_, select

from cloud_api.report_files import report_csv, report_xlsx
from cloud_api.report_model import (
    ColdChain,
    ComplianceReport,
    Dwell,
    Exceptions,
    Holds,
    PeriodOut,
    ProbeFigures,
    RealnameCoverage,
    Uptime,
    VillageDeliveries,
    XrayCoverage,
)
from cloud_api.schemas import iso
from contracts.station import SortReason
from contracts.timestamps import to_epoch_ns
from gateway.coldchain.exposure import COLDCHAIN_DAILY, DailyFigures, read_daily
from gateway.coldchain.metrics import mean_kinetic_temperature
from gateway.convert import DEVICE_STATUS
from gateway.ledger import Ledger
from gateway.ledger import schema as t
from gateway.telemetry import TelemetryStore
from gateway.telemetry.model import FieldValue

__all__ = [
    "ComplianceReport",
    "Period",
    "UnknownStation",
    "compliance_report",
    "period_of",
    "report_csv",
    "report_xlsx",
]

MIN_YEAR, MAX_YEAR = 1970, 2261
"""Reports cover these years: telemetry times are int64 nanoseconds since 1970, which
end in April 2262."""
PREFIX_DIGITS = {"county": 6, "township": 9, "village": 12}
SORT_REASONS: tuple[str, ...] = get_args(SortReason)
DEPOSIT_REFUSALS = ("no_realname",)
"""Why a send-deposit is refused (:class:`contracts.station.DepositDecision`)."""
SECURITY_ALERTS = ("xray_hold",)
"""Alert kinds the clearance engine raises with its holds; every other kind is the
cold-chain engine's (temperature, probe offline, sensor fault, door open)."""
VERDICTS = ("PASS", "SUSPECT", "FAIL")

_LOOKBACK = (timedelta(days=31), timedelta(days=366))
"""How far back a device's last status is looked for, step by step; then without limit."""
_DAY = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")


class UnknownStation(LookupError):
    """No such station in the ledger."""


@dataclass(frozen=True)
class Period:
    """A local day or month: ``[start, end)``, both aware local midnights in ``tz``."""

    kind: Literal["day", "month"]
    label: str
    start: datetime
    end: datetime
    tz: ZoneInfo

    def days(self) -> tuple[date, date]:
        """The first and last local day, inclusive."""
        return self.start.date(), (self.end - timedelta(days=1)).date()


def period_of(*, day: str | None, month: str | None, tz: ZoneInfo) -> Period:
    """The local day ``YYYY-MM-DD`` or month ``YYYY-MM`` in ``tz``; exactly one of them.

    :class:`ValueError` saying what is wrong otherwise (the API's 422)."""
    if (day is None) == (month is None):
        raise ValueError("give exactly one of day (YYYY-MM-DD) and month (YYYY-MM)")
    if day is not None:
        found = _DAY.fullmatch(day)
        if found is None:
            raise ValueError(f"day must be YYYY-MM-DD, not {day!r}")
        year, number, of_month = (int(part) for part in found.groups())
        first = _calendar_day(year, number, of_month, text=day)
        return Period("day", first.isoformat(), _midnight(first, tz),
                      _midnight(first + timedelta(days=1), tz), tz)  # fmt: skip
    assert month is not None
    found = _MONTH.fullmatch(month)
    if found is None:
        raise ValueError(f"month must be YYYY-MM, not {month!r}")
    year, number = (int(part) for part in found.groups())
    first = _calendar_day(year, number, 1, text=month)
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return Period("month", month, _midnight(first, tz), _midnight(following, tz), tz)


def _calendar_day(year: int, month: int, day: int, *, text: str) -> date:
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise ValueError(f"{text}: reports cover the years {MIN_YEAR} to {MAX_YEAR}")
    try:
        return date(year, month, day)
    except ValueError:
        raise ValueError(f"{text} is not a day or month of the calendar") from None


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    """Local midnight, as :func:`gateway.coldchain.metrics.day_window` takes it."""
    return datetime.combine(day, time(), tzinfo=tz)


# -- the ledger's figures --------------------------------------------------------------


def compliance_report(
    ledger: Ledger,
    store: TelemetryStore,
    station: str,
    period: Period,
    *,
    now: datetime | None = None,
) -> ComplianceReport:
    """The report of ``station`` for ``period``; :class:`UnknownStation` if the ledger has
    no such station. Reads only: one read transaction, then the store."""
    now = now or datetime.now(UTC)
    start, end = period.start, period.end
    with ledger.transaction(write=False) as tx:
        c = tx.connection
        row = c.execute(select(t.stations).where(t.stations.c.id == station)).first()
        if row is None:
            raise UnknownStation(f"no station {station}")
        devices = c.execute(
            select(t.devices.c.id, t.devices.c.role)
            .where(t.devices.c.station == station)
            .order_by(t.devices.c.id)
        ).all()
        probes = c.execute(
            select(t.coldchain_probes.c.device, t.coldchain_probes.c.probe).where(
                t.coldchain_probes.c.station == station
            )
        ).all()
        realname, xray = _coverage(c, station, start, end)
        holds = _holds(c, station, start, end)
        exceptions = _exceptions(c, station, start, end)
        alerts = _alerts(c, station, start, end)
        dwell = _dwell(c, station, start, end)
        deliveries = _deliveries(c, station, row.division, row.tier, start, end)
    until = min(end, now)
    return ComplianceReport(
        station=station,
        name=row.name,
        division=row.division,
        tier=row.tier,
        period=PeriodOut(
            kind=period.kind,
            label=period.label,
            start=iso(start) or "",
            end=iso(end) or "",
            timezone=str(period.tz),
        ),
        generated_at=iso(now) or "",
        realname=realname,
        xray=xray,
        holds=holds,
        exceptions=exceptions,
        coldchain=ColdChain(
            probes=_probes(store, station, period, [(p.device, p.probe) for p in probes]),
            alerts=alerts,
        ),
        dwell=dwell,
        uptime=[_uptime(store, station, device, role, start, until) for device, role in devices],
        deliveries=deliveries,
    )


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _counts(c: Connection, query: Select[Any], keys: Iterable[str] = ()) -> dict[str, int]:
    """``key, count`` rows as a dict: ``keys`` first (zero if absent), then any others."""
    found = {str(key): int(count) for key, count in c.execute(query)}
    ordered = {key: found.pop(key, 0) for key in keys}
    return ordered | dict(sorted(found.items()))


def _coverage(
    c: Connection, station: str, start: datetime, end: datetime
) -> tuple[RealnameCoverage, XrayCoverage]:
    p = t.parcels.c
    has_record = exists().where(t.realname_records.c.waybill == p.waybill)
    screened = exists().where(t.xray_verdicts.c.waybill == p.waybill)
    total, named, xrayed = c.execute(
        select(func.count(), func.count().filter(has_record), func.count().filter(screened))
        .where(p.station == station, p.accepted_at >= start, p.accepted_at < end)
    ).one()  # fmt: skip
    x = t.xray_verdicts.c
    verdicts = _counts(
        c,
        select(x.verdict, func.count())
        .where(x.station == station, x.scanned_at >= start, x.scanned_at < end)
        .group_by(x.verdict),
        VERDICTS,
    )
    return (
        RealnameCoverage(outbound=total, with_record=named, ratio=_ratio(named, total)),
        XrayCoverage(
            outbound=total, screened=xrayed, ratio=_ratio(xrayed, total), verdicts=verdicts
        ),
    )


def _holds(c: Connection, station: str, start: datetime, end: datetime) -> Holds:
    h = t.holds.c
    ours = and_(
        or_(
            exists().where(t.parcels.c.waybill == h.waybill, t.parcels.c.station == station),
            exists().where(
                t.xray_verdicts.c.waybill == h.waybill, t.xray_verdicts.c.station == station
            ),
        ),
        h.since >= start,
        h.since < end,
    )
    opened, released = c.execute(select(func.count(), func.count(h.released_at)).where(ours)).one()
    reasons = _counts(c, select(h.reason, func.count()).where(ours).group_by(h.reason))
    return Holds(opened=opened, released=released, still_open=opened - released, reasons=reasons)


def _exceptions(c: Connection, station: str, start: datetime, end: datetime) -> Exceptions:
    d = t.decisions.c
    ours = and_(d.station == station, d.decided_at >= start, d.decided_at < end)
    by_reason = select(d.reason, func.count()).group_by(d.reason)
    routed = c.execute(
        select(func.count()).where(ours, d.kind == "sort", d.outcome == "routed")
    ).scalar_one()
    return Exceptions(
        routed=routed,
        sort=_counts(
            c, by_reason.where(ours, d.kind == "sort", d.outcome == "exception"), SORT_REASONS
        ),
        deposit_refused=_counts(
            c, by_reason.where(ours, d.kind == "deposit", d.outcome == "refused"), DEPOSIT_REFUSALS
        ),
    )


def _alerts(c: Connection, station: str, start: datetime, end: datetime) -> dict[str, int]:
    a = t.alerts.c
    return _counts(
        c,
        select(a.kind, func.count())
        .where(
            a.station == station,
            a.raised_at >= start,
            a.raised_at < end,
            a.kind.not_in(SECURITY_ALERTS),
        )
        .group_by(a.kind),
    )


def _dwell(c: Connection, station: str, start: datetime, end: datetime) -> Dwell:
    k = t.pickup_codes.c
    rows = c.execute(
        select(k.issued_at, k.used_at, k.closed).where(
            k.station == station, k.issued_at >= start, k.issued_at < end
        )
    ).all()
    hours = [
        (row.used_at - row.issued_at).total_seconds() / 3600
        for row in rows
        if row.closed == "pickup" and row.used_at is not None
    ]
    return Dwell(
        deposited=len(rows),
        picked_up=len(hours),
        superseded=sum(1 for row in rows if row.closed == "superseded"),
        waiting=sum(1 for row in rows if row.closed is None),
        mean_h=statistics.fmean(hours) if hours else None,
        median_h=statistics.median(hours) if hours else None,
        max_h=max(hours) if hours else None,
    )


def _deliveries(
    c: Connection, station: str, division: str, tier: str, start: datetime, end: datetime
) -> list[VillageDeliveries]:
    s, k = t.stations.c, t.pickup_codes.c
    if tier == "village":
        points = s.id == station
    else:
        prefix = division[: PREFIX_DIGITS.get(tier, 12)]
        points = and_(s.tier == "village", s.division.startswith(prefix, autoescape=True))
    delivered = (
        select(func.count())
        .where(k.station == s.id, k.issued_at >= start, k.issued_at < end)
        .scalar_subquery()
    )
    rows = c.execute(
        select(s.id, s.name, s.division, delivered).where(points).order_by(s.division, s.id)
    ).all()
    return [
        VillageDeliveries(station=r[0], name=r[1], division=r[2], deliveries=int(r[3]))
        for r in rows
    ]


# -- the store's figures ---------------------------------------------------------------


def _probes(
    store: TelemetryStore, station: str, period: Period, known: Sequence[tuple[str, str]]
) -> list[ProbeFigures]:
    """Every probe the engine knows at the station or with daily figures in the store,
    also those without figures in the period (``days`` 0): a missing day shows."""
    keys = set(known) | {
        (tags["device"], tags["probe"])
        for tags in store.series(COLDCHAIN_DAILY)
        if tags.get("station") == station
    }
    first, last = period.days()
    return [
        _probe_figures(device, probe, read_daily(store, station, device, probe, first, last))
        for device, probe in sorted(keys)
    ]


def _probe_figures(device: str, probe: str, days: Sequence[DailyFigures]) -> ProbeFigures:
    """The period's figures from its days'. Exact, since every day's mean and MKT are
    weighted by its covered time: the period's mean is the days' means weighted by
    ``covered_s``, and :func:`mean_kinetic_temperature` of ``(day's MKT, covered_s)``
    turns each MKT back into its mean Arrhenius term and weights that the same way."""
    figures = [day.figures for day in days]
    covered = [f for f in figures if f.covered_s > 0]
    weight = sum(f.covered_s for f in covered)
    means = [(f.mean_c, f.covered_s) for f in covered if f.mean_c is not None]
    kinetic = [(f.mkt_c, f.covered_s) for f in covered if f.mkt_c is not None]
    lows = [f.min_c for f in figures if f.min_c is not None]
    highs = [f.max_c for f in figures if f.max_c is not None]
    latest = figures[-1] if figures else None
    return ProbeFigures(
        device=device,
        probe=probe,
        profile=latest.profile if latest else None,
        low_c=latest.limits.low_c if latest else None,
        high_c=latest.limits.high_c if latest else None,
        days=len(figures),
        readings=sum(f.readings for f in figures),
        covered_h=weight / 3600,
        out_of_range_min=sum(f.out_of_range_min for f in figures),
        min_c=min(lows, default=None),
        max_c=max(highs, default=None),
        mean_c=sum(v * w for v, w in means) / weight if means else None,
        mkt_c=mean_kinetic_temperature(kinetic) if kinetic else None,
    )


def _uptime(
    store: TelemetryStore, station: str, device: str, role: str, start: datetime, end: datetime
) -> Uptime:
    """Online time in ``[start, end)`` from the device's status changes."""
    tags = {"station": station, "device": device}
    start_ns, end_ns = to_epoch_ns(start), to_epoch_ns(end)
    if end_ns <= start_ns:  # a period that has not begun
        return Uptime(device=device, role=role, online_ratio=None, online_h=0.0)
    during = store.query_series(DEVICE_STATUS, "state", tags, start_ns, end_ns)
    before = _state_before(store, tags, start_ns)
    if before is None and not during:
        return Uptime(device=device, role=role, online_ratio=None, online_h=0.0)
    changes = [] if before is None else [(start_ns, before)]
    changes += [(value.time_ns, value.value) for value in during]
    online_ns = sum(
        until - at
        for (at, state), (until, _) in zip(changes, [*changes[1:], (end_ns, None)], strict=True)
        if state == "online"
    )
    return Uptime(
        device=device,
        role=role,
        online_ratio=online_ns / (end_ns - start_ns),
        online_h=online_ns / 3.6e12,
    )


def _state_before(store: TelemetryStore, tags: dict[str, str], start_ns: int) -> FieldValue | None:
    """The device's last status before ``start_ns``: a month back, a year, then all."""
    until = start_ns
    for back in _LOOKBACK:
        since = start_ns - back // timedelta(microseconds=1) * 1000
        values = store.query_series(DEVICE_STATUS, "state", tags, since, until)
        if values:
            return values[-1].value
        until = since
    values = store.query_series(DEVICE_STATUS, "state", tags, None, until)
    return values[-1].value if values else None
