"""Contract tests of the wire format: topics, ids, envelopes and the JSON codec."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import (
    MAX_PAYLOAD_BYTES,
    AlertsTopic,
    Channel,
    ContractError,
    DeadLetterTopic,
    DeviceTopic,
    InvalidId,
    InvalidTopic,
    MalformedPayload,
    PayloadTooLarge,
    SchemaViolation,
    StatusBody,
    StatusEnvelope,
    TemperatureBody,
    TemperatureEnvelope,
    decode,
    device_filter,
    encode,
    make_envelope,
    shared,
    validate_id,
)
from contracts.timestamps import format_utc_ms, from_epoch_ms, to_epoch_ms

TS = datetime(2026, 11, 25, 7, 8, 9, 123000, tzinfo=UTC)


def temperature(**overrides: object) -> dict[str, object]:
    message: dict[str, object] = {
        "schema": 1,
        "id": "cold-1:3:42",
        "station": "village-23",
        "device": "cold-1",
        "ts": "2026-11-25T07:08:09.123Z",
        "seq": 42,
        "kind": "temperature",
        "body": {"probe": "fridge", "celsius": 4.5, "humidity": 61.0},
    }
    message.update(overrides)
    return message


def raw(message: dict[str, object]) -> bytes:
    return json.dumps(message).encode()


# --- ids and topics -------------------------------------------------------------------


@pytest.mark.parametrize("good", ["a", "A-1_b", "x" * 64, "village-23", "_"])
def test_valid_ids_pass(good: str) -> None:
    assert validate_id(good) == good


@pytest.mark.parametrize(
    "bad", ["", "x" * 65, "a b", "a/b", "a+b", "#", "站点", "a.b", "a:b", "a\n"]
)
def test_invalid_ids_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidId):
        validate_id(bad)


@pytest.mark.parametrize("channel", list(Channel))
def test_device_topic_round_trip(channel: Channel) -> None:
    topic = DeviceTopic("village-23", "cold-1", channel)
    assert str(topic) == f"postedge/v1/village-23/cold-1/{channel.value}"
    assert DeviceTopic.parse(str(topic)) == topic


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "postedge/v1/s/d",
        "postedge/v2/s/d/telemetry",
        "other/v1/s/d/telemetry",
        "postedge/v1/s/d/unknown",
        "postedge/v1/s/d/cmd/other",
        "postedge/v1/s b/d/telemetry",
        "postedge/v1/s/+/telemetry",
        "postedge/v1//d/telemetry",
        "postedge/v1/s/d/telemetry/extra",
        f"postedge/v1/{'s' * 65}/d/telemetry",
    ],
)
def test_bad_topics_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidTopic):
        DeviceTopic.parse(bad)


def test_other_topic_shapes() -> None:
    assert str(AlertsTopic("village-23")) == "postedge/v1/village-23/_alerts"
    assert str(DeadLetterTopic("schema")) == "postedge/v1/_deadletter/schema"
    assert device_filter(Channel.TELEMETRY) == "postedge/v1/+/+/telemetry"
    assert shared(device_filter(Channel.STATUS)) == "$share/gateway/postedge/v1/+/+/status"
    with pytest.raises(InvalidTopic):
        AlertsTopic("bad station")
    with pytest.raises(InvalidId):
        device_filter(Channel.CMD, station="a/b")


def test_topic_errors_are_contract_errors_and_value_errors() -> None:
    with pytest.raises(ValueError, match="channel"):
        DeviceTopic.parse("postedge/v1/s/d/nope")
    assert issubclass(InvalidTopic, ContractError)


# --- envelopes --------------------------------------------------------------------------


def test_decode_gives_typed_envelope() -> None:
    envelope = decode(raw(temperature()))
    assert isinstance(envelope, TemperatureEnvelope)
    assert envelope.ts == TS
    assert envelope.boot == 3
    assert envelope.body == TemperatureBody(probe="fridge", celsius=4.5, humidity=61.0)
    assert envelope.message_channel is Channel.TELEMETRY


def test_status_envelope_travels_on_status_channel() -> None:
    envelope = make_envelope(
        station="s",
        device="d",
        boot=2,
        seq=0,
        ts=TS,
        body=StatusBody(state="online", boot=2, version="0.1.0"),
    )
    assert isinstance(envelope, StatusEnvelope)
    assert envelope.message_channel is Channel.STATUS
    assert decode(encode(envelope)) == envelope


def test_encode_is_compact_json_with_wire_names() -> None:
    envelope = make_envelope(
        station="s",
        device="d",
        boot=1,
        seq=5,
        ts=TS,
        body=TemperatureBody(probe="p", celsius=-18.25),
    )
    assert json.loads(encode(envelope)) == {
        "schema": 1,
        "id": "d:1:5",
        "station": "s",
        "device": "d",
        "ts": "2026-11-25T07:08:09.123Z",
        "seq": 5,
        "kind": "temperature",
        "body": {"probe": "p", "celsius": -18.25},
    }


def test_integer_celsius_is_accepted_as_number() -> None:
    envelope = decode(raw(temperature(body={"probe": "p", "celsius": 4})))
    assert isinstance(envelope, TemperatureEnvelope)
    assert envelope.body.celsius == 4.0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ts", "2026-11-25T07:08:09.123"),  # naive
        ("ts", "2026-11-25T15:08:09.123+08:00"),  # not UTC
        ("ts", "yesterday"),
        ("ts", 1764054489123),  # a number is not a timestamp on the wire
        ("seq", "42"),
        ("seq", -1),
        ("seq", 4.2),
        ("station", "bad station"),
        ("device", ""),
        ("schema", 2),
        ("id", "cold-1:3"),
        ("id", "other:3:42"),  # names another device
        ("id", "cold-1:3:43"),  # names another seq
        ("id", "cold-1:0:42"),  # boots count from 1
        ("kind", "xray"),
        ("body", {"probe": "p", "celsius": "4.5"}),
        ("body", {"probe": "p", "celsius": None}),
        ("body", {"probe": "p", "celsius": -300.0}),
        ("body", {"probe": "p", "celsius": 4.5, "humidity": 101}),
        ("body", {"probe": "p"}),
        ("body", {"probe": "p", "celsius": 4.5, "colour": "blue"}),
        ("body", {"state": "online", "boot": 1, "version": "1"}),  # a status body
        ("body", []),
    ],
)
def test_schema_violations_are_rejected(field: str, value: object) -> None:
    with pytest.raises(SchemaViolation) as caught:
        decode(raw(temperature(**{field: value})))
    assert caught.value.reason == "schema"


def test_unknown_envelope_field_is_rejected() -> None:
    with pytest.raises(SchemaViolation, match="priority: Extra inputs"):
        decode(raw({**temperature(), "priority": "high"}))


def test_missing_envelope_field_is_rejected() -> None:
    message = temperature()
    del message["ts"]
    with pytest.raises(SchemaViolation, match="ts"):
        decode(raw(message))


@pytest.mark.parametrize(
    "payload", [b"", b"{", b"not json", b"\xff\xfe{}", b'{"a": NaN}', b"[1,2", b"\x00"]
)
def test_malformed_payloads_are_rejected(payload: bytes) -> None:
    with pytest.raises((MalformedPayload, SchemaViolation)) as caught:
        decode(payload)
    assert caught.value.reason in ("malformed", "schema")


@pytest.mark.parametrize("payload", [b"", b"{", b"not json", b"\xff\xfe{}"])
def test_non_json_is_malformed(payload: bytes) -> None:
    with pytest.raises(MalformedPayload):
        decode(payload)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_rejected(value: str) -> None:
    payload = raw(temperature()).replace(b"4.5", value.encode())
    with pytest.raises(ContractError):
        decode(payload)


def test_size_limit_is_enforced_before_parsing() -> None:
    padding = "x" * MAX_PAYLOAD_BYTES
    payload = raw(temperature(body={"probe": "p", "celsius": 1.0, "pad": padding}))
    with pytest.raises(PayloadTooLarge) as caught:
        decode(payload)
    assert caught.value.reason == "oversize"
    assert "limit" in str(caught.value)


def test_payload_at_the_limit_is_parsed() -> None:
    base = raw(temperature())
    payload = base[:-1] + b" " * (MAX_PAYLOAD_BYTES - len(base)) + b"}"
    assert len(payload) == MAX_PAYLOAD_BYTES
    assert isinstance(decode(payload), TemperatureEnvelope)


def test_encode_refuses_oversize() -> None:
    envelope = make_envelope(
        station="s",
        device="d",
        boot=1,
        seq=1,
        ts=TS,
        body=StatusBody(state="online", boot=1, version="v" * 64),
    )
    assert len(encode(envelope)) < MAX_PAYLOAD_BYTES


def test_errors_never_quote_the_payload() -> None:
    secret = "110101199003074514"
    message = temperature(body={"probe": "p", "celsius": secret})
    with pytest.raises(SchemaViolation) as caught:
        decode(raw(message))
    assert secret not in str(caught.value)
    with pytest.raises(SchemaViolation) as caught:
        decode(raw({**temperature(), "name": secret}))
    assert secret not in str(caught.value)


def test_timestamps_are_normalised_to_milliseconds() -> None:
    envelope = make_envelope(
        station="s",
        device="d",
        boot=1,
        seq=1,
        ts=datetime(2026, 1, 1, 0, 0, 0, 123999, tzinfo=UTC),
        body=TemperatureBody(probe="p", celsius=1.0),
    )
    assert envelope.ts.microsecond == 123000
    assert b'"2026-01-01T00:00:00.123Z"' in encode(envelope)


def test_make_envelope_rejects_non_utc_time() -> None:
    with pytest.raises(ValueError, match="UTC"):
        make_envelope(
            station="s",
            device="d",
            boot=1,
            seq=1,
            ts=datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=8))),
            body=TemperatureBody(probe="p", celsius=1.0),
        )


# --- properties -----------------------------------------------------------------------

ids = st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z")
instants = st.integers(min_value=0, max_value=4_102_444_800_000).map(from_epoch_ms)
celsius = st.floats(min_value=-273.15, max_value=1e6, allow_nan=False, allow_infinity=False)
humidity = st.none() | st.floats(min_value=0, max_value=100, allow_nan=False)


@given(
    station=ids,
    device=ids,
    probe=ids,
    boot=st.integers(1, 10**9),
    seq=st.integers(0, 10**15),
    ts=instants,
    c=celsius,
    h=humidity,
)
def test_temperature_round_trip(
    station: str,
    device: str,
    probe: str,
    boot: int,
    seq: int,
    ts: datetime,
    c: float,
    h: float | None,
) -> None:
    envelope = make_envelope(
        station=station,
        device=device,
        boot=boot,
        seq=seq,
        ts=ts,
        body=TemperatureBody(probe=probe, celsius=c, humidity=h),
    )
    assert decode(encode(envelope)) == envelope


@given(ts=instants)
def test_timestamp_format_round_trip(ts: datetime) -> None:
    assert from_epoch_ms(to_epoch_ms(ts)) == ts
    text = format_utc_ms(ts)
    assert text.endswith("Z")
    assert len(text) == 24
    assert datetime.fromisoformat(text) == ts


@given(payload=st.binary(max_size=512))
def test_decode_never_raises_anything_but_contract_errors(payload: bytes) -> None:
    with contextlib.suppress(ContractError):
        decode(payload)


@given(topic=st.text(max_size=120))
def test_topic_parse_never_raises_anything_but_invalid_topic(topic: str) -> None:
    with contextlib.suppress(InvalidTopic):
        DeviceTopic.parse(topic)
