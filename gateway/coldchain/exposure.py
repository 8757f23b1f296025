"""Cold-chain exposure figures to and from the telemetry store.

The figures are computed from the readings as stored (not as they streamed past), so a
supervisor can re-check them, and written back as points, so they are queryable beside
the readings. Schema (the same on InfluxDB and SQLite)::

    coldchain_daily   tags station, device, probe
                      fields day (ISO date), profile, readings (int), covered_s,
                             out_of_range_min, min_c?, max_c?, mean_c?, mkt_c?,
                             low_c?, high_c?
                      time   the local day's start
    coldchain_parcel  tags station, device, probe, waybill
                      fields start, end (int ns), profile, readings (int), covered_s,
                             out_of_range_min, min_c?, max_c?, mean_c?, mkt_c?,
                             low_c?, high_c?
                      time   the stay's start

(``?``: absent when nothing was covered, or when the limit is unbounded.) Points are
rewritten in place when measured again: same tags, same time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from contracts.profiles import Limits
from gateway.coldchain import metrics
from gateway.coldchain.metrics import Exposure
from gateway.convert import TEMPERATURE
from gateway.telemetry.model import FieldValue, TelemetryPoint, TelemetryStore

COLDCHAIN_DAILY = "coldchain_daily"
COLDCHAIN_PARCEL = "coldchain_parcel"

_OPTIONAL = ("min_c", "max_c", "mean_c", "mkt_c", "low_c", "high_c")
_FIGURES = ("profile", "readings", "covered_s", "out_of_range_min", *_OPTIONAL)
_DAY = timedelta(days=1)
_EPOCH_DAY = date(1970, 1, 1).toordinal()

_Rows = dict[int, dict[str, FieldValue]]


@dataclass(frozen=True, slots=True)
class Figures:
    """The stored figures of one day or stay, as read back from the store."""

    profile: str
    limits: Limits
    readings: int
    covered_s: float
    out_of_range_min: float
    min_c: float | None
    max_c: float | None
    mean_c: float | None
    mkt_c: float | None


@dataclass(frozen=True, slots=True)
class DailyFigures:
    station: str
    device: str
    probe: str
    day: date
    start_ns: int
    figures: Figures


@dataclass(frozen=True, slots=True)
class ParcelFigures:
    station: str
    device: str
    probe: str
    waybill: str
    start_ns: int
    end_ns: int
    figures: Figures


# --- writing ------------------------------------------------------------------------


def daily_point(
    station: str,
    device: str,
    probe: str,
    day: date,
    profile_name: str,
    limits: Limits,
    exposure: Exposure,
) -> TelemetryPoint:
    """One probe's figures for one local day, stamped with the day's start."""
    return TelemetryPoint(
        measurement=COLDCHAIN_DAILY,
        tags={"station": station, "device": device, "probe": probe},
        fields={"day": day.isoformat(), **_figure_fields(profile_name, limits, exposure)},
        time_ns=exposure.start_ns,
    )


def parcel_point(
    station: str,
    device: str,
    probe: str,
    waybill: str,
    profile_name: str,
    limits: Limits,
    exposure: Exposure,
) -> TelemetryPoint:
    """One parcel's figures for one stay in a cold compartment, stamped with its start."""
    return TelemetryPoint(
        measurement=COLDCHAIN_PARCEL,
        tags={"station": station, "device": device, "probe": probe, "waybill": waybill},
        fields={
            "start_ns": exposure.start_ns,
            "end_ns": exposure.end_ns,
            **_figure_fields(profile_name, limits, exposure),
        },
        time_ns=exposure.start_ns,
    )


def _figure_fields(profile_name: str, limits: Limits, exposure: Exposure) -> dict[str, FieldValue]:
    """The fields both measurements share; floats stay floats (a field keeps its type)."""
    fields: dict[str, FieldValue] = {
        "profile": profile_name,
        "readings": exposure.readings,
        "covered_s": float(exposure.covered_s),
        "out_of_range_min": float(exposure.out_of_range_minutes),
    }
    optional = (
        exposure.min_c,
        exposure.max_c,
        exposure.mean_c,
        exposure.mkt_c,
        limits.low_c,
        limits.high_c,
    )
    for key, value in zip(_OPTIONAL, optional, strict=True):
        if value is not None:
            fields[key] = float(value)
    return fields


# --- measuring ----------------------------------------------------------------------


