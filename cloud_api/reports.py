"""Compliance reports: one station, one local day or month, from the ledger and the
cold-chain figures in the telemetry store.

What each figure counts (the period is ``[start, end)`` in the API's time zone):

- **Real-name coverage**: outbound parcels = parcels accepted at the station in the
  period; with a record = those with a real-name record (every stored record passed the
  identity rules); ratio = with / all (None without parcels).
- **X-ray coverage**: those outbound parcels with at least one X-ray verdict (at any
  station, at any time); plus the verdicts given at this station in the period.
- **Holds**: holds opened in the period on parcels accepted or X-rayed at the station;
  how many are released by now and how many still hold.
- **Exceptions**: the station's sort decisions in the period, routed and sent to the
  exception chute by reason; locker deposit requests refused, by reason.
- **Cold chain**: per probe of the station, from the daily figures (``coldchain_daily``)
  of the period's days: minutes out of range (sum), min and max, mean (weighted by the
  covered time) and mean kinetic temperature. A day's MKT is −ΔH/R ÷ ln of the day's
  time-weighted mean Arrhenius term, so weighting the days' MKTs by their covered time
  in the same formula gives the period's MKT exactly. Alerts raised at the station in
  the period, by kind.
- **Locker dwell**: delivery deposits at the station's lockers in the period (pickup
  codes issued), how many were picked up and the hours from deposit to pickup (mean,
  median, max), how many are still waiting.
- **Device uptime**: per registered device, the share of the period (up to now) that its
  latest status said ``online``; the state at the start is its last status within
  :data:`UPTIME_LOOKBACK` before the period; None when no status is known at all.
- **Deliveries per village point**: every village-tier station under the station's
  division (county: the first 6 digits, township: 9, village: itself), with its
  delivery deposits in the period.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from openpyxl import Workbook  # type: ignore[import-untyped]
from pydantic import BaseModel, Field
from sqlalchemy import Connection, and_, exists, func, or_, select

from cloud_api.schemas import iso
from gateway.coldchain.exposure import COLDCHAIN_DAILY, DailyFigures, read_daily
from gateway.coldchain.metrics import mean_kinetic_temperature
from gateway.convert import DEVICE_STATUS
from gateway.ledger import Ledger
from gateway.ledger import schema as t
from gateway.telemetry import TelemetryStore

UPTIME_LOOKBACK = timedelta(days=31)
PREFIX_DIGITS = {"county": 6, "township": 9, "village": 12}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class UnknownStation(LookupError):
    """No such station in the ledger."""


@dataclass(frozen=True)
class Period:
    kind: Literal["day", "month"]
    label: str
    start: datetime
    end: datetime
    tz: ZoneInfo

    def days(self) -> tuple[date, date]:
        """The first and last local day, inclusive."""
        return self.start.date(), (self.end - timedelta(days=1)).date()


def period_of(*, day: str | None, month: str | None, tz: ZoneInfo) -> Period:
    """The local day ``YYYY-MM-DD`` or month ``YYYY-MM``; exactly one of them."""
    if (day is None) == (month is None):
        raise ValueError("give exactly one of day (YYYY-MM-DD) and month (YYYY-MM)")
    try:
        if day is not None:
            first = date.fromisoformat(day)
            start = datetime(first.year, first.month, first.day, tzinfo=tz)
            return Period("day", first.isoformat(), start, _local_midnight(first, 1, tz), tz)
        assert month is not None
        year, number = (int(part) for part in month.split("-"))
        start = datetime(year, number, 1, tzinfo=tz)
    except ValueError:
        raise ValueError(f"not a calendar day or month: {day or month}") from None
    following = date(year + number // 12, number % 12 + 1, 1)
    end = datetime(following.year, following.month, 1, tzinfo=tz)
    return Period("month", f"{year:04d}-{number:02d}", start, end, tz)


def _local_midnight(day: date, days_later: int, tz: ZoneInfo) -> datetime:
    later = day + timedelta(days=days_later)
    return datetime(later.year, later.month, later.day, tzinfo=tz)


# -- the report's shape ----------------------------------------------------------------


class PeriodOut(BaseModel):
    kind: str
    label: str
    start: str
    end: str
    timezone: str


class RealnameCoverage(BaseModel):
    outbound: int = Field(description="parcels accepted at the station in the period")
    with_record: int
    ratio: float | None


class XrayCoverage(BaseModel):
    outbound: int
    screened: int = Field(description="outbound parcels with at least one X-ray verdict")
    ratio: float | None
    verdicts: dict[str, int] = Field(description="verdicts given at this station, by verdict")


class Holds(BaseModel):
    opened: int
    released: int
    still_open: int


class Exceptions(BaseModel):
    routed: int = Field(description="sort decisions to a destination chute")
    sort: dict[str, int] = Field(description="exception-chute decisions by reason")
    deposit_refused: dict[str, int] = Field(description="locker deposit refusals by reason")


class ProbeFigures(BaseModel):
    device: str
    probe: str
    profile: str
    days: int
    readings: int
    covered_h: float
    out_of_range_min: float
    min_c: float | None
    max_c: float | None
    mean_c: float | None
    mkt_c: float | None


class ColdChain(BaseModel):
    probes: list[ProbeFigures]
    alerts: dict[str, int] = Field(description="alerts raised in the period, by kind")


class Dwell(BaseModel):
    deposited: int
    picked_up: int
    waiting: int
    mean_h: float | None
    median_h: float | None
    max_h: float | None


class Uptime(BaseModel):
    device: str
    role: str
    online_ratio: float | None
    online_h: float


class VillageDeliveries(BaseModel):
    station: str
    name: str
    division: str
    deliveries: int


class ComplianceReport(BaseModel):
    station: str
    name: str
    division: str
    tier: str
    period: PeriodOut
    generated_at: str
    realname: RealnameCoverage
    xray: XrayCoverage
    holds: Holds
    exceptions: Exceptions
    coldchain: ColdChain
    dwell: Dwell
    uptime: list[Uptime]
    deliveries: list[VillageDeliveries]


# -- computing it ----------------------------------------------------------------------


def compliance_report(
    ledger: Ledger,
    store: TelemetryStore,
    station: str,
    period: Period,
    *,
    now: datetime | None = None,
) -> ComplianceReport:
    """The report of ``station`` for ``period``; :class:`UnknownStation` if it is not in
    the ledger. Reads only (one read transaction, then the store)."""
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
        realname, xray = _coverage(c, station, start, end)
        holds = _holds(c, station, start, end)
        exceptions = _exceptions(c, station, start, end)
        alerts = _counts(
            c,
            select(t.alerts.c.kind, func.count())
            .where(
                t.alerts.c.station == station,
                t.alerts.c.raised_at >= start,
                t.alerts.c.raised_at < end,
            )
            .group_by(t.alerts.c.kind),
        )
        dwell = _dwell(c, station, start, end)
        deliveries = _deliveries(c, row.division, row.tier, start, end)
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
        coldchain=ColdChain(probes=_probes(store, station, period), alerts=alerts),
        dwell=dwell,
        uptime=[
            _uptime(store, station, device, role, start, min(end, now)) for device, role in devices
        ],
        deliveries=deliveries,
    )


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _counts(connection: Connection, query: Any) -> dict[str, int]:
    return {str(key): int(count) for key, count in connection.execute(query)}


def _coverage(
    c: Connection, station: str, start: datetime, end: datetime
) -> tuple[RealnameCoverage, XrayCoverage]:
    p = t.parcels.c
    outbound = and_(p.station == station, p.accepted_at >= start, p.accepted_at < end)
    has_record = exists().where(t.realname_records.c.waybill == p.waybill)
    screened = exists().where(t.xray_verdicts.c.waybill == p.waybill)
    total, named, xrayed = c.execute(
        select(
            func.count(),
            func.count().filter(has_record),
            func.count().filter(screened),
        ).where(outbound)
    ).one()
    x = t.xray_verdicts.c
    verdicts = _counts(
        c,
        select(x.verdict, func.count())
        .where(x.station == station, x.scanned_at >= start, x.scanned_at < end)
        .group_by(x.verdict),
    )
    return (
        RealnameCoverage(outbound=total, with_record=named, ratio=_ratio(named, total)),
        XrayCoverage(
            outbound=total,
            screened=xrayed,
            ratio=_ratio(xrayed, total),
            verdicts={verdict: verdicts.get(verdict, 0) for verdict in ("PASS", "SUSPECT", "FAIL")},
        ),
    )


def _holds(c: Connection, station: str, start: datetime, end: datetime) -> Holds:
    h = t.holds.c
    ours = or_(
        exists().where(t.parcels.c.waybill == h.waybill, t.parcels.c.station == station),
        exists().where(
            t.xray_verdicts.c.waybill == h.waybill, t.xray_verdicts.c.station == station
        ),
    )
    opened, released = c.execute(
        select(func.count(), func.count(h.released_at)).where(ours, h.since >= start, h.since < end)
    ).one()
    return Holds(opened=opened, released=released, still_open=opened - released)


def _exceptions(c: Connection, station: str, start: datetime, end: datetime) -> Exceptions:
    d = t.decisions.c
    ours = and_(d.station == station, d.decided_at >= start, d.decided_at < end)
    by = select(d.reason, func.count()).group_by(d.reason)
    routed = c.execute(
        select(func.count()).where(ours, d.kind == "sort", d.outcome == "routed")
    ).scalar_one()
    return Exceptions(
        routed=routed,
        sort=_counts(c, by.where(ours, d.kind == "sort", d.outcome == "exception")),
        deposit_refused=_counts(c, by.where(ours, d.kind == "deposit", d.outcome == "refused")),
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
        waiting=sum(1 for row in rows if row.closed is None and row.used_at is None),
        mean_h=statistics.fmean(hours) if hours else None,
        median_h=statistics.median(hours) if hours else None,
        max_h=max(hours) if hours else None,
    )


def _deliveries(
    c: Connection, division: str, tier: str, start: datetime, end: datetime
) -> list[VillageDeliveries]:
    s, k = t.stations.c, t.pickup_codes.c
    prefix = division[: PREFIX_DIGITS.get(tier, 12)]
    delivered = (
        select(func.count())
        .where(k.station == s.id, k.issued_at >= start, k.issued_at < end)
        .scalar_subquery()
    )
    rows = c.execute(
        select(s.id, s.name, s.division, delivered)
        .where(s.tier == "village", s.division.startswith(prefix, autoescape=True))
        .order_by(s.division, s.id)
    ).all()
    return [
        VillageDeliveries(station=r[0], name=r[1], division=r[2], deliveries=int(r[3]))
        for r in rows
    ]


def _probes(store: TelemetryStore, station: str, period: Period) -> list[ProbeFigures]:
    first, last = period.days()
    found = []
    for tags in store.series(COLDCHAIN_DAILY):
        if tags.get("station") != station:
            continue
        days = read_daily(store, station, tags["device"], tags["probe"], first, last)
        if days:
            found.append(_probe_figures(tags["device"], tags["probe"], days))
    return sorted(found, key=lambda p: (p.device, p.probe))


def _probe_figures(device: str, probe: str, days: Sequence[DailyFigures]) -> ProbeFigures:
    figures = [day.figures for day in days]
    weighted = [(f.mean_c, f.covered_s) for f in figures if f.mean_c is not None and f.covered_s]
    kinetic = [(f.mkt_c, f.covered_s) for f in figures if f.mkt_c is not None and f.covered_s]
    covered = sum(weight for _, weight in weighted)
    lows = [f.min_c for f in figures if f.min_c is not None]
    highs = [f.max_c for f in figures if f.max_c is not None]
    return ProbeFigures(
        device=device,
        probe=probe,
        profile=figures[-1].profile,
        days=len(figures),
        readings=sum(f.readings for f in figures),
        covered_h=sum(f.covered_s for f in figures) / 3600,
        out_of_range_min=sum(f.out_of_range_min for f in figures),
        min_c=min(lows) if lows else None,
        max_c=max(highs) if highs else None,
        mean_c=sum(v * w for v, w in weighted) / covered if covered else None,
        mkt_c=mean_kinetic_temperature(kinetic) if kinetic else None,
    )


def _uptime(
    store: TelemetryStore, station: str, device: str, role: str, start: datetime, end: datetime
) -> Uptime:
    tags = {"station": station, "device": device}
    start_ns, end_ns = _ns(start), _ns(end)
    if end_ns <= start_ns:
        return Uptime(device=device, role=role, online_ratio=None, online_h=0.0)
    before = store.query_series(
        DEVICE_STATUS, "state", tags, _ns(start - UPTIME_LOOKBACK), start_ns
    )
    during = store.query_series(DEVICE_STATUS, "state", tags, start_ns, end_ns)
    if not before and not during:
        return Uptime(device=device, role=role, online_ratio=None, online_h=0.0)
    changes = [(start_ns, before[-1].value)] if before else []
    changes += [(value.time_ns, value.value) for value in during]
    online_ns = 0
    for (at, state), (until, _) in zip(changes, [*changes[1:], (end_ns, None)], strict=True):
        if state == "online":
            online_ns += until - at
    return Uptime(
        device=device,
        role=role,
        online_ratio=online_ns / (end_ns - start_ns),
        online_h=online_ns / 3.6e12,
    )


def _ns(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(microseconds=1) * 1000


# -- CSV and XLSX ----------------------------------------------------------------------


def _sections(report: ComplianceReport) -> Iterator[tuple[str, list[str], list[list[Any]]]]:
    """(title, header, rows) of each section, for both file formats."""
    yield (
        "report",
        ["station", "name", "division", "tier", "period", "start", "end", "time zone",
         "generated at"],
        [[report.station, report.name, report.division, report.tier, report.period.label,
          report.period.start, report.period.end, report.period.timezone,
          report.generated_at]],
    )  # fmt: skip
    r, x = report.realname, report.xray
    yield (
        "coverage",
        ["figure", "parcels", "covered", "ratio"],
        [
            ["real-name records", r.outbound, r.with_record, r.ratio],
            ["X-ray screened", x.outbound, x.screened, x.ratio],
        ],
    )
    yield "xray verdicts", ["verdict", "count"], [[k, v] for k, v in x.verdicts.items()]
    h = report.holds
    yield "holds", ["opened", "released", "still open"], [[h.opened, h.released, h.still_open]]
    e = report.exceptions
    yield (
        "exceptions",
        ["decision", "reason", "count"],
        [["sort", "(routed)", e.routed]]
        + [["sort", reason, count] for reason, count in sorted(e.sort.items())]
        + [
            ["deposit refused", reason, count]
            for reason, count in sorted(e.deposit_refused.items())
        ],
    )
    fields = list(ProbeFigures.model_fields)
    yield (
        "cold chain",
        fields,
        [[getattr(p, name) for name in fields] for p in report.coldchain.probes],
    )
    yield "alerts", ["kind", "count"], [[k, v] for k, v in sorted(report.coldchain.alerts.items())]
    d = report.dwell
    yield (
        "locker dwell",
        list(Dwell.model_fields),
        [[getattr(d, name) for name in Dwell.model_fields]],
    )
    yield (
        "device uptime",
        list(Uptime.model_fields),
        [[getattr(u, name) for name in Uptime.model_fields] for u in report.uptime],
    )
    yield (
        "deliveries",
        list(VillageDeliveries.model_fields),
        [[getattr(v, name) for name in VillageDeliveries.model_fields] for v in report.deliveries],
    )


def report_csv(report: ComplianceReport) -> str:
    """The report as one CSV: each section a title row, a header row, its rows, a blank."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for title, header, rows in _sections(report):
        writer.writerow([f"# {title}"])
        writer.writerow(header)
        writer.writerows(["" if value is None else value for value in row] for row in rows)
        writer.writerow([])
    return out.getvalue()


def report_xlsx(report: ComplianceReport) -> bytes:
    """The report as a workbook, one sheet per section (header row first)."""
    workbook = Workbook()
    workbook.remove(workbook.active)
    for title, header, rows in _sections(report):
        sheet = workbook.create_sheet(title=title[:31])
        sheet.append(header)
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()
