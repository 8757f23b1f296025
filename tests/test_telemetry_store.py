"""The telemetry store contract, run against SQLite and a real InfluxDB 1.6.

What only one implementation has is in test_telemetry_sqlite.py and test_telemetry_influx.py.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.telemetry import (
    Bucket,
    FieldValue,
    InfluxStoreConfig,
    InvalidQuery,
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
from gateway.telemetry.model import MAX_BUCKETS
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


def test_a_point_survives_json_with_its_field_types() -> None:
    point = TelemetryPoint(
        "alert", {"station": "s1"}, {"n": 3, "x": 3.0, "ok": True, "s": "3"}, 1_700_000_000_000
    )
    again = TelemetryPoint.from_json(json.loads(json.dumps(point.to_json())))
    assert again == point
    assert [type(value) for value in again.fields.values()] == [int, float, bool, str]
    with pytest.raises(ValueError, match="not a telemetry point"):
        TelemetryPoint.from_json({"measurement": "alert", "tags": {}})
    with pytest.raises(ValueError, match="needs at least one field"):
        TelemetryPoint.from_json({**point.to_json(), "fields": {}})


def test_a_store_must_be_opened(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="open"):
        SqliteTelemetryStore(tmp_path / "t.sqlite").write([pt(T0, x=1)])
    with pytest.raises(StoreError, match="open"):
        InfluxTelemetryStore(influx_config("http://127.0.0.1:9", "db")).series("m")


# --- downsampling -----------------------------------------------------------------------

SEC = 10**9
MIN = 60 * SEC
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
    """Exact figures: the sums are exact in binary, so each mean is one and the same division."""
    store.write(_bucket_points())
    got = store.query_buckets("temperature", "celsius", S1, BASE, BASE + 2 * 60 * MIN, every_ns)
    assert got == [Bucket(BASE + m * MIN, mean, lo, hi, n) for m, mean, lo, hi, n in expected]


def test_periods_align_to_the_epoch_not_to_the_range_start(store: TelemetryStore) -> None:
    """As InfluxQL's GROUP BY time: a 7 s period starts at a multiple of 7 s, also before 1970."""
    k = (BASE // SEC + 6) // 7  # the first multiple of 7 s after BASE
    store.write(
        [
            pt(BASE, celsius=50.0),  # before the range
            pt(7 * k * SEC + SEC, celsius=1.0),
            pt(7 * k * SEC + 7 * SEC - 1, celsius=3.0),
            pt(7 * (k + 1) * SEC, celsius=10.0),
            pt(-SEC, celsius=-1.0),
            pt(-7 * SEC, celsius=-3.0),
        ]
    )
    got = store.query_buckets("temperature", "celsius", S1, 7 * k * SEC + SEC, BASE + MIN, 7 * SEC)
    assert got == [
        Bucket(7 * k * SEC, 2.0, 1.0, 3.0, 2),
        Bucket(7 * (k + 1) * SEC, 10.0, 10.0, 10.0, 1),
    ]
    got = store.query_buckets("temperature", "celsius", S1, -MIN, 0, 7 * SEC)
    assert got == [Bucket(-7 * SEC, -2.0, -3.0, -1.0, 2)]


def test_the_range_start_is_inclusive_and_its_end_exclusive(store: TelemetryStore) -> None:
    start, end = BASE + MIN, BASE + 3 * MIN
    store.write(
        [
            pt(start - 1, celsius=100.0),
            pt(start, celsius=1.0),
            pt(end - 1, celsius=2.0),
            pt(end, celsius=100.0),
        ]
    )
    got = store.query_buckets("temperature", "celsius", S1, start, end, MIN)
    assert got == [Bucket(start, 1.0, 1.0, 1.0, 1), Bucket(start + MIN, 2.0, 2.0, 2.0, 1)]


def test_buckets_take_every_matching_series_and_only_those(store: TelemetryStore) -> None:
    store.write(_bucket_points())
    device = {"station": "s1", "device": "d1"}
    got = store.query_buckets("temperature", "celsius", device, BASE, BASE + MIN, MIN)
    assert got == [Bucket(BASE, 11.0 / 3, 1.0, 6.0, 3)]  # S1's 4.0 and 6.0, S2's 1.0
    got = store.query_buckets(
        "temperature", "celsius", {"station": "s2"}, BASE, BASE + MIN * 60, MIN
    )
    assert got == [Bucket(BASE + 2 * MIN, 100.0, 100.0, 100.0, 1)]
    assert (
        store.query_buckets("temperature", "celsius", {}, BASE, BASE + MIN * 3, MIN)[2].count == 1
    )
    for tags in (S3 | {"probe": "nope"}, {"nothing": "x"}):
        assert store.query_buckets("temperature", "celsius", tags, BASE, BASE + MIN, MIN) == []
    assert store.query_buckets("nothing", "celsius", S1, BASE, BASE + MIN, MIN) == []
    assert store.query_buckets("temperature", "nothing", S1, BASE, BASE + MIN, MIN) == []


def test_only_numbers_count(store: TelemetryStore) -> None:
    """Text and boolean fields have no buckets (SQLite would read true as 1); integers do."""
    store.write(
        [
            pt(BASE, celsius=1.0, seq=1, state="x", ok=True),
            pt(BASE + SEC, seq=2, ok=False),
            pt(BASE + 2 * SEC, humidity=40.0, seq=4),  # no celsius: not counted
        ]
    )
    for name in ("state", "ok"):
        assert store.query_buckets("temperature", name, S1, BASE, BASE + MIN, MIN) == []
    assert store.query_buckets("temperature", "celsius", S1, BASE, BASE + MIN, MIN) == [
        Bucket(BASE, 1.0, 1.0, 1.0, 1)
    ]
    [seq] = store.query_buckets("temperature", "seq", S1, BASE, BASE + MIN, MIN)
    assert seq == Bucket(BASE, 7 / 3, 1.0, 4.0, 3)
    assert (type(seq.mean), type(seq.min), type(seq.max)) == (float, float, float)


@pytest.mark.parametrize(
    ("start", "end", "every", "fragment"),
    [
        (BASE, BASE + MIN, 0, "whole number of seconds"),
        (BASE, BASE + MIN, -MIN, "whole number of seconds"),
        (BASE, BASE + MIN, SEC // 2, "whole number of seconds"),
        (BASE, BASE + MIN, 1_500_000_000, "whole number of seconds"),
        (BASE, BASE + MIN, 2**63, "whole number of seconds"),
        (BASE, BASE + MIN, 60.0, "every_ns must be an int"),
        (BASE, BASE + MIN, True, "every_ns must be an int"),
        (float(BASE), BASE + MIN, MIN, "start_ns must be an int"),
        (BASE + MIN, BASE, MIN, "start before"),
        (BASE, BASE, MIN, "start before"),
        (BASE, BASE + (MAX_BUCKETS * SEC) + 1, SEC, "more than 100000 periods"),
        (BASE + SEC // 2, BASE + (MAX_BUCKETS + 1) * SEC, SEC, "more than 100000 periods"),
    ],
)
def test_bad_bucket_queries_are_refused(
    store: TelemetryStore, start: Any, end: int, every: Any, fragment: str
) -> None:
    with pytest.raises(InvalidQuery, match=fragment) as caught:
        store.query_buckets("temperature", "celsius", S1, start, end, every)
    assert isinstance(caught.value, ValueError)  # the API's 422
    assert isinstance(caught.value, StoreError)


def test_bucket_queries_name_only_valid_names_and_span_up_to_the_limit(
    store: TelemetryStore,
) -> None:
    store.write([pt(BASE, celsius=1.0), pt(BASE + (MAX_BUCKETS - 1) * SEC, celsius=2.0)])
    got = store.query_buckets("temperature", "celsius", S1, BASE, BASE + MAX_BUCKETS * SEC, SEC)
    assert [b.mean for b in got] == [1.0, 2.0]
    for bad in [("bad name", "celsius", S1), ("temperature", "time", S1)]:
        with pytest.raises(InvalidQuery, match="invalid"):
            store.query_buckets(*bad, BASE, BASE + MIN, MIN)
    with pytest.raises(InvalidQuery, match="invalid tag key"):
        store.query_buckets("temperature", "celsius", {"bad key": "x"}, BASE, BASE + MIN, MIN)


def _random_points(seed: int) -> list[TelemetryPoint]:
    """Three series over three hours; values in quarters, so every sum is exact."""
    rng = random.Random(seed)
    points = {}
    for _ in range(400):
        tags = rng.choice([S1, S2, S3])
        time_ns = BASE - 10 * MIN + rng.randrange(200 * MIN)
        fields: dict[str, FieldValue] = {"seq": rng.randrange(-1000, 1000)}
        if rng.random() < 0.9:
            fields["celsius"] = rng.randrange(-80, 160) / 4
        points[(tags["probe"], tags["station"], time_ns)] = TelemetryPoint(
            "temperature", tags, fields, time_ns
        )
    return list(points.values())


def _reference_buckets(
    points: list[TelemetryPoint], field: str, tags: dict[str, str], start: int, end: int, every: int
) -> list[Bucket]:
    """``query_buckets`` in plain Python: what both stores must answer."""
    periods: dict[int, list[float]] = {}
    for point in points:
        value = point.fields.get(field)
        if (
            value is not None
            and start <= point.time_ns < end
            and tags.items() <= point.tags.items()
        ):
            periods.setdefault(point.time_ns // every, []).append(float(value))
    return [
        Bucket(k * every, sum(v) / len(v), min(v), max(v), len(v))
        for k, v in sorted(periods.items())
    ]


@pytest.mark.integration
def test_both_stores_give_the_same_buckets(tmp_path: Path, influxd: Any, influx_db: str) -> None:
    """The same points, in several series, give the same buckets on SQLite and InfluxDB."""
    points = _random_points(seed=23)
    start, end = BASE - 7 * MIN - 13 * SEC, BASE + 185 * MIN
    queries = [
        (field, tags, every)
        for field in ("celsius", "seq")
        for tags in ({"station": "s1"}, S1, S3, {})
        for every in (MIN, 5 * MIN, 60 * MIN)
    ]
    results = []
    for made in (sqlite(tmp_path / "t.sqlite"), influx(influxd.url, influx_db)):
        with made as store:
            store.write(points)
            results.append(
                [store.query_buckets("temperature", f, t, start, end, e) for f, t, e in queries]
            )
    assert results[0] == results[1]
    expected = [_reference_buckets(points, f, t, start, end, e) for f, t, e in queries]
    assert results[0] == expected
    assert all(expected)
