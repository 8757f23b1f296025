"""The ID-card adapter protocol, identity validation, and the simulator's data, without I/O."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.configfile import ConfigFileError
from firmware_bridge.codec import Decoded, FrameStream
from firmware_bridge.idcard.codec import (
    BAD_CHECKSUM,
    MAX_PAYLOAD,
    CardRecord,
    IdFrame,
    NoCard,
    ReaderFault,
    ReadRequest,
    crc16,
    decode,
    encode,
    identity_from,
    record_from,
)
from firmware_bridge.idcard.driver import IdCardReader
from firmware_bridge.serial_link import SerialLink
from firmware_bridge.sim import idcard_cli
from firmware_bridge.sim.idcard import (
    DEFAULT_SCENARIO,
    SAMPLE_IDENTITY,
    IdCardScenario,
    SimulatedAnswer,
    flip_middle_bit,
    load_scenario,
)

SCENARIOS = Path(__file__).resolve().parent.parent / "firmware_bridge" / "sim" / "scenarios"
PERSONAL = (SAMPLE_IDENTITY.name, SAMPLE_IDENTITY.id_number, SAMPLE_IDENTITY.authority)
SAMPLE_RECORD = record_from(SAMPLE_IDENTITY, 9)

EXAMPLES: list[tuple[str, IdFrame]] = [
    ("02 00 02 52 01 92 5c 03", ReadRequest(1)),
    ("02 00 02 4e 01 d4 42 03", NoCard(1)),
    ("02 00 03 45 07 02 c5 58 03", ReaderFault(7, 2)),
    (encode(SAMPLE_RECORD).hex(" "), SAMPLE_RECORD),
]


def stream(chunks: list[bytes]) -> list[Decoded[IdFrame]]:
    frames = FrameStream(decode)
    return [result for chunk in chunks for result in frames.feed(chunk)]


def test_crc_is_crc16_ccitt_false() -> None:
    assert crc16(b"123456789") == 0x29B1


@pytest.mark.parametrize(("wire", "frame"), EXAMPLES)
def test_examples_encode_to_the_documented_bytes_and_back(wire: str, frame: IdFrame) -> None:
    data = bytes.fromhex(wire)
    assert encode(frame) == data
    assert decode(data + b"\x02\x00") == Decoded(frame, len(data))


@pytest.mark.parametrize(("wire", "frame"), EXAMPLES)
def test_every_example_decodes_the_same_split_at_every_byte_boundary(
    wire: str, frame: IdFrame
) -> None:
    data = bytes.fromhex(wire) * 2
    splits = [[data[:at], data[at:]] for at in range(len(data) + 1)]
    splits.append([data[i : i + 1] for i in range(len(data))])
    for chunks in splits:
        assert stream(chunks) == [Decoded(frame, len(data) // 2)] * 2, chunks


def test_the_sample_card_wire_bytes_are_the_documented_ones() -> None:
    assert encode(SAMPLE_RECORD)[:5].hex(" ") == "02 00 55 43 09"
    assert encode(SAMPLE_RECORD)[-3:].hex(" ") == "28 01 03"


def test_noise_before_a_frame_is_skipped_up_to_its_stx() -> None:
    frame = encode(NoCard(3))
    assert stream([b"\xff\x00junk" + frame]) == [
        Decoded(None, 6, "noise before STX (6 B)"),
        Decoded(NoCard(3), len(frame)),
    ]


def test_a_false_start_skips_only_its_stx_so_the_real_frame_behind_it_is_found() -> None:
    frame = encode(NoCard(3))
    results = stream([b"\x02\x00\x05" + frame])
    assert results[-1] == Decoded(NoCard(3), len(frame))
    assert all(r.error is not None and BAD_CHECKSUM in r.error for r in results[:1])


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"X\x01", "unknown frame type 0x58"),
        (b"R\x01x", "'R' frame with a body"),
        (b"N\x01x", "'N' frame with a body"),
        (b"E\x01", "exactly one code byte"),
        (b"C\x01\xff\xfe", "not UTF-8"),
        (b"C\x01a\x1fb", "2 fields, not 6"),
    ],
)
def test_a_well_framed_payload_that_makes_no_sense_is_skipped_whole(
    payload: bytes, error: str
) -> None:
    covered = len(payload).to_bytes(2, "big") + payload
    data = b"\x02" + covered + crc16(covered).to_bytes(2, "big") + b"\x03"
    result = decode(data)
    assert (result.frame, result.consumed) == (None, len(data))
    assert result.error is not None
    assert error in result.error


@pytest.mark.parametrize("length", [b"\x00\x00", b"\x00\x01", (MAX_PAYLOAD + 1).to_bytes(2, "big")])
def test_impossible_lengths_are_skipped_at_once(length: bytes) -> None:
    result = decode(b"\x02" + length)
    assert (result.frame, result.consumed) == (None, 1)


def test_card_records_hide_personal_fields_from_their_repr() -> None:
    assert not any(value in repr(SAMPLE_RECORD) for value in PERSONAL)
    assert not any(value in repr(SAMPLE_IDENTITY) for value in PERSONAL)


def test_identity_round_trips_through_a_record_including_long_term() -> None:
    long_term = SAMPLE_IDENTITY.model_copy(update={"valid_until": None})
    assert record_from(long_term, 0).valid_until == "长期"
    for identity in (SAMPLE_IDENTITY, long_term):
        assert identity_from(record_from(identity, 0)) == identity


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({"id_number": "1101-0519"}, "id_number"),
        ({"id_type": "library_card"}, "id_type"),
        ({"name": ""}, "name"),
        ({"name": "张\x00三"}, "name"),
        ({"authority": "北京\x7f"}, "authority"),
        ({"valid_from": "2015-03-01"}, "valid_from"),
        ({"valid_from": "20150230"}, "valid_from"),
        ({"valid_until": "永久"}, "valid_until"),
        ({"valid_until": "20100101"}, "record"),
        ({"name": "", "id_number": "x"}, "id_number, name"),
    ],
)
def test_invalid_records_name_the_fields_and_never_their_values(
    changes: dict[str, str], fields: str
) -> None:
    record = dataclasses.replace(SAMPLE_RECORD, **changes)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fail validation") as caught:
        identity_from(record)
    message = str(caught.value)
    assert message.endswith(fields)
    assert not any(value and value in message for value in (*PERSONAL, *changes.values()))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ReadRequest(256), "seq"),
        (lambda: NoCard(-1), "seq"),
        (lambda: ReaderFault(1, 300), "code"),
        (lambda: dataclasses.replace(SAMPLE_RECORD, name="a\x1fb"), "0x1F"),
        (lambda: encode(dataclasses.replace(SAMPLE_RECORD, authority="局" * 400)), "payload"),
    ],
)
def test_invalid_frames_are_refused(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


# --- properties -----------------------------------------------------------------------------

seqs = st.integers(0, 255)
texts = st.text(
    st.characters(blacklist_characters="\x1f", blacklist_categories=["Cs"]), max_size=40
)
frames: st.SearchStrategy[IdFrame] = st.one_of(
    st.builds(ReadRequest, seqs),
    st.builds(NoCard, seqs),
    st.builds(ReaderFault, seqs, st.integers(0, 255)),
    st.builds(CardRecord, seqs, texts, texts, texts, texts, texts, texts),
)


@given(frames)
def test_decode_inverts_encode(frame: IdFrame) -> None:
    data = encode(frame)
    assert decode(data) == Decoded(frame, len(data))


@given(st.binary(max_size=300))
def test_decode_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    result = decode(data)
    assert 0 <= result.consumed <= len(data)
    assert (result.consumed == 0) <= (result.frame is None)
    stream([data, data])


@given(frames, st.data())
def test_any_single_flipped_bit_is_caught(frame: IdFrame, data: st.DataObject) -> None:
    """CRC-16 catches every single-bit error: a damaged frame never becomes another frame."""
    wire = bytearray(encode(frame))
    bit = data.draw(st.integers(0, len(wire) * 8 - 1))
    wire[bit // 8] ^= 1 << (bit % 8)
    assert [r.frame for r in stream([bytes(wire)]) if r.frame is not None] == []


def test_the_simulators_corruption_is_a_checksum_fault() -> None:
    damaged = flip_middle_bit(encode(SAMPLE_RECORD))
    results = stream([damaged])
    assert results[0].error is not None
    assert results[0].error.startswith(BAD_CHECKSUM)
    assert all(result.frame is None for result in results)


# --- the driver and the simulator's data ----------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"reader": "a b"}, ValueError), ({"retries": -1}, ValueError), ({"retries": 11}, ValueError)],
)
def test_reader_refuses_bad_settings_without_touching_the_port(
    kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        IdCardReader(SerialLink("/nonexistent/tty"), **kwargs)


CARD = SimulatedAnswer("card", SAMPLE_IDENTITY, reads=2, hold_s=3.0)
NONE = SimulatedAnswer("none", hold_s=1.0)
ERROR = SimulatedAnswer("error", error=2)


def test_per_read_steps_answer_their_number_of_reads_and_repeat() -> None:
    scenario = IdCardScenario((CARD, NONE, ERROR))
    kinds = [scenario.step_for(i, 0.0).answer for i in range(9)]
    assert kinds == ["card", "card", "none", "error"] * 2 + ["card"]


def test_a_timeline_holds_each_step_for_its_seconds_and_the_last_without_repeat() -> None:
    scenario = IdCardScenario((CARD, NONE), mode="timeline", repeat=False)
    kinds = [scenario.step_for(0, t).answer for t in (0, 2.9, 3.0, 3.9, 4.0, 100)]
    assert kinds == ["card", "card", "none", "none", "none", "none"]
    repeating = dataclasses.replace(scenario, repeat=True)
    assert repeating.step_for(0, 4.5).answer == "card"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: SimulatedAnswer("card"), "identity"),
        (lambda: SimulatedAnswer("none", SAMPLE_IDENTITY), "identity"),
        (lambda: SimulatedAnswer("error"), "error code"),
        (lambda: SimulatedAnswer("error", error=256), "0..255"),
        (lambda: SimulatedAnswer("none", reads=0), "reads"),
        (lambda: SimulatedAnswer("none", hold_s=0), "hold_s"),
        (lambda: SimulatedAnswer("maybe"), "answer"),  # type: ignore[arg-type]
        (lambda: IdCardScenario(()), "non-empty"),
        (lambda: IdCardScenario((NONE,), mode="random"), "mode"),  # type: ignore[arg-type]
    ],
)
def test_simulated_readers_are_validated_on_construction(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_the_shipped_scenario_file_loads() -> None:
    scenario = load_scenario(SCENARIOS / "idcard.toml")
    assert [step.answer for step in scenario.steps] == ["card", "none", "card", "error"]
    assert scenario.steps[0].identity == SAMPLE_IDENTITY
    long_term = scenario.steps[2].identity
    assert long_term is not None
    assert long_term.valid_until is None
    assert long_term.valid_from == dt.date(2010, 6, 15)


def test_default_scenario_is_sane() -> None:
    assert DEFAULT_SCENARIO.describe() == "per_read, 2 steps (card, none)"


CARD_TOML = """
[[steps]]
answer = "card"
name = "王五"
id_number = "{number}"
authority = "某市公安局"
valid_from = 2020-01-01
"""


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (CARD_TOML.format(number="NOT-VALID!"), "id_number"),
        ('[[steps]]\nanswer = "none"\nname = "王五"\n', "card answers only"),
        ('[[steps]]\nanswer = "error"\n', "error code"),
        ('mode = "per_read"\n', "steps"),
        ('[[steps]]\nanswer = "none"\ncolour = 1\n', "colour"),
    ],
)
def test_bad_scenario_files_name_the_problem_but_not_personal_values(
    tmp_path: Path, text: str, match: str
) -> None:
    path = tmp_path / "idcard.toml"
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=match) as caught:
        load_scenario(path)
    assert "王五" not in str(caught.value)
    assert "NOT-VALID" not in str(caught.value)


def test_cli_help_says_what_the_reader_is(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="postedge sim")
    idcard_cli.add_command(parser.add_subparsers(required=True))
    with pytest.raises(SystemExit):
        parser.parse_args(["idcard", "--help"])
    text = capsys.readouterr().out
    for word in ("--scenario", "--link", "--duration", "SDK", "CRC-16"):
        assert word in text


def test_noise_ending_in_stx_does_not_hold_back_the_frame_behind_it() -> None:
    """0x02 0x02 0x00 reads as a 512-byte frame; the intact frame after it wins."""
    frame = encode(NoCard(4))
    results = stream([b"\x01\x02" + frame])
    assert results[-1] == Decoded(NoCard(4), len(frame))
    assert [r.frame for r in results[:-1]] == [None, None]
