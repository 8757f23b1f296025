"""The scanner line codec, the symbology table, and the simulator's data, without any I/O."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.configfile import ConfigFileError
from firmware_bridge.codec import Decoded, FrameStream
from firmware_bridge.scanner.codec import (
    AIM_OF_SYMBOLOGY,
    SUFFIX_NAMES,
    ScanLine,
    ScannerCodec,
    symbology_of,
)
from firmware_bridge.scanner.driver import SerialScanner
from firmware_bridge.serial_link import SerialLink
from firmware_bridge.sim import scanner_cli
from firmware_bridge.sim.scanner import (
    DEFAULT_SCENARIO,
    ScannerScenario,
    SimulatedCode,
    load_scenario,
    set_high_bit,
)

SCENARIOS = Path(__file__).resolve().parent.parent / "firmware_bridge" / "sim" / "scenarios"

EXAMPLES: list[tuple[ScannerCodec, bytes, list[ScanLine]]] = [
    (ScannerCodec("CR"), b"]C0YT2412345678901\r", [ScanLine("YT2412345678901", "]C0")]),
    (ScannerCodec("LF"), b"]Q1https://e.cn/p?x=1\n", [ScanLine("https://e.cn/p?x=1", "]Q1")]),
    (
        ScannerCodec("CRLF"),
        b"]E06901234567892\r\n]E469012349\r\n",
        [ScanLine("6901234567892", "]E0"), ScanLine("69012349", "]E4")],
    ),
    (ScannerCodec("TAB", aim=False), b"SF 1234\tJT-99\t", [ScanLine("SF 1234"), ScanLine("JT-99")]),
    (ScannerCodec("CR"), b"]d1010950123456789\r", [ScanLine("010950123456789", "]d1")]),
]  # fmt: skip


def stream_frames(codec: ScannerCodec, chunks: list[bytes]) -> list[Decoded[ScanLine]]:
    stream = FrameStream(codec.decode)
    return [result for chunk in chunks for result in stream.feed(chunk)]


# --- the codec ------------------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "wire", "lines"), EXAMPLES)
def test_every_example_decodes_the_same_split_at_every_byte_boundary(
    codec: ScannerCodec, wire: bytes, lines: list[ScanLine]
) -> None:
    """Framing bugs live at chunk boundaries: split at each one, and byte by byte."""
    splits = [[wire[:at], wire[at:]] for at in range(len(wire) + 1)]
    splits.append([wire[i : i + 1] for i in range(len(wire))])
    for chunks in splits:
        results = stream_frames(codec, chunks)
        assert [result.frame for result in results] == lines, chunks
        assert all(result.error is None for result in results)


@pytest.mark.parametrize(("codec", "wire", "lines"), EXAMPLES)
def test_examples_encode_to_their_wire_bytes(
    codec: ScannerCodec, wire: bytes, lines: list[ScanLine]
) -> None:
    assert b"".join(codec.encode(line) for line in lines) == wire


def test_a_line_without_its_suffix_needs_more() -> None:
    assert ScannerCodec("CRLF").decode(b"]C0ABC\r") == Decoded(None, 0)


@pytest.mark.parametrize(
    ("codec", "wire", "error"),
    [
        (ScannerCodec("CR"), b"\r", "empty line"),
        (ScannerCodec("CR"), b"]C0AB\x8dC\r", "byte 0x8d"),
        (ScannerCodec("CR"), b"]C0AB\nC\r", "byte 0x0a"),
        (ScannerCodec("CR"), b"ABC\r", "without an AIM"),
        (ScannerCodec("CR"), b"]C\r", "without an AIM"),
        (ScannerCodec("CR"), b"]C0\r", "without a code"),
        (ScannerCodec("CR", max_length=4), b"]C0ABCDE\r", "longer than 7"),
        (ScannerCodec("LF", aim=False, max_length=4), b"ABCDE\n", "longer than 4"),
    ],
)
def test_bad_lines_are_skipped_whole(codec: ScannerCodec, wire: bytes, error: str) -> None:
    result = codec.decode(wire + codec.encode(ScanLine("NEXT", "]C0" if codec.aim else None)))
    assert result.frame is None
    assert result.consumed == len(wire)
    assert result.error is not None
    assert error in result.error


def test_a_damaged_crlf_suffix_never_glues_two_codes_into_one() -> None:
    wire = b"]C0AAAA\x8d\n]C0BBBB\r\n]C0CCCC\r\n"
    results = stream_frames(ScannerCodec("CRLF"), [wire])
    assert [r.frame for r in results] == [None, ScanLine("CCCC", "]C0")]


def test_an_overlong_line_is_dropped_in_pieces_and_its_tail_never_passes_as_a_code() -> None:
    codec = ScannerCodec("CR", max_length=8)
    stream = FrameStream(codec.decode)
    results: list[Decoded[ScanLine]] = []
    for _ in range(100):
        results += stream.feed(b"]C0" + b"A" * 7)
        assert stream.pending <= codec.max_line + len(codec.terminator)
    results += stream.feed(b"TAIL\r]C0OK\r")
    assert [r.frame for r in results if r.frame is not None] == [ScanLine("OK", "]C0")]
    assert all("longer than" in (r.error or "") for r in results if r.frame is None)


@pytest.mark.parametrize(
    ("aim", "code", "symbology"),
    [
        ("]C0", "YT1", "code128"),
        ("]C1", "0109501234567", "code128"),  # GS1-128 is still Code 128
        ("]A0", "ABC", "code39"),
        ("]G0", "ABC", "code93"),
        ("]F0", "A123B", "codabar"),
        ("]I0", "1234", "itf"),
        ("]L2", "x", "pdf417"),
        ("]Q1", "x", "qr"),
        ("]Q3", "x", "qr"),
        ("]d1", "x", "datamatrix"),
        ("]d2", "x", "datamatrix"),
        ("]z0", "x", "aztec"),
        ("]E0", "6901234567892", "ean13"),
        ("]E3", "690123456789212", "ean13"),
        ("]E0", "036000291452", "upca"),
        ("]E0", "01234565", "upce"),
        ("]E4", "69012349", "ean8"),
        ("]E1", "12", "unknown"),
        ("]e0", "0109501234567", "unknown"),
        ("]X0", "x", "unknown"),
        (None, "x", "unknown"),
    ],
)
def test_aim_identifiers_name_their_symbology(aim: str | None, code: str, symbology: str) -> None:
    assert symbology_of(aim, code) == symbology


def test_every_symbology_survives_the_simulators_aim_identifier() -> None:
    examples = {"ean13": "6901234567892", "ean8": "69012349", "upca": "036000291452"}
    for symbology, aim in AIM_OF_SYMBOLOGY.items():
        code = examples.get(symbology, "01234565" if symbology == "upce" else "X1")
        assert symbology_of(aim, code) == symbology


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: ScanLine(""), ValueError),
        (lambda: ScanLine("a\tb"), ValueError),
        (lambda: ScanLine("é"), ValueError),
        (lambda: ScanLine("x" * 513), ValueError),
        (lambda: ScanLine("x", "C0"), ValueError),
        (lambda: ScannerCodec("NUL"), ValueError),  # type: ignore[arg-type]
        (lambda: ScannerCodec(max_length=0), ValueError),
        (lambda: ScannerCodec(aim=1), TypeError),  # type: ignore[arg-type]
        (lambda: ScannerCodec(aim=False).encode(ScanLine("x", "]C0")), ValueError),
        (lambda: ScannerCodec(max_length=2).encode(ScanLine("xyz", "]C0")), ValueError),
    ],
)
def test_invalid_lines_and_codecs_are_refused(make: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        make()


# --- properties -----------------------------------------------------------------------------

codecs = st.builds(ScannerCodec, st.sampled_from(SUFFIX_NAMES), st.booleans())
codes = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=80)
aims = st.from_regex(r"\A\][A-Za-z][0-9A-Za-z]\Z")


@given(codecs, codes, aims)
def test_decode_inverts_encode(codec: ScannerCodec, code: str, aim: str) -> None:
    line = ScanLine(code, aim if codec.aim else None)
    wire = codec.encode(line)
    assert codec.decode(wire) == Decoded(line, len(wire))


@given(codecs, st.binary(max_size=600))
def test_decode_never_raises_and_only_yields_valid_lines(codec: ScannerCodec, data: bytes) -> None:
    result = codec.decode(data)
    assert 0 <= result.consumed <= len(data)
    for item in stream_frames(codec, [data, data[::-1]]):
        if item.frame is not None:
            assert all(0x20 <= byte <= 0x7E for byte in item.frame.code.encode())


@given(codecs, codes, aims)
def test_a_line_with_the_simulators_corruption_never_decodes(
    codec: ScannerCodec, code: str, aim: str
) -> None:
    good = ScanLine("GOOD", aim if codec.aim else None)
    damaged = set_high_bit(codec.encode(ScanLine(code, aim if codec.aim else None)))
    frames = [r.frame for r in stream_frames(codec, [damaged + codec.encode(good)])]
    assert set(frames) <= {None, good}


# --- the driver and the simulator's data ----------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reader": "has space"}, "reader"),
        ({"reader": "s", "suffix": "NL"}, "suffix"),
        ({"reader": "s", "trigger": b""}, "trigger"),
        ({"reader": "s", "stop": b"\x16U\r"}, "needs a trigger"),
        ({"reader": "s", "line_gap_s": 0}, "line_gap_s"),
        ({"reader": "s", "max_pending": 0}, "max_pending"),
    ],
)
def test_scanner_refuses_bad_settings_without_touching_the_port(
    kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        SerialScanner(SerialLink("/nonexistent/tty"), **kwargs)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: SimulatedCode("690123456789", "ean13"), "ean13"),
        (lambda: SimulatedCode("6901234x", "ean8"), "ean8"),
        (lambda: SimulatedCode("x", "maxicode"), "symbology"),  # type: ignore[arg-type]
        (lambda: SimulatedCode("x", delay_s=-1), "delay_s"),
        (lambda: SimulatedCode("", "qr"), "1..512"),
        (lambda: ScannerScenario(codes=()), "non-empty"),
        (lambda: ScannerScenario(codes=(SimulatedCode("x"),), mode="burst"), "mode"),  # type: ignore[arg-type]
        (lambda: ScannerScenario(codes=(SimulatedCode("x"),), trigger=b"T", stop=b"T"), "trigger"),
        (lambda: ScannerScenario(codes=(SimulatedCode("x"),), suffix="NUL"), "suffix"),  # type: ignore[arg-type]
    ],
)
def test_simulated_scanners_are_validated_on_construction(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_the_shipped_scenario_file_loads() -> None:
    scenario = load_scenario(SCENARIOS / "scanner.toml")
    assert scenario.mode == "continuous"
    assert scenario.trigger == b"\x16T\r"
    assert {code.symbology for code in scenario.codes} >= {"code128", "qr", "ean13"}
    assert scenario.faults.corrupt > 0


def test_default_scenario_is_sane() -> None:
    assert DEFAULT_SCENARIO.describe() == "continuous, suffix CR, AIM ids, 4 codes"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('mode = "continuous"\ncolour = "red"\n[[codes]]\ncode = "x"\n', "colour"),
        ("[[codes]]\ncode = 'x'\nsymbology = 'ean13'\n", "ean13 code has"),
        ('suffix = "NUL"\n[[codes]]\ncode = "x"\n', "suffix"),
        ("mode = 'continuous'\n", "codes"),
        ("[[codes]]\ncode = 'x'\n[faults]\ndrop = 2\n", "faults.drop"),
    ],
)
def test_bad_scenario_files_name_the_problem(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "scanner.toml"
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=match):
        load_scenario(path)


def test_cli_help_describes_the_scanner_and_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="postedge sim")
    scanner_cli.add_command(parser.add_subparsers(required=True))
    with pytest.raises(SystemExit):
        parser.parse_args(["scanner", "--help"])
    text = capsys.readouterr().out
    for word in ("--scenario", "--link", "--duration", "AIM", "trigger", "CRLF"):
        assert word in text
    args = parser.parse_args(["scanner", "--duration", "2"])
    assert (args.duration, args.scenario, args.func) == (2.0, None, scanner_cli.run)


def test_cli_reports_a_bad_scenario_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("nonsense = [")
    args = argparse.Namespace(scenario=path, link=None, duration=1.0)
    assert scanner_cli.run(args) == 2
    assert "not valid TOML" in capsys.readouterr().err
