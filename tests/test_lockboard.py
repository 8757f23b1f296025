"""The lock-board codec, simulator definitions, scenario files and CLI, without any I/O."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.configfile import ConfigFileError
from firmware_bridge.codec import Decoded, FrameStream
from firmware_bridge.lockboard import LockBus
from firmware_bridge.lockboard.codec import (
    ERR_CHECKSUM,
    ERR_FIELD,
    ERR_GARBAGE,
    DoorReply,
    DoorReport,
    DoorsReply,
    Frame,
    ItemsReply,
    OpenLock,
    OpenReply,
    QueryDoor,
    QueryDoors,
    QueryItems,
    Reply,
    Request,
    answers,
    decode_reply,
    decode_request,
    encode,
)
from firmware_bridge.serial_link import SerialLink
from firmware_bridge.sim import lockboard_cli
from firmware_bridge.sim.faults import LineFaults
from firmware_bridge.sim.lockboard import (
    DEFAULT_SCENARIO,
    LockboardScenario,
    SimAction,
    SimBoard,
    load_scenario,
)

SCENARIO_FILE = (
    Path(__file__).resolve().parent.parent / "firmware_bridge/sim/scenarios/lockboard.toml"
)

REQUESTS: list[tuple[Request, str]] = [
    (OpenLock(1, 1), "8A 01 01 11 9B"),
    (OpenLock(1, 2), "8A 01 02 11 98"),
    (OpenLock(4, 24), "8A 04 18 11 87"),
    (QueryDoor(1, 1), "80 01 01 33 B3"),
    (QueryDoors(1), "80 01 00 33 B2"),
    (QueryItems(2), "90 02 00 33 A1"),
]
REPLIES: list[tuple[Reply, str]] = [
    (OpenReply(1, 1, door_open=True, occupied=False), "8A 01 01 00 8A"),
    (OpenReply(1, 1, door_open=False, occupied=True), "8A 01 01 11 9B"),
    (DoorReply(1, 1, door_open=False, occupied=True), "80 01 01 11 91"),
    (DoorReply(1, 1, door_open=False, occupied=False), "80 01 01 10 90"),
    (DoorReply(3, 7, door_open=True, occupied=True), "80 03 07 01 85"),
    (DoorReport(2, 5, door_open=False, occupied=False), "81 02 05 10 96"),
    (DoorsReply(1, frozenset({1, 9, 24})), "80 01 00 01 01 80 33 32"),
    (DoorsReply(2, frozenset()), "80 02 00 00 00 00 33 B1"),
    (ItemsReply(1, frozenset({2, 3})), "90 01 00 06 00 00 33 A4"),
    (ItemsReply(4, frozenset(range(1, 25))), "90 04 00 FF FF FF 33 58"),
]


def frames_of(decode: Callable[[bytes], Decoded[Any]], chunks: list[bytes]) -> list[Any]:
    stream = FrameStream(decode)
    return [d.frame for chunk in chunks for d in stream.feed(chunk) if d.frame is not None]


# --- examples -----------------------------------------------------------------------------


@pytest.mark.parametrize(("frame", "wire"), [*REQUESTS, *REPLIES])
def test_examples_encode_to_the_documented_bytes(frame: Frame, wire: str) -> None:
    assert encode(frame).hex(" ").upper() == wire


@pytest.mark.parametrize(("frame", "wire"), REQUESTS)
def test_request_examples_decode_when_split_at_every_byte_boundary(
    frame: Request, wire: str
) -> None:
    data = bytes.fromhex(wire)
    for cut in range(len(data) + 1):
        assert frames_of(decode_request, [data[:cut], data[cut:]]) == [frame]
    assert frames_of(decode_request, [bytes([b]) for b in data]) == [frame]


@pytest.mark.parametrize(("frame", "wire"), REPLIES)
def test_reply_examples_decode_when_split_at_every_byte_boundary(frame: Reply, wire: str) -> None:
    data = bytes.fromhex(wire)
    for cut in range(len(data) + 1):
        assert frames_of(decode_reply, [data[:cut], data[cut:]]) == [frame]
    assert frames_of(decode_reply, [bytes([b]) for b in data]) == [frame]


def test_all_replies_back_to_back_decode_at_every_split() -> None:
    data = b"".join(bytes.fromhex(wire) for _, wire in REPLIES)
    expected = [frame for frame, _ in REPLIES]
    for cut in range(len(data) + 1):
        assert frames_of(decode_reply, [data[:cut], data[cut:]]) == expected


def test_incomplete_frames_ask_for_more() -> None:
    assert decode_reply(b"") == Decoded(None, 0)
    assert decode_reply(bytes.fromhex("80 01")) == Decoded(None, 0)  # 5 or 8 bytes? unknown yet
    assert decode_reply(bytes.fromhex("80 01 00 01 01 80 33")) == Decoded(None, 0)
    assert decode_request(bytes.fromhex("8A 01 01 11")) == Decoded(None, 0)


def test_garbage_is_skipped_up_to_the_next_possible_frame_start() -> None:
    assert decode_reply(bytes.fromhex("00 FF 12 81 02")) == Decoded(None, 3, ERR_GARBAGE)
    assert decode_request(bytes.fromhex("33 81 8A")) == Decoded(None, 2, ERR_GARBAGE)


def test_a_bad_checksum_skips_one_byte_so_a_frame_inside_is_found() -> None:
    good = bytes.fromhex("80 01 01 11 91")
    data = bytes.fromhex("8A 80") + good
    assert decode_reply(data) == Decoded(None, 1, ERR_CHECKSUM)
    assert frames_of(decode_reply, [data]) == [DoorReply(1, 1, door_open=False, occupied=True)]


@pytest.mark.parametrize(
    "wire",
    [
        "80 01 19 11 89",  # lock 25
        "80 01 01 22 A2",  # no such state
        "90 01 03 11 83",  # item replies are bitmaps only
        "80 01 00 00 00 00 44 C5",  # bitmap reply without its 33 function byte
    ],
)
def test_replies_with_impossible_fields_are_skipped(wire: str) -> None:
    assert decode_reply(bytes.fromhex(wire)) == Decoded(None, 1, ERR_FIELD)


@pytest.mark.parametrize(
    "wire",
    ["8A 01 01 12 98", "8A 01 00 11 9A", "80 01 19 33 AB", "90 01 01 33 A3", "80 01 01 11 91"],
)
def test_requests_with_impossible_fields_are_skipped(wire: str) -> None:
    """Open-all (lock 0) is left out on purpose: the driver never sends it."""
    assert decode_request(bytes.fromhex(wire)) == Decoded(None, 1, ERR_FIELD)


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: OpenLock(1, 0), ValueError),
        (lambda: QueryDoor(1, 25), ValueError),
        (lambda: QueryDoors(256), ValueError),
        (lambda: QueryItems(True), TypeError),
        (lambda: DoorReply(1, 1, door_open=1, occupied=False), TypeError),  # type: ignore[arg-type]
        (lambda: DoorsReply(1, frozenset({0})), ValueError),
        (lambda: ItemsReply(1, {1}), TypeError),  # type: ignore[arg-type]
    ],
)
def test_frames_reject_values_the_wire_cannot_carry(
    make: Callable[[], object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        make()


def test_a_reply_answers_only_its_own_kind_of_request_for_the_same_slot() -> None:
    door = DoorReply(1, 2, door_open=True, occupied=False)
    assert answers(QueryDoor(1, 2), door)
    assert not answers(QueryDoor(1, 3), door)
    assert not answers(QueryDoor(2, 2), door)
    assert not answers(OpenLock(1, 2), door)
    assert answers(OpenLock(1, 2), OpenReply(1, 2, door_open=True, occupied=False))
    assert not answers(QueryDoor(1, 2), DoorReport(1, 2, door_open=True, occupied=False))
    assert answers(QueryDoors(4), DoorsReply(4, frozenset()))
    assert not answers(QueryDoors(4), ItemsReply(4, frozenset()))
    assert answers(QueryItems(4), ItemsReply(4, frozenset()))


# --- properties ---------------------------------------------------------------------------

boards = st.integers(0, 255)
locks = st.integers(1, 24)
lock_sets = st.frozensets(locks)
requests = st.one_of(
    st.builds(OpenLock, boards, locks),
    st.builds(QueryDoor, boards, locks),
    st.builds(QueryDoors, boards),
    st.builds(QueryItems, boards),
)
slot_replies = st.sampled_from([OpenReply, DoorReply, DoorReport]).flatmap(
    lambda kind: st.builds(kind, boards, locks, st.booleans(), st.booleans())
)
replies = st.one_of(
    slot_replies, st.builds(DoorsReply, boards, lock_sets), st.builds(ItemsReply, boards, lock_sets)
)
noise = st.binary(max_size=6).map(
    lambda data: bytes(b for b in data if b not in b"\x80\x81\x8a\x90")
)


@given(requests)
def test_requests_round_trip(frame: Request) -> None:
    wire = encode(frame)
    assert decode_request(wire) == Decoded(frame, len(wire))


@given(replies)
def test_replies_round_trip(frame: Reply) -> None:
    wire = encode(frame)
    assert decode_reply(wire) == Decoded(frame, len(wire))


@given(st.binary(max_size=64))
def test_decoders_never_raise_and_consume_within_the_buffer(data: bytes) -> None:
    for decode in (decode_request, decode_reply):
        result = decode(data)
        assert 0 <= result.consumed <= len(data)
        assert result.frame is None or result.consumed > 0
        assert (result.error is None) == (result.frame is not None or result.consumed == 0)
        frames_of(decode, [data])  # terminates


@given(st.lists(st.tuples(noise, replies), max_size=8), st.data())
def test_replies_between_noise_decode_in_order_at_any_split(
    items: list[tuple[bytes, Reply]], data: st.DataObject
) -> None:
    wire = b"".join(junk + encode(frame) for junk, frame in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=4)))
    chunks = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    assert frames_of(decode_reply, chunks) == [frame for _, frame in items]


# --- simulator definitions and scenario files ----------------------------------------------


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: SimBoard(256), "address"),
        (lambda: SimBoard(1, locks=25), "locks"),
        (lambda: SimBoard(1, locks=16, occupied=frozenset({17})), "occupied"),
        (lambda: SimBoard(1, jammed=frozenset({0})), "jammed"),
        (lambda: SimAction(-1, "close", 1, 1), "at_s"),
        (lambda: SimAction(1, "explode", 1, 1), "action"),  # type: ignore[arg-type]
        (lambda: SimAction(1, "close", 1), "board and lock"),
        (lambda: SimAction(1, "unplug", 1, 1), "board and lock"),
        (lambda: LockboardScenario(()), "at least one"),
        (lambda: LockboardScenario((SimBoard(1), SimBoard(1))), "unique"),
        (lambda: LockboardScenario((SimBoard(1),), (SimAction(1, "close", 2, 1),)), "no board 2"),
        (lambda: LockboardScenario((SimBoard(1, 8),), (SimAction(1, "close", 1, 9),)), "no lock"),
        (lambda: LockboardScenario((SimBoard(1),), close_after_s=-1), "close_after_s"),
    ],
)
def test_simulated_boards_and_scenarios_are_checked_on_construction(
    make: Callable[[], object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_the_shipped_scenario_file_loads() -> None:
    scenario = load_scenario(SCENARIO_FILE)
    assert [board.address for board in scenario.boards] == [1, 2, 3]
    assert scenario.board(1).jammed == frozenset({24})
    assert scenario.board(2).open_doors == frozenset({12})
    assert not scenario.board(3).item_sensors
    assert [action.action for action in scenario.actions] == [
        "force_open", "remove_item", "close", "unplug", "replug",
    ]  # fmt: skip
    assert scenario.faults == LineFaults(0.02, 0.02, 0.02, 0.02, 0.0, 1.0, 1)
    assert scenario.close_after_s == 8.0
    assert scenario.take_item


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[[boards]]\naddress = 1\ncolour = 'red'\n", "boards.0.colour"),
        ("boards = []\n", "boards"),
        ("[[boards]]\naddress = 1\noccupied = [30]\n", "occupied"),
        ("[[boards]]\naddress = 1\n[[actions]]\nat_s = 1\naction = 'close'\n", "board and lock"),
        ("[[boards]]\naddress = 1\n[faults]\ndrop = 2\n", "faults.drop"),
    ],
)
def test_invalid_scenario_files_name_the_file_and_the_problem(
    tmp_path: Path, text: str, match: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=match) as caught:
        load_scenario(path)
    assert str(path) in str(caught.value)


def test_the_default_scenario_describes_itself() -> None:
    assert [board.describe() for board in DEFAULT_SCENARIO.boards] == [
        "board 1: 24 locks, item sensors, reports door changes, occupied 1,2,3, jammed 24",
        "board 2: 24 locks, item sensors, no reports, occupied 5",
    ]


# --- driver settings and the command line -------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"boards": []}, ValueError),
        ({"boards": [1, 1]}, ValueError),
        ({"boards": [256]}, ValueError),
        ({"boards": [True]}, TypeError),
        ({"boards": [1], "locks_per_board": 25}, ValueError),
        ({"boards": [1], "answer_timeout_s": 0}, ValueError),
        ({"boards": [1], "retries": -1}, ValueError),
        ({"boards": [1], "poll_interval_s": 0}, ValueError),
    ],
)
def test_bus_rejects_invalid_settings_without_touching_the_port(
    kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        LockBus(SerialLink("/nonexistent/tty"), **kwargs)


def test_cli_help_names_its_options() -> None:
    parser = argparse.ArgumentParser(prog="postedge sim")
    lockboard_cli.add_command(parser.add_subparsers())
    (subparsers,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = subparsers.choices["lockboard"].format_help()
    for option in ("--scenario FILE", "--link PATH", "--duration S", "8A board lock 11 XOR"):
        assert option in text


def test_cli_refuses_a_bad_scenario_file_with_exit_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("boards = 3\n")
    args = argparse.Namespace(scenario=path, link=None, duration=0.1)
    assert lockboard_cli.run(args) == 2
    assert str(path) in capsys.readouterr().err
