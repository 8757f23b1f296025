"""Converters from envelopes to points: health, events and command results, and their time rule."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from contracts import (
    AnyBody,
    AnyEnvelope,
    CommandResultBody,
    DivertBody,
    DoorBody,
    HealthBody,
    InductionBody,
    ScanBody,
    XrayBody,
    make_envelope,
)
from contracts.alerts import AlertMessage
from gateway.convert import (
    AGENT_HEALTH,
    COMMAND_RESULT,
    EVENT,
    UnsupportedKind,
    alert_point,
    command_result_point,
    event_point,
    health_point,
    to_points,
)
from gateway.telemetry import InfluxStoreConfig, TelemetryPoint, TelemetryStore
from gateway.telemetry.influx import InfluxTelemetryStore
from gateway.telemetry.sqlite import SqliteTelemetryStore
from postedge.localservers import Influxd

TS = datetime(2026, 11, 25, 8, 0, 0, 123_000, tzinfo=UTC)
TS_NS = int(datetime(2026, 11, 25, 8, 0, tzinfo=UTC).timestamp()) * 10**9 + 123 * 10**6
TAGS = {"station": "st1", "device": "dev1"}


def envelope(body: AnyBody, seq: int = 7, ts: datetime = TS) -> AnyEnvelope:
    return make_envelope(station="st1", device="dev1", boot=2, seq=seq, ts=ts, body=body)


def health(**overrides: Any) -> HealthBody:
    fields: dict[str, Any] = {
        "uptime_s": 3600,
        "cpu_percent": 12.5,
        "rss_bytes": 50_000_000,
        "disk_free_bytes": 8_000_000_000,
        "outbox_depth": 3,
        "outbox_bytes": 1200,
        "oldest_unconfirmed_s": 4.5,
        "thinned": 11,
        "links": {"probe-bus": "up", "scanner": "down", "lockboard": "up"},
        "warnings": ["disk nearly full", "clock jumped"],
    }
    fields.update(overrides)
    return HealthBody.model_validate(fields)


def test_health_becomes_one_agent_health_point_at_the_device_time() -> None:
    point = health_point(envelope(health()))  # type: ignore[arg-type]
    assert point.measurement == AGENT_HEALTH
    assert dict(point.tags) == TAGS
    assert point.time_ns == TS_NS
    assert dict(point.fields) == {
        "uptime_s": 3600.0,
        "cpu_percent": 12.5,
        "rss_bytes": 50_000_000,
        "disk_free_bytes": 8_000_000_000,
        "outbox_depth": 3,
        "outbox_bytes": 1200,
        "oldest_unconfirmed_s": 4.5,
        "thinned": 11,
        "links_up": 2,
        "links_down": 1,
        "links": '{"lockboard":"up","probe-bus":"up","scanner":"down"}',
        "warnings": "disk nearly full; clock jumped",
        "seq": 7,
        "msg_id": "dev1:2:7",
    }
    assert isinstance(point.fields["uptime_s"], float)  # an int on the wire stays a float field


def test_health_leaves_out_absent_optional_fields() -> None:
    body = health(oldest_unconfirmed_s=None, warnings=[], links={})
    fields = health_point(envelope(body)).fields  # type: ignore[arg-type]
    assert "oldest_unconfirmed_s" not in fields
    assert "warnings" not in fields
    assert (fields["links"], fields["links_up"], fields["links_down"]) == ("{}", 0, 0)


EVENTS = [
    ScanBody(reader="scanner-1", code="SF1234567890123", symbology="code128"),
    DoorBody(board=1, lock=24, door="closed", cause="command"),
    InductionBody(transaction=4_000_000_000, barcode="YT9876543210"),
    DivertBody(transaction=7, chute=12, outcome="recirculated"),
    XrayBody(
        waybill="SF1234567890", verdict="PASS", operator="op-7", image="i/1.jpg", scanned_at=TS
    ),
]


@pytest.mark.parametrize("body", EVENTS, ids=lambda body: type(body).__name__)
def test_an_event_keeps_its_body_as_compact_json_tagged_by_kind(body: AnyBody) -> None:
    message = envelope(body, seq=1_000_042)
    [point] = to_points(message)
    assert point.measurement == EVENT
    assert dict(point.tags) == {**TAGS, "kind": message.kind}
    assert set(point.fields) == {"body", "seq", "msg_id"}
    text = point.fields["body"]
    assert text == body.model_dump_json(exclude_none=True)  # compact, as on the wire
    assert type(body).model_validate_json(text) == body  # nothing lost
    assert point.time_ns == TS_NS + 42  # seq % 1_000_000 in the sub-millisecond digits


def test_events_of_one_device_in_one_millisecond_get_distinct_times() -> None:
    first, second = (event_point(envelope(EVENTS[0], seq=seq)) for seq in (999_999, 1_000_000))  # type: ignore[arg-type]
    assert first.time_ns != second.time_ns
    assert {first.time_ns, second.time_ns} == {TS_NS + 999_999, TS_NS}


def test_a_redelivered_event_lands_on_the_same_point() -> None:
    assert to_points(envelope(EVENTS[1], seq=5)) == to_points(envelope(EVENTS[1], seq=5))


def test_a_successful_command_result() -> None:
    body = CommandResultBody(
        command_id="c-1", command="query_slots", ok=True, result={"slots": [1, 2], "board": 1}
    )
    point = command_result_point(envelope(body, seq=3))  # type: ignore[arg-type]
    assert (point.measurement, dict(point.tags)) == (COMMAND_RESULT, TAGS)
    assert dict(point.fields) == {
        "command_id": "c-1",
        "command": "query_slots",
        "ok": True,
        "result": '{"board":1,"slots":[1,2]}',
        "replayed": False,
        "seq": 3,
        "msg_id": "dev1:2:3",
    }
    assert point.time_ns == TS_NS + 3


def test_a_failed_command_result_without_a_readable_command() -> None:
    body = CommandResultBody(
        command_id=None, ok=False, error="not a command", reason="malformed", replayed=True
    )
    fields = command_result_point(envelope(body)).fields  # type: ignore[arg-type]
    assert (fields["command_id"], fields["command"]) == ("", "")
    assert (fields["ok"], fields["error"], fields["reason"]) == (
        False,
        "not a command",
        "malformed",
    )
    assert (fields["result"], fields["replayed"]) == ("{}", True)


def test_a_kind_without_a_converter_is_unsupported() -> None:
    """Every contract kind has a converter now, so the test brings a kind of its own."""

    class FutureEnvelope:
        kind = "future"

    with pytest.raises(UnsupportedKind) as caught:
        to_points(cast(AnyEnvelope, FutureEnvelope()))
    assert caught.value.reason == "unsupported"


# --- through the stores -------------------------------------------------------------


def every_kind() -> list[AnyEnvelope]:
    bodies: list[AnyBody] = [
        health(),
        health(oldest_unconfirmed_s=None, warnings=[]),
        *EVENTS,
        CommandResultBody(command_id="c-1", command="open_slot", ok=True, result={"lock": 3}),
        CommandResultBody(command_id=None, ok=False, error="bad", reason="unknown_command"),
    ]
    # All in one millisecond: only the time rule keeps events and results apart. Health
    # reports are a minute apart, as agents send them; they share the device time rule.
    return [
        envelope(body, seq=seq, ts=TS - timedelta(minutes=seq) if seq <= 2 else TS)
        for seq, body in enumerate(bodies, start=1)
    ]


def points_of(messages: list[AnyEnvelope]) -> list[TelemetryPoint]:
    return [point for message in messages for point in to_points(message)]


def test_every_kind_round_trips_through_the_sqlite_store(tmp_path: Path) -> None:
    path = tmp_path / "telemetry.sqlite"
    store = SqliteTelemetryStore(path)
    store.open()
    try:
        store.write(points_of(every_kind()))
        store.write(points_of(every_kind()))  # a redelivery overwrites, adds nothing
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT s.measurement, s.tags, p.time_ns, p.fields FROM points AS p "
            "JOIN series AS s ON s.id = p.series_id ORDER BY json_extract(p.fields, '$.seq')"
        ).fetchall()
    conn.close()
    expected = points_of(every_kind())
    assert len(rows) == len(expected)
    for (measurement, tags, time_ns, fields), point in zip(rows, expected, strict=True):
        assert (measurement, json.loads(tags), time_ns) == (
            point.measurement,
            dict(point.tags),
            point.time_ns,
        )
        assert json.loads(fields) == dict(point.fields)


@pytest.fixture
def influx_store(influxd: Influxd, influx_db: str) -> Iterator[TelemetryStore]:
    store = InfluxTelemetryStore(
        InfluxStoreConfig(kind="influxdb", url=influxd.url, database=influx_db)
    )
    store.open()
    yield store
    store.close()


@pytest.mark.integration
def test_every_kind_round_trips_through_influxdb(influx_store: TelemetryStore) -> None:
    """The schema holds on InfluxDB too: tag sets, field types, no tag named like a field."""
    influx_store.write(points_of(every_kind()))
    assert influx_store.series(EVENT) == [
        {**TAGS, "kind": kind} for kind in sorted(message.kind for message in every_kind()[2:7])
    ]
    bodies = influx_store.query_series(EVENT, "body", {**TAGS, "kind": "scan"})
    assert [(v.time_ns, v.value) for v in bodies] == [
        (TS_NS + 3, EVENTS[0].model_dump_json(exclude_none=True))
    ]
    ok = influx_store.query_series(COMMAND_RESULT, "ok", TAGS)
    assert [(v.time_ns, v.value) for v in ok] == [(TS_NS + 8, True), (TS_NS + 9, False)]
    warnings = influx_store.query_series(AGENT_HEALTH, "warnings", TAGS)
    assert [v.value for v in warnings] == ["disk nearly full; clock jumped"]
    depth = influx_store.last(AGENT_HEALTH, "outbox_depth", ["station", "device"])
    assert [(dict(v.tags), v.value) for v in depth] == [(TAGS, 3)]


def test_an_acceptance_is_stored_without_the_senders_identity() -> None:
    """Personal data never reaches the telemetry store: name, number, authority, phone."""
    import datetime as dt

    from contracts import AcceptanceBody, IdentityRead, Inspection

    sender = IdentityRead(
        name="张三丰",
        id_type="resident",
        id_number="11010519491231002X",
        authority="北京市公安局西城分局",
        valid_from=dt.date(2020, 1, 1),
    )
    body = AcceptanceBody(
        waybill="YT1234567",
        destination="410523000000",
        sender=sender,
        sender_phone="13800138000",
        inspection=Inspection(inspected=True, declared_contents="tea"),
        clerk="clerk-7",
    )
    envelope = make_envelope(station="st", device="counter", boot=1, seq=3, ts=TS, body=body)
    (point,) = to_points(envelope)
    stored = repr(point)
    for secret in ("张三丰", "11010519491231002X", "北京市公安局", "13800138000", "1949"):
        assert secret not in stored
    assert json.loads(str(point.fields["body"]))["waybill"] == "YT1234567"
    assert point.tags["kind"] == "acceptance"


def test_simultaneous_alert_changes_get_their_own_points() -> None:
    """Alert changes at one instant (a tick raising many offline alerts) do not overwrite
    each other; the same change written twice lands on the same point."""
    at = datetime(2026, 11, 25, 8, 0, 0, 123456, tzinfo=UTC)

    def alert(number: int) -> AlertMessage:
        return AlertMessage(
            id=f"alert:{number}",
            station="village-23",
            kind="probe_offline",
            severity="warning",
            subject="medbox/medicine",
            raised_at=at,
            details={"silent_s": 900.0, "change": "raise"},
        )

    first, second = alert_point(alert(7), "raise", at), alert_point(alert(8), "raise", at)
    assert first.time_ns != second.time_ns
    assert first.time_ns // 1000 == second.time_ns // 1000 == 1_795_593_600_123_456
    assert alert_point(alert(7), "raise", at) == first
    assert first.fields["details"] == '{"change":"raise","silent_s":900.0}'
    assert dict(first.tags) == {"station": "village-23", "kind": "probe_offline"}