def probe_exposure(
    store: TelemetryStore,
    station: str,
    device: str,
    probe: str,
    start_ns: int,
    end_ns: int,
    limits: Limits,
    max_gap_s: float,
    plausible: Limits | None = None,
) -> Exposure:
    """The probe's exposure over ``[start_ns, end_ns)`` from its stored readings.

    Readings from ``max_gap_s`` before the window are read too: the last of them still
    holds at the window's start (see :func:`gateway.coldchain.metrics.exposure`).
    Readings outside ``plausible`` (a broken sensor's 85 °C or −127 °C, which the alert
    engine reports as a sensor fault) are left out: the time they would hold is not
    covered, rather than counted as an excursion the goods never saw.
    """
    values = store.query_series(
        TEMPERATURE,
        "celsius",
        {"station": station, "device": device, "probe": probe},
        start_ns - metrics.gap_ns(max_gap_s),
        end_ns,
    )
    readings = [metrics.Reading(value.time_ns, _float(value.value)) for value in values]
    if plausible is not None:
        readings = [reading for reading in readings if plausible.contains(reading.celsius)]
    return metrics.exposure(readings, start_ns, end_ns, limits, max_gap_s)


# --- reading back -------------------------------------------------------------------


def read_daily(
    store: TelemetryStore,
    station: str,
    device: str,
    probe: str,
    start_day: date,
    end_day: date,
) -> list[DailyFigures]:
    """The stored daily figures of one probe from ``start_day`` to ``end_day``, inclusive.

    Points are stamped with local midnight, within a day of UTC midnight in every zone:
    the query takes a day more on each side and keeps the points whose ``day`` is asked.
    """
    tags = {"station": station, "device": device, "probe": probe}
    start_ns = _utc_midnight_ns(start_day - _DAY)
    end_ns = _utc_midnight_ns(end_day + 2 * _DAY)
    rows = _read_rows(store, COLDCHAIN_DAILY, tags, ("day", *_FIGURES), start_ns, end_ns)
    found = []
    for time_ns, row in rows.items():
        day = date.fromisoformat(str(row["day"]))
        if start_day <= day <= end_day:
            found.append(DailyFigures(station, device, probe, day, time_ns, _figures(row)))
    return found


def read_parcel(store: TelemetryStore, waybill: str) -> list[ParcelFigures]:
    """Every stored stay of one parcel in a cold compartment, oldest first.

    The store protocol cannot filter series by tag, so this lists all parcel series
    (one per parcel and probe) and keeps the waybill's: fine for a report, not a loop.
    """
    found = []
    for tags in store.series(COLDCHAIN_PARCEL):
        if tags.get("waybill") != waybill:
            continue
        rows = _read_rows(store, COLDCHAIN_PARCEL, tags, ("start_ns", "end_ns", *_FIGURES))
        for time_ns, row in rows.items():
            found.append(
                ParcelFigures(
                    station=tags["station"],
                    device=tags["device"],
                    probe=tags["probe"],
                    waybill=waybill,
                    start_ns=_int(row.get("start_ns", time_ns)),
                    end_ns=_int(row["end_ns"]),
                    figures=_figures(row),
                )
            )
    return sorted(found, key=lambda stay: (stay.start_ns, stay.station, stay.device))


def _read_rows(
    store: TelemetryStore,
    measurement: str,
    tags: Mapping[str, str],
    fields: tuple[str, ...],
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> _Rows:
    """Points as field dicts by time, read field by field (what the protocol offers).

    Times without ``readings`` (a field every figures point has) are not figures and
    are left out.
    """
    rows: _Rows = {}
    for name in fields:
        for value in store.query_series(measurement, name, tags, start_ns, end_ns):
            rows.setdefault(value.time_ns, {})[name] = value.value
    return {time_ns: row for time_ns, row in sorted(rows.items()) if "readings" in row}


def _figures(row: Mapping[str, FieldValue]) -> Figures:
    def optional(key: str) -> float | None:
        value = row.get(key)
        return None if value is None else _float(value)

    return Figures(
        profile=str(row.get("profile", "")),
        limits=Limits(optional("low_c"), optional("high_c")),
        readings=_int(row["readings"]),
        covered_s=_float(row.get("covered_s", 0.0)),
        out_of_range_min=_float(row.get("out_of_range_min", 0.0)),
        min_c=optional("min_c"),
        max_c=optional("max_c"),
        mean_c=optional("mean_c"),
        mkt_c=optional("mkt_c"),
    )


def _float(value: FieldValue) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, the store gave {type(value).__name__}")
    return float(value)


def _int(value: FieldValue) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, the store gave {type(value).__name__}")
    return value


def _utc_midnight_ns(day: date) -> int:
    return (day.toordinal() - _EPOCH_DAY) * 86_400 * 1_000_000_000
