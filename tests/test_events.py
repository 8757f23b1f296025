"""Device event bodies: envelope kinds on the event channel; identity reads keep their secrets."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from contracts import (
    Channel,
    DivertBody,
    DoorBody,
    IdentityRead,
    InductionBody,
    ScanBody,
    XrayBody,
    decode,
    encode,
    make_envelope,
)

TS = dt.datetime(2026, 11, 25, 8, 0, tzinfo=dt.UTC)

BODIES = [
    ScanBody(reader="scanner-1", code="SF1234567890123", symbology="code128"),
    DoorBody(board=1, lock=24, door="closed", occupied=True, cause="command"),
    InductionBody(transaction=4_000_000_000, barcode="YT9876543210"),
    InductionBody(transaction=7, scan_slot=3),
    DivertBody(transaction=7, chute=12, outcome="recirculated"),
    XrayBody(
        waybill="SF1234567890",
        verdict="SUSPECT",
        operator="op-7",
        image="img/2026/1.jpg",
        scanned_at=TS,
    ),
]


@pytest.mark.parametrize("body", BODIES, ids=lambda b: type(b).__name__)
def test_event_bodies_travel_on_the_event_channel_and_round_trip(body: object) -> None:
    envelope = make_envelope(station="s", device="d", boot=1, seq=1, ts=TS, body=body)  # type: ignore[arg-type]
    assert envelope.message_channel is Channel.EVENT
    assert decode(encode(envelope)) == envelope


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: ScanBody(reader="r", code="with\ttab"), "code"),
        (lambda: ScanBody(reader="r", code=""), "code"),
        (lambda: DoorBody(board=1, lock=25, door="open", cause="poll"), "lock"),
        (lambda: InductionBody(transaction=1), "barcode or a scan slot"),
        (lambda: DivertBody(transaction=1, chute=1, outcome="lost"), "outcome"),
        (
            lambda: XrayBody(
                waybill="SF 1", verdict="PASS", operator="o", image="i", scanned_at=TS
            ),
            "waybill",
        ),
    ],
)
def test_invalid_event_bodies_are_refused(make: object, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        make()  # type: ignore[operator]


def identity(**overrides: object) -> IdentityRead:
    fields: dict[str, object] = {
        "name": "张三",
        "id_type": "resident",
        "id_number": "11010519491231002X",
        "authority": "北京市公安局西城分局",
        "valid_from": dt.date(2020, 1, 1),
        "valid_until": None,
    }
    fields.update(overrides)
    return IdentityRead.model_validate(fields)


def test_identity_read_never_shows_personal_data() -> None:
    read = identity()
    for text in (repr(read), str(read)):
        assert "张三" not in text
        assert "11010519491231002X" not in text
        assert "西城" not in text


def test_identity_validation_errors_do_not_quote_the_input() -> None:
    with pytest.raises(ValidationError) as caught:
        identity(id_number="1101 0519491231002X")
    assert "1101 0519491231002X" not in str(caught.value)
    with pytest.raises(ValidationError, match="valid_until is before valid_from"):
        identity(valid_until=dt.date(2019, 1, 1))


def test_identity_is_not_an_envelope_kind() -> None:
    with pytest.raises(KeyError):
        make_envelope(station="s", device="d", boot=1, seq=1, ts=TS, body=identity())  # type: ignore[arg-type]
