"""The telemetry store contract, run against SQLite and a real InfluxDB 1.6.

What only one implementation has is in test_telemetry_sqlite.py and test_telemetry_influx.py.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.telemetry import (
    FieldValue,
    InfluxStoreConfig,
    LastValue,
    SeriesValue,
    StoreError,
    StoreRejected,
    TelemetryPoint,
    TelemetryStore,
)
from gateway.telemetry.influx import (
    InfluxTelemetryStore,
)
from gateway.telemetry.sqlite import SqliteTelemetryStore

T0 = 1_700_000_000_123_456_789
S1 = {"station": "s1", "device": "d1", "probe": "p1"}
S2 = {"station": "s1", "device": "d1", "probe": "p2"}
S3 = {"station": "s2", "device": "d7", "probe": "p1"}


def pt(
    time_ns: int, tags: dict[str, str] = S1, m: str = "temperature", **fields: Any
) -> TelemetryPoint:
    return TelemetryPoint(measurement=m, tags=tags, fields=fields, time_ns=time_ns)


def influx_config(url: str, database: str, **kwargs: Any) -> InfluxStoreConfig:
    return InfluxStoreConfig(kind="influxdb", url=url, database=database, **kwargs)


@contextlib.contextmanager
def opened(store: Any) -> Iterator[Any]:
    store.open()
    try:
        yield store
    finally:
        store.close()


def influx(url: str, database: str, **kwargs: Any) -> Any:
    """An opened InfluxDB store, as a context manager."""
    return opened(InfluxTelemetryStore(influx_config(url, database, **kwargs)))


def sqlite(path: Path, **kwargs: Any) -> Any:
    """An opened SQLite store, as a context manager."""
    return opened(SqliteTelemetryStore(path, **kwargs))


@pytest.fixture(params=["sqlite", pytest.param("influxdb", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TelemetryStore]:
    """The same contract, once per implementation, each with empty storage."""
    if request.param == "sqlite":
        made = sqlite(tmp_path / "telemetry.sqlite")
    else:
        url = request.getfixturevalue("influxd").url
        made = influx(url, request.getfixturevalue("influx_db"))
    with made as store:
        yield store


# --- the contract -----------------------------------------------------------------------


def test_values_round_trip_exactly_with_their_types_and_ns_times(store: TelemetryStore) -> None:
    fields: dict[str, FieldValue] = {
        "celsius": 20.0,
        "third": 0.1 + 0.2,
        "seq": 2**62 + 1,
        "msg_id": "d1:1:7",
        "ok": True,
    }
    store.write(
        [TelemetryPoint("temperature", S1, fields, T0), pt(T0 + 1, ok=False, celsius=-1.5e-7)]
    )
    for name, value in fields.items():
        got = store.query_series("temperature", name, S1)
        assert got[0] == SeriesValue(T0, value)
        assert type(got[0].value) is type(value)
    assert store.query_series("temperature", "ok", S1)[1] == SeriesValue(T0 + 1, False)


def test_range_start_is_inclusive_and_end_exclusive(store: TelemetryStore) -> None:
    store.write([pt(T0 + i, celsius=float(i)) for i in range(5)])
    got = store.query_series("temperature", "celsius", S1, start_ns=T0 + 1, end_ns=T0 + 3)
    assert got == [SeriesValue(T0 + 1, 1.0), SeriesValue(T0 + 2, 2.0)]
    assert len(store.query_series("temperature", "celsius", S1, start_ns=T0 + 4)) == 1
    assert len(store.query_series("temperature", "celsius", S1, end_ns=T0 + 4)) == 4


def test_results_are_time_ascending_and_limit_keeps_the_oldest(store: TelemetryStore) -> None:
    store.write([pt(T0 + i, celsius=float(i)) for i in (3, 1, 4, 0, 2)])
    got = store.query_series("temperature", "celsius", S1, limit=3)
    assert [v.time_ns - T0 for v in got] == [0, 1, 2]
    assert store.query_series("temperature", "celsius", S1, limit=0) == []


def test_rewrites_are_idempotent_and_merge_fields_like_influxdb(store: TelemetryStore) -> None:
    point = pt(T0, celsius=4.5, humidity=60.0)
    store.write([point])
    store.write([point, point])
    assert store.query_series("temperature", "celsius", S1) == [SeriesValue(T0, 4.5)]
    store.write([pt(T0, celsius=5.5, seq=9)])
    assert store.query_series("temperature", "celsius", S1) == [SeriesValue(T0, 5.5)]
    assert store.query_series("temperature", "humidity", S1) == [SeriesValue(T0, 60.0)]
    assert store.query_series("temperature", "seq", S1) == [SeriesValue(T0, 9)]


def test_points_without_the_field_are_skipped_before_limit(store: TelemetryStore) -> None:
    store.write([pt(T0, celsius=1.0), pt(T0 + 1, seq=1), pt(T0 + 2, celsius=2.0, humidity=50.0)])
    assert store.query_series("temperature", "humidity", S1) == [SeriesValue(T0 + 2, 50.0)]
    got = store.query_series("temperature", "celsius", S1, limit=2)
    assert got == [SeriesValue(T0, 1.0), SeriesValue(T0 + 2, 2.0)]


def test_tags_select_a_series_and_a_subset_merges_series_by_time(store: TelemetryStore) -> None:
    store.write([pt(T0, S1, celsius=1.0), pt(T0 + 1, S2, celsius=2.0), pt(T0 + 2, S3, celsius=3.0)])
    assert store.query_series("temperature", "celsius", S2) == [SeriesValue(T0 + 1, 2.0)]
    got = store.query_series("temperature", "celsius", {"station": "s1"})
    assert got == [SeriesValue(T0, 1.0), SeriesValue(T0 + 1, 2.0)]


def test_series_lists_each_distinct_tag_set_once(store: TelemetryStore) -> None:
    store.write([pt(T0 + i, tags, celsius=1.0) for i, tags in enumerate([S3, S1, S2, S1])])
    assert store.series("temperature") == [S1, S2, S3]


def test_last_gives_the_latest_value_per_group(store: TelemetryStore) -> None:
    status = {"station": "s1", "device": "d1"}
    other = {"station": "s2", "device": "d2"}
    store.write(
        [
            pt(T0, status, "device_status", state="online", boot=1),
            pt(T0 + 5, status, "device_status", state="offline", boot=1),
            pt(T0 + 9, status, "device_status", boot=2),  # no state: not a candidate
            pt(T0 + 3, other, "device_status", state="online", boot=4),
        ]
    )
    got = store.last("device_status", "state", ["station", "device"])
    assert got == [LastValue(status, T0 + 5, "offline"), LastValue(other, T0 + 3, "online")]
    assert store.last("device_status", "boot", []) == [LastValue({}, T0 + 9, 2)]
    assert store.last("device_status", "boot", ["station"])[1] == LastValue(
        {"station": "s2"}, T0 + 3, 4
    )


def test_the_latest_of_several_series_wins_in_a_group(store: TelemetryStore) -> None:
    store.write(
        [pt(T0 + 2, S1, celsius=1.0), pt(T0 + 7, S2, celsius=2.0), pt(T0 + 1, S3, celsius=3.0)]
    )
    got = store.last("temperature", "celsius", ["station"])
    assert got == [
        LastValue({"station": "s1"}, T0 + 7, 2.0),
        LastValue({"station": "s2"}, T0 + 1, 3.0),
    ]


def test_queries_on_nothing_are_empty(store: TelemetryStore) -> None:
    store.write([pt(T0, celsius=1.0)])
    assert store.query_series("nothing", "celsius", S1) == []
    assert store.query_series("temperature", "nothing", S1) == []
    assert store.query_series("temperature", "celsius", S2) == []
    assert store.query_series("temperature", "celsius", {"nothing": "x"}) == []
    assert store.query_series("temperature", "celsius", S1, start_ns=T0 + 1) == []
    assert store.query_series("temperature", "celsius", S1, start_ns=T0, end_ns=T0) == []
    assert store.series("nothing") == []
    assert store.last("nothing", "celsius", ["station"]) == []
    assert store.last("temperature", "nothing", ["station"]) == []
    store.write([])


@pytest.mark.parametrize(
    ("point", "rule"),
    [
        (pt(T0 + 1, celsius="warm"), "field type conflict"),
        (pt(T0 + 1, seq=1.5), "field type conflict"),
        (pt(T0 + 1, {"station": "s1"}, celsius=1.0), "tag set is fixed"),
        (pt(T0 + 1, {**S1, "zone": "a"}, celsius=1.0), "tag set is fixed"),
        (pt(T0 + 1, {"station": "s1", "device": "d1"}, probe="x"), "tag set is fixed"),
    ],
)
def test_schema_rules_reject_the_whole_batch(
    store: TelemetryStore, point: TelemetryPoint, rule: str
) -> None:
    """Rules of InfluxDB 3: types and tag sets are fixed once written, on every store."""
    store.write([pt(T0, celsius=1.0, seq=1)])
    with pytest.raises(StoreRejected, match=rule) as caught:
        store.write([pt(T0 + 2, celsius=2.0), point])
    assert "warm" not in str(caught.value)
    assert store.query_series("temperature", "celsius", S1) == [SeriesValue(T0, 1.0)]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.text(max_size=30),
    tag=st.text(
        st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="\\"),
        min_size=1,
        max_size=12,
    ),
)
def test_any_text_round_trips(store: TelemetryStore, text: str, tag: str) -> None:
    """Strings with quotes, commas, spaces, newlines; tag values with all but backslashes."""
    tags = {"station": "s1", "device": "d1", "probe": tag}
    store.write([pt(T0, tags, note=text)])
    assert store.query_series("temperature", "note", tags) == [SeriesValue(T0, text)]
    assert tags in store.series("temperature")


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: pt(T0, m="bad name", x=1), "invalid measurement"),
        (lambda: pt(T0, m="time", x=1), "invalid measurement"),
        (lambda: pt(T0, m="_internal", x=1), "invalid measurement"),
        (lambda: pt(T0), "at least one field"),
        (lambda: pt(T0, {"station": ""}, x=1), "non-empty text"),
        (lambda: pt(T0, {"station": "a\\"}, x=1), "backslashes"),
        (lambda: pt(T0, {"station": "a\nb"}, x=1), "control characters"),
        (lambda: pt(T0, {"x": "1"}, x=1), "both a tag and a field"),
        (lambda: pt(T0, x=float("nan")), "NaN and infinity"),
        (lambda: pt(T0, x=float("-inf")), "NaN and infinity"),
        (lambda: pt(T0, x=2**63), "64-bit"),
        (lambda: pt(T0, x=None), "unsupported field value type"),
        (lambda: pt(T0, x="x" * 70_000), "longer than"),
        (lambda: pt(True, x=1), "time_ns"),
        (lambda: pt(2**63, x=1), "time_ns"),
    ],
)
def test_points_that_no_store_could_keep_fail_at_construction(make: Any, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        make()


def test_a_store_must_be_opened(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="open"):
        SqliteTelemetryStore(tmp_path / "t.sqlite").write([pt(T0, x=1)])
    with pytest.raises(StoreError, match="open"):
        InfluxTelemetryStore(influx_config("http://127.0.0.1:9", "db")).series("m")


# --- downsampling -----------------------------------------------------------------------

MIN = 60 * 10**9
BASE = 28_333_320 * MIN  # a multiple of every period below (60 s, 300 s, 3600 s)


def _bucket_points() -> list[TelemetryPoint]:
    """Known values in known minutes; probe p2 of the same device adds to S1's buckets."""
    return [
        pt(BASE + 10 * 10**9, celsius=4.0),  # minute 0
        pt(BASE + 50 * 10**9, celsius=6.0),  # minute 0
        pt(BASE + MIN, celsius=5.0),  # minute 1, exactly at its start
        pt(BASE + 7 * MIN, celsius=9.0),  # minute 7 (second 5-minute period)
        pt(BASE + 61 * MIN, celsius=2.0),  # next hour
        pt(BASE + 30 * 10**9, S2, celsius=1.0),  # minute 0, probe p2
        pt(BASE + 2 * MIN, S3, celsius=100.0),  # another station: never in S1's buckets
        pt(BASE + 3 * MIN, celsius=7.0, state="x"),  # a point whose other field is text
    ]


