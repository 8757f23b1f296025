"""Pure tests of the X-ray machine's XR1 codec, its simulator's data and scenario files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import XrayBody
from contracts.configfile import ConfigFileError
from firmware_bridge.codec import Decoded, FrameStream
from firmware_bridge.sim.faults import LineFaults
from firmware_bridge.sim.xray import DEFAULT_SCENARIO, SimRecord, XrayScenario, corrupt_line
from firmware_bridge.sim.xray_cli import load_scenario
from firmware_bridge.xray.codec import (
    MAX_LINE,
    Ack,
    Heartbeat,
    XrayFrame,
    XrayRecord,
    crc16,
    decode,
    encode,
)
from firmware_bridge.xray.driver import XrayMachine

EXAMPLE_SCENARIO = Path(__file__).parent.parent / "firmware_bridge/sim/scenarios/xray.toml"
TIME = datetime(2026, 11, 25, 8, 0, 0, 123000, tzinfo=UTC)
BODY = XrayBody(
    waybill="SF1234567890",
    verdict="SUSPECT",
    operator="op-07",
    image="img/2026/11/25/SF1234567890.png",
    scanned_at=TIME,
)

# The examples of docs/devices/xray.md.
EXAMPLES: dict[str, tuple[XrayFrame, bytes]] = {
    "record": (
        XrayRecord(3, 17, BODY),
        b"XR1|3|17|SF1234567890|SUSPECT|op-07|img/2026/11/25/SF1234567890.png|"
        b"2026-11-25T08:00:00.123Z|FCC4\r\n",
    ),
    "heartbeat": (Heartbeat(3), b"XR1|3|HB|5939\r\n"),
    "ack": (Ack(3, 17), b"XR1|3|ACK|17|04E5\r\n"),
}


def frames(stream: FrameStream[XrayFrame], *chunks: bytes) -> list[Decoded[XrayFrame]]:
    return [result for chunk in chunks for result in stream.feed(chunk)]


def line(*fields: str) -> bytes:
    """A line with a correct CRC around any fields, to reach the checks behind the CRC."""
    head = "|".join(("XR1", *fields, "")).encode("latin-1")
    return head + b"%04X\r\n" % crc16(head)


# --- examples and framing ------------------------------------------------------------------


def test_crc_is_ccitt_false() -> None:
    assert crc16(b"123456789") == 0x29B1


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_documented_examples_encode_and_decode(name: str) -> None:
    frame, wire = EXAMPLES[name]
    assert encode(frame) == wire
    assert decode(wire) == Decoded(frame, len(wire))


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_a_frame_split_at_every_byte_boundary_decodes_the_same(name: str) -> None:
    frame, wire = EXAMPLES[name]
    for cut in range(len(wire) + 1):
        stream: FrameStream[XrayFrame] = FrameStream(decode)
        assert frames(stream, wire[:cut], wire[cut:]) == [Decoded(frame, len(wire))], cut
        assert stream.pending == 0


def test_a_stream_of_frames_and_noise_fed_byte_by_byte_yields_every_frame() -> None:
    wire = b"\x00\xffX" + b"".join(w for _, w in EXAMPLES.values()) + b"XR\r\n" + EXAMPLES["ack"][1]
    stream: FrameStream[XrayFrame] = FrameStream(decode)
    results = frames(stream, *(bytes([byte]) for byte in wire))
    assert [r.frame for r in results if r.frame is not None] == [
        *(frame for frame, _ in EXAMPLES.values()),
        EXAMPLES["ack"][0],
    ]
    assert all(r.error and r.error.startswith("garbage:") for r in results if r.frame is None)
    assert sum(r.consumed for r in results) == len(wire)


def test_a_frame_cut_short_is_skipped_and_the_next_one_kept() -> None:
    record, wire = EXAMPLES["record"]
    results = frames(FrameStream(decode), wire[:40] + wire)
    assert results == [
        Decoded(None, 40, "truncated: a frame cut short by the next one"),
        Decoded(record, len(wire)),
    ]


def test_a_field_that_ends_in_xr1_is_not_taken_for_a_new_frame() -> None:
    """The truncation rule applies to bad lines only."""
    record = XrayRecord(1, 1, BODY.model_copy(update={"operator": "XR1", "image": "a/XR1"}))
    wire = encode(record)
    assert decode(wire) == Decoded(record, len(wire))


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (EXAMPLES["record"][1][:-3] + b"0\r\n", "bad_checksum: CRC mismatch"),
        (corrupt_line(EXAMPLES["record"][1]), "bad_checksum: CRC mismatch"),
        (EXAMPLES["heartbeat"][1][:-2] + b"\n", "malformed: line does not end in CR LF"),
        (b"XR1|3|HB|59\r\n", "malformed: no CRC field"),
        (line("3", "HB", "x\xe9"), "malformed: not ASCII"),
        (line("3", "HELLO"), "invalid: 4 fields, a record has 9"),
        (line("3", "0", "SF12345678", "PASS", "op", "i", "2026-11-25T08:00:00.000Z"), "seq"),
        (line("x", "HB"), "invalid: boot is not a decimal number"),
        (line("4294967296", "HB"), "invalid: boot must be in 0..4294967295"),
        (line("3", "1", "SF12345678", "MAYBE", "op", "i", "2026-11-25T08:00:00.000Z"), "verdict"),
        (line("3", "1", "SF 1234567", "PASS", "op", "i", "2026-11-25T08:00:00.000Z"), "waybill"),
        (line("3", "1", "SF12345678", "PASS", "op", "i", "2026-11-25 08:00:00Z"), "time is not"),
        (line("3", "1", "SF12345678", "PASS", "op", "i", "2026-13-25T08:00:00.000Z"), "month"),
    ],
)
def test_bad_lines_are_skipped_whole_with_the_reason(wire: bytes, error: str) -> None:
    result = decode(wire)
    assert (result.frame, result.consumed) == (None, len(wire))
    assert result.error is not None
    assert error in result.error
    assert result.error.split(":")[0] in ("bad_checksum", "malformed", "invalid")


def test_a_line_without_an_end_is_given_up_after_max_line() -> None:
    assert decode(b"XR1|" + b"x" * 100) == Decoded(None, 0)
    noise = b"XR1|" + b"x" * MAX_LINE
    assert decode(noise) == Decoded(None, len(noise), f"malformed: no line end in {MAX_LINE} bytes")


def test_noise_keeps_only_what_could_start_a_frame() -> None:
    assert decode(b"abcXR") == Decoded(None, 3, "garbage: 3 bytes between frames")
    assert decode(b"XR") == Decoded(None, 0)
    assert decode(b"") == Decoded(None, 0)


def test_frames_check_their_fields() -> None:
    with pytest.raises(ValueError, match="cannot contain"):
        XrayRecord(1, 1, BODY.model_copy(update={"image": "a|b"}))
    with pytest.raises(ValueError, match="seq"):
        Ack(1, 0)
    with pytest.raises(ValueError, match="boot"):
        Heartbeat(-1)


def test_years_before_1000_keep_four_digits() -> None:
    record = XrayRecord(
        0, 1, BODY.model_copy(update={"scanned_at": datetime(999, 1, 2, tzinfo=UTC)})
    )
    assert b"|0999-01-02T00:00:00.000Z|" in encode(record)
    assert decode(encode(record)).frame == record


# --- properties ---------------------------------------------------------------------------

u32 = st.integers(0, 0xFFFFFFFF)
seqs = st.integers(1, 0xFFFFFFFF)
bodies = st.builds(
    XrayBody,
    waybill=st.from_regex(r"\A[A-Za-z0-9-]{4,40}\Z"),
    verdict=st.sampled_from(["PASS", "SUSPECT", "FAIL"]),
    operator=st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z"),
    image=st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="|"),
        min_size=1,
        max_size=256,
    ),
    scanned_at=st.datetimes(timezones=st.just(UTC)),
)
xray_frames: st.SearchStrategy[XrayFrame] = st.one_of(
    st.builds(XrayRecord, u32, seqs, bodies), st.builds(Heartbeat, u32), st.builds(Ack, u32, seqs)
)


@given(xray_frames)
def test_frames_round_trip(frame: XrayFrame) -> None:
    wire = encode(frame)
    assert decode(wire) == Decoded(frame, len(wire))
    assert len(wire) <= MAX_LINE


@given(st.binary(max_size=2 * MAX_LINE))
def test_decode_never_raises_and_consumes_within_the_buffer(data: bytes) -> None:
    result = decode(data)
    assert 0 <= result.consumed <= len(data)
    assert (result.frame is None) == (result.error is not None) or result.consumed == 0


@given(st.binary(max_size=64).filter(lambda noise: b"XR1|" not in noise), xray_frames)
def test_a_frame_after_any_noise_is_recovered(noise: bytes, frame: XrayFrame) -> None:
    results = frames(FrameStream(decode), noise + encode(frame))
    assert results[-1] == Decoded(frame, len(encode(frame)))
    assert all(result.frame is None for result in results[:-1])


# --- scenarios and settings -----------------------------------------------------------------


def test_the_example_scenario_file_is_the_built_in_default() -> None:
    assert load_scenario(EXAMPLE_SCENARIO) == DEFAULT_SCENARIO


def test_scenario_files_with_faults_load(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        "[machine]\nboot = 9\nheartbeat_s = 1\n[faults]\ncorrupt = 0.25\nseed = 2\n"
        '[[records]]\nat_s = 0.5\nwaybill = "SF0001"\nverdict = "FAIL"\n'
        'operator = "op"\nimage = "i.png"\n'
    )
    scenario = load_scenario(path)
    assert (scenario.boot, scenario.heartbeat_s) == (9, 1.0)
    assert scenario.faults == LineFaults(corrupt=0.25, seed=2)
    assert scenario.records == (SimRecord(0.5, "SF0001", "FAIL", "op", "i.png"),)


RECORD = 'at_s = 0\nwaybill = "SF0001"\nverdict = "PASS"\noperator = "op"\n'


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (f'[[records]]\n{RECORD}image = "i"\nshade = 3\n', "shade"),
        (f'[[records]]\n{RECORD}image = "a|b"\n', "cannot contain"),
        (f"[[records]]\n{RECORD.replace('PASS', 'OK')}image = 'i'\n", "verdict"),
        (f'[[records]]\n{RECORD.replace("SF0001", "S")}image = "i"\n', "waybill"),
        (f'[machine]\nheartbeat_s = 0\n[[records]]\n{RECORD}image = "i"\n', "heartbeat_s"),
        ("[machine]\nboot = 1\n", "records"),
    ],
)
def test_bad_scenario_files_fail_naming_the_file(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=match) as caught:
        load_scenario(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"heartbeat_s": 0}, "heartbeat_s"),
        ({"ack_timeout_s": float("inf")}, "ack_timeout_s"),
        ({"boot": 1 << 32}, "boot"),
    ],
)
def test_scenarios_are_checked_on_construction(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        XrayScenario(records=(), **kwargs)


def test_records_are_checked_on_construction() -> None:
    with pytest.raises(ValueError, match="at_s"):
        SimRecord(-1, "SF0001", "PASS", "op", "i")
    with pytest.raises(ValueError, match="operator"):
        SimRecord(0, "SF0001", "PASS", "op 1", "i")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"silence_timeout_s": 0}, "positive"),
        ({"window": 0}, "window"),
        ({"reconnect_max_s": 0.01}, "reconnect_max_s"),
    ],
)
def test_driver_settings_are_checked_without_io(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        XrayMachine("127.0.0.1", 1, **kwargs)
