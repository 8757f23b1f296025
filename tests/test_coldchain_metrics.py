"""Cold-chain exposure figures: MKT, time-weighted exposure, local days, and the figures
written to and read back from the real SQLite and InfluxDB stores."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import TemperatureBody, make_envelope
from contracts.profiles import BUILTIN_LIMITS, Limits
from gateway.coldchain.exposure import (
    COLDCHAIN_DAILY,
    COLDCHAIN_PARCEL,
    DailyFigures,
    Figures,
    ParcelFigures,
    daily_point,
    parcel_point,
    probe_exposure,
    read_daily,
    read_parcel,
)
from gateway.coldchain.metrics import (
    Exposure,
    Reading,
    day_window,
    exposure,
    mean_kinetic_temperature,
)
from gateway.convert import to_points
from gateway.telemetry import InfluxStoreConfig, TelemetryPoint, TelemetryStore
from gateway.telemetry.influx import InfluxTelemetryStore
from gateway.telemetry.sqlite import SqliteTelemetryStore

S = 1_000_000_000
MIN = 60 * S
T0 = 1_764_000_000 * S
CHILLED = BUILTIN_LIMITS["chilled"]  # 0 .. 4 °C
SHANGHAI = ZoneInfo("Asia/Shanghai")


def utc_ns(year: int, month: int, day: int, hour: int) -> int:
    return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp()) * S


def reference_mkt(samples: list[tuple[float, float]]) -> float:
    """The textbook formula, written out plainly, to check the implementation against."""
    dh_over_r = 83_144.0 / 8.314462618
    total = sum(weight for _, weight in samples)
    mean = sum(weight * math.exp(-dh_over_r / (c + 273.15)) for c, weight in samples) / total
    return dh_over_r / -math.log(mean) - 273.15


# --- mean kinetic temperature ----------------------------------------------------------


def test_mkt_of_20_h_at_5_and_4_h_at_15_is_7_70() -> None:
    assert round(mean_kinetic_temperature([(5.0, 20 * 3600), (15.0, 4 * 3600)]), 2) == 7.70


def test_mkt_matches_the_textbook_formula() -> None:
    samples = [(2.0, 600.0), (8.5, 120.0), (-1.0, 30.0), (25.0, 5.0)]
    assert mean_kinetic_temperature(samples) == pytest.approx(reference_mkt(samples), abs=1e-9)


@pytest.mark.parametrize("celsius", [-25.0, 0.0, 4.0, 37.5])
def test_mkt_of_a_constant_temperature_is_that_temperature(celsius: float) -> None:
    assert mean_kinetic_temperature([(celsius, 10.0), (celsius, 3.5)]) == celsius


def test_mkt_ignores_zero_weights() -> None:
    assert mean_kinetic_temperature([(5.0, 60.0), (40.0, 0.0)]) == 5.0


@pytest.mark.parametrize(
    "samples",
    [[], [(5.0, 0.0)], [(5.0, -1.0)], [(math.nan, 1.0)], [(5.0, math.inf)], [(-300.0, 1.0)]],
)
def test_mkt_rejects_no_weight_and_impossible_samples(samples: list[tuple[float, float]]) -> None:
    with pytest.raises(ValueError, match=r"MKT|weight|absolute zero"):
        mean_kinetic_temperature(samples)


samples_st = st.lists(
    st.tuples(st.floats(-60.0, 60.0, allow_nan=False), st.floats(0.001, 86_400.0, allow_nan=False)),
    min_size=1,
    max_size=30,
)


@given(samples_st)
def test_mkt_is_at_least_the_mean_and_within_the_range(samples: list[tuple[float, float]]) -> None:
    """Jensen: exp(−a/T) is convex here, so MKT ≥ the time-weighted arithmetic mean."""
    mkt = mean_kinetic_temperature(samples)
    total = math.fsum(weight for _, weight in samples)
    mean = math.fsum(c * weight for c, weight in samples) / total
    assert mkt >= mean - 1e-9
    assert min(c for c, _ in samples) <= mkt <= max(c for c, _ in samples)


# --- exposure --------------------------------------------------------------------------

HAND_MADE = [
    Reading(T0 - 700 * S, 10.0),  # its hold (to T0 − 120 s) ends before the window
    Reading(T0 - 120 * S, 3.0),  # holds into the window until the next: 300 s
    Reading(T0 + 300 * S, 5.0),  # 600 s out of range
    Reading(T0 + 900 * S, 2.0),  # 600 s (the 600 s gap limit), then silence until 2400 s
    Reading(T0 + 2400 * S, 6.0),  # 300 s out of range
    Reading(T0 + 2700 * S, 9.0),  # overwritten by the next reading at the same time
    Reading(T0 + 2700 * S, 4.0),  # on the limit, in range: 600 s, then silence to the end
    Reading(T0 + 3600 * S, 20.0),  # at the window's end: outside
]


def test_exposure_of_a_hand_made_series_with_gaps() -> None:
    got = exposure(HAND_MADE, T0, T0 + 3600 * S, CHILLED, max_gap_s=600)
    assert (got.start_ns, got.end_ns, got.readings) == (T0, T0 + 3600 * S, 5)
    assert (got.covered_s, got.out_of_range_s, got.out_of_range_minutes) == (2400.0, 900.0, 15.0)
    assert (got.min_c, got.max_c, got.mean_c) == (2.0, 6.0, 9300 / 2400)
    samples = [(3.0, 300.0), (5.0, 600.0), (2.0, 600.0), (6.0, 300.0), (4.0, 600.0)]
    assert got.mkt_c == pytest.approx(reference_mkt(samples), abs=1e-9)


def test_a_window_inside_one_readings_hold_is_clipped_to_the_window() -> None:
    got = exposure([Reading(T0 - 100 * S, 1.0)], T0, T0 + 60 * S, CHILLED, max_gap_s=1000)
    assert (got.readings, got.covered_s, got.out_of_range_s) == (1, 60.0, 0.0)
    assert (got.min_c, got.max_c, got.mean_c, got.mkt_c) == (1.0, 1.0, 1.0, 1.0)


def test_the_last_reading_holds_until_the_gap_or_the_window_ends() -> None:
    assert exposure([Reading(T0, 1.0)], T0, T0 + 60 * S, CHILLED, 600).covered_s == 60.0
    assert exposure([Reading(T0, 1.0)], T0, T0 + 900 * S, CHILLED, 600).covered_s == 600.0


def test_unbounded_limits_count_nothing_out_of_range() -> None:
    got = exposure(HAND_MADE, T0, T0 + 3600 * S, Limits(None, None), 600)
    assert (got.covered_s, got.out_of_range_s) == (2400.0, 0.0)


def test_nothing_covered_gives_no_temperatures() -> None:
    empty = Exposure(T0, T0 + S, 0, 0.0, 0.0, None, None, None, None)
    assert exposure([], T0, T0 + S, CHILLED, 600) == empty
    assert exposure([Reading(T0 - 700 * S, 1.0)], T0, T0 + S, CHILLED, 600) == empty
    assert exposure(HAND_MADE, T0, T0, CHILLED, 600).readings == 0  # an empty window


def test_unsorted_readings_are_rejected() -> None:
    with pytest.raises(ValueError, match="sorted"):
        exposure([Reading(T0 + S, 1.0), Reading(T0, 1.0)], T0, T0 + MIN, CHILLED, 600)


@pytest.mark.parametrize("gap", [0.0, -1.0, math.nan, math.inf])
def test_a_gap_limit_must_be_positive(gap: float) -> None:
    with pytest.raises(ValueError, match="max_gap_s"):
        exposure(HAND_MADE, T0, T0 + MIN, CHILLED, gap)


def test_a_window_ending_before_it_starts_is_rejected() -> None:
    with pytest.raises(ValueError, match="ends before"):
        exposure(HAND_MADE, T0, T0 - 1, CHILLED, 600)


@pytest.mark.parametrize("celsius", [math.nan, math.inf, -273.16])
def test_impossible_readings_fail_at_construction(celsius: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        Reading(T0, celsius)


@st.composite
def series(draw: st.DrawFn) -> tuple[list[Reading], int, int, float]:
    offsets = sorted(draw(st.lists(st.integers(-5_000, 20_000), max_size=40)))
    temps = st.floats(-30.0, 40.0, allow_nan=False)
    readings = [Reading(T0 + offset * S // 10, draw(temps)) for offset in offsets]
    start = T0 + draw(st.integers(-500, 1_000)) * S // 10
    end = start + draw(st.integers(0, 2_000)) * S // 10
    return readings, start, end, draw(st.floats(0.1, 600.0))


@given(series())
def test_exposure_properties(case: tuple[list[Reading], int, int, float]) -> None:
    readings, start, end, gap = case
    got = exposure(readings, start, end, CHILLED, gap)
    assert 0.0 <= got.out_of_range_s <= got.covered_s <= (end - start) / S
    if got.covered_s == 0.0:
        assert got.readings == 0
        assert (got.min_c, got.max_c, got.mean_c, got.mkt_c) == (None, None, None, None)
        return
    assert got.min_c is not None
    assert got.max_c is not None
    assert got.mean_c is not None
    assert got.mkt_c is not None
    assert got.min_c <= got.mean_c <= got.max_c
    assert got.min_c <= got.mkt_c <= got.max_c
    assert got.mkt_c >= got.mean_c - 1e-9


@given(series(), st.integers(0, 1_000))
def test_exposure_of_two_adjoining_windows_adds_up(
    case: tuple[list[Reading], int, int, float], split: int
) -> None:
    """Time is neither lost nor counted twice at a boundary (days, stays)."""
    readings, start, end, gap = case
    middle = min(start + split * S // 10, end)
    whole = exposure(readings, start, end, CHILLED, gap)
    parts = [exposure(readings, a, b, CHILLED, gap) for a, b in ((start, middle), (middle, end))]
    assert whole.covered_s == pytest.approx(sum(p.covered_s for p in parts), abs=1e-9)
    assert whole.out_of_range_s == pytest.approx(sum(p.out_of_range_s for p in parts), abs=1e-9)


# --- local days ------------------------------------------------------------------------


def test_a_shanghai_day_runs_from_local_midnight_for_24_hours() -> None:
    start, end = day_window(date(2026, 3, 29), SHANGHAI)
    assert (start, end - start) == (utc_ns(2026, 3, 28, 16), 24 * 3600 * S)


def test_a_berlin_day_with_a_dst_change_lasts_23_or_25_hours() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    assert day_window(date(2026, 3, 29), berlin) == (
        utc_ns(2026, 3, 28, 23),
        utc_ns(2026, 3, 29, 22),
    )
    start, end = day_window(date(2026, 10, 25), berlin)
    assert (start, end - start) == (utc_ns(2026, 10, 24, 22), 25 * 3600 * S)


def test_consecutive_days_adjoin() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    assert day_window(date(2026, 3, 28), berlin)[1] == day_window(date(2026, 3, 29), berlin)[0]


def test_a_day_whose_midnight_is_skipped_starts_when_the_clocks_jump() -> None:
    """Santiago springs forward at 00:00: the local day starts at 01:00 (04:00 UTC)."""
    start, end = day_window(date(2026, 9, 6), ZoneInfo("America/Santiago"))
    assert (start, end - start) == (utc_ns(2026, 9, 6, 4), 23 * 3600 * S)


# --- through the stores ----------------------------------------------------------------

DAY = date(2026, 11, 25)
PROBE = ("village-23", "medbox", "vaccine")
OFFLINE_AFTER_S = 15 * 60


def local(hour: int, minute: int = 0) -> datetime:
    return datetime.combine(DAY, time(hour, minute), tzinfo=SHANGHAI)


def reading_points() -> list[TelemetryPoint]:
    """A day of readings every 5 min as the gateway stores them: 3 °C, but 6 °C from
    10:00 to 11:00, silent from 14:00 to 15:00, plus a neighbouring probe at 30 °C."""
    station, device, probe = PROBE
    points = []
    moment, seq = local(0) - timedelta(minutes=5), 1
    while moment <= local(0) + timedelta(days=1):
        if not local(14) <= moment < local(15):
            celsius = 6.0 if local(10) <= moment < local(11) else 3.0
            for name, value in ((probe, celsius), ("ambient", 30.0)):
                body = TemperatureBody(probe=name, celsius=value)
                envelope = make_envelope(
                    station=station,
                    device=device,
                    boot=1,
                    seq=seq,
                    ts=moment.astimezone(UTC),
                    body=body,
                )
                points.extend(to_points(envelope))
                seq += 1
        moment += timedelta(minutes=5)
    return points


@pytest.fixture(params=["sqlite", pytest.param("influxdb", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TelemetryStore]:
    made: TelemetryStore
    if request.param == "sqlite":
        made = SqliteTelemetryStore(tmp_path / "telemetry.sqlite")
    else:
        url = request.getfixturevalue("influxd").url
        config = InfluxStoreConfig(
            kind="influxdb", url=url, database=request.getfixturevalue("influx_db")
        )
        made = InfluxTelemetryStore(config)
    made.open()
    yield made
    made.close()


def test_a_probes_day_is_measured_written_and_read_back_exactly(store: TelemetryStore) -> None:
    store.write(reading_points())
    start, end = day_window(DAY, SHANGHAI)
    got = probe_exposure(store, *PROBE, start, end, CHILLED, OFFLINE_AFTER_S)
    # Silent 14:00–15:00: the 13:55 reading holds to 14:10, so 50 min are not covered.
    covered = 24 * 3600 - 50 * 60
    assert (got.readings, got.covered_s, got.out_of_range_minutes) == (276, covered, 60.0)
    assert (got.min_c, got.max_c) == (3.0, 6.0)
    assert got.mean_c == pytest.approx((3.0 * (covered - 3600) + 6.0 * 3600) / covered)
    assert got.mkt_c == pytest.approx(reference_mkt([(3.0, covered - 3600), (6.0, 3600)]))

    store.write([daily_point(*PROBE, DAY, "chilled", CHILLED, got)])
    figures = Figures("chilled", CHILLED, 276, covered, 60.0, 3.0, 6.0, got.mean_c, got.mkt_c)
    expected = DailyFigures(*PROBE, DAY, start, figures)
    assert read_daily(store, *PROBE, DAY, DAY) == [expected]
    assert read_daily(store, *PROBE, DAY - timedelta(days=3), DAY + timedelta(days=3)) == [expected]
    assert read_daily(store, *PROBE, DAY + timedelta(days=1), DAY + timedelta(days=1)) == []


def test_a_parcels_stay_is_measured_written_and_read_back_by_waybill(
    store: TelemetryStore,
) -> None:
    store.write(reading_points())
    midnight = day_window(DAY, SHANGHAI)[0]
    start, end = midnight + 570 * MIN, midnight + 630 * MIN  # 09:30–10:30
    got = probe_exposure(store, *PROBE, start, end, CHILLED, OFFLINE_AFTER_S)
    assert (got.readings, got.covered_s, got.out_of_range_minutes) == (12, 3600.0, 30.0)
    store.write(
        [
            parcel_point(*PROBE, "SF1234567890", "chilled", CHILLED, got),
            parcel_point(*PROBE, "SF0000000001", "chilled", CHILLED, got),
        ]
    )
    assert read_parcel(store, "SF1234567890") == [
        ParcelFigures(
            *PROBE,
            "SF1234567890",
            start,
            end,
            Figures("chilled", CHILLED, 12, 3600.0, 30.0, 3.0, 6.0, 4.5, got.mkt_c),
        )
    ]
    assert read_parcel(store, "SF9999999999") == []


def test_unbounded_limits_and_an_uncovered_window_leave_their_fields_out() -> None:
    empty = Exposure(T0, T0 + S, 0, 0.0, 0.0, None, None, None, None)
    point = daily_point(*PROBE, DAY, "frozen", BUILTIN_LIMITS["frozen"], empty)
    assert point.measurement == COLDCHAIN_DAILY
    assert dict(point.fields) == {
        "day": "2026-11-25",
        "profile": "frozen",
        "readings": 0,
        "covered_s": 0.0,
        "out_of_range_min": 0.0,
        "high_c": -18.0,
    }
    parcel = parcel_point(*PROBE, "SF1", "custom", Limits(None, None), empty)
    assert parcel.measurement == COLDCHAIN_PARCEL
    station, device, probe = PROBE
    assert dict(parcel.tags) == {
        "station": station,
        "device": device,
        "probe": probe,
        "waybill": "SF1",
    }
    assert (parcel.fields["start_ns"], parcel.fields["end_ns"], parcel.time_ns) == (T0, T0 + S, T0)