@pytest.mark.parametrize(
    ("every_ns", "expected"),
    [
        (MIN, [(0, 5.0, 4.0, 6.0, 2), (1, 5.0, 5.0, 5.0, 1), (3, 7.0, 7.0, 7.0, 1),
               (7, 9.0, 9.0, 9.0, 1), (61, 2.0, 2.0, 2.0, 1)]),
        (5 * MIN, [(0, 5.5, 4.0, 7.0, 4), (5, 9.0, 9.0, 9.0, 1), (60, 2.0, 2.0, 2.0, 1)]),
        (60 * MIN, [(0, 31.0 / 5, 4.0, 9.0, 5), (60, 2.0, 2.0, 2.0, 1)]),
    ],
)  # fmt: skip
def test_buckets_hold_mean_min_max_and_count_per_aligned_period(
    store: TelemetryStore, every_ns: int, expected: list[tuple[int, float, float, float, int]]
) -> None:
    store.write(_bucket_points())
    buckets = store.query_buckets("temperature", "celsius", S1, BASE, BASE + 2 * 60 * MIN, every_ns)
    assert [((b.time_ns - BASE) // MIN, b.min, b.max, b.count) for b in buckets] == [
        (m, low, high, n) for m, _, low, high, n in expected
    ]
    assert all(math.isclose(b.mean, e[1]) for b, e in zip(buckets, expected, strict=True))


def test_buckets_take_every_matching_series_and_keep_the_range(store: TelemetryStore) -> None:
    store.write(_bucket_points())
    device = {"station": "s1", "device": "d1"}
    [first, *_] = store.query_buckets("temperature", "celsius", device, BASE, BASE + MIN, MIN)
    assert (first.min, first.count) == (1.0, 3)
    assert math.isclose(first.mean, 11.0 / 3)
    # start inclusive, end exclusive: the reading at BASE + 1 min is out of [BASE, BASE + 1 min)
    assert [b.count for b in store.query_buckets(
        "temperature", "celsius", S1, BASE + MIN, BASE + 7 * MIN, MIN
    )] == [1, 1]  # fmt: skip
    assert store.query_buckets("temperature", "celsius", S3 | {"probe": "nope"}, BASE,
                               BASE + MIN, MIN) == []  # fmt: skip
    assert store.query_buckets("nothing", "celsius", S1, BASE, BASE + MIN, MIN) == []


def test_buckets_of_a_text_field_are_empty(store: TelemetryStore) -> None:
    store.write(_bucket_points())
    assert store.query_buckets("temperature", "state", S1, BASE, BASE + 60 * MIN, MIN) == []


@pytest.mark.parametrize(
    ("start", "end", "every", "fragment"),
    [
        (BASE, BASE + MIN, 0, "whole number of seconds"),
        (BASE, BASE + MIN, 1_500_000_000, "whole number of seconds"),
        (BASE + MIN, BASE, MIN, "start before"),
        (BASE, BASE + 200_000 * MIN, MIN, "more than"),
    ],
)
def test_bad_bucket_queries_are_refused(
    store: TelemetryStore, start: int, end: int, every: int, fragment: str
) -> None:
    with pytest.raises(ValueError, match=fragment):
        store.query_buckets("temperature", "celsius", S1, start, end, every)


@pytest.mark.integration
def test_both_stores_give_the_same_buckets(tmp_path: Path, influxd: Any, influx_db: str) -> None:
    results = []
    for made in (sqlite(tmp_path / "t.sqlite"), influx(influxd.url, influx_db)):
        with made as store:
            store.write(_bucket_points())
            results.append(
                store.query_buckets(
                    "temperature", "celsius", {"station": "s1"}, BASE, BASE + 2 * 60 * MIN, 5 * MIN
                )
            )
    assert results[0] == results[1]
    assert len(results[0]) == 3
