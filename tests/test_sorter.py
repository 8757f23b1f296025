"""Pure tests of the sorter PLC's register map, its simulated program and its scenario files."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU

from contracts import DivertBody, InductionBody
from contracts.configfile import ConfigFileError
from firmware_bridge.sim.faults import LineFaults
from firmware_bridge.sim.sorter import DEFAULT_SCENARIO, SimParcel, SimulatedPlc, SorterScenario
from firmware_bridge.sim.sorter_cli import load_scenario
from firmware_bridge.sim.tcp_faults import modbus_tcp_corruptor
from firmware_bridge.sorter import registers as reg
from firmware_bridge.sorter.driver import SorterPlc

EXAMPLE_SCENARIO = Path(__file__).parent.parent / "firmware_bridge/sim/scenarios/sorter.toml"

# The examples of docs/devices/sorter.md, register by register.
INDUCTION_BARCODE = reg.InductionMailbox(
    1, InductionBody(transaction=100001, barcode="SF1000000001")
)
INDUCTION_BARCODE_REGISTERS = [
    0x0001, 0x0001, 0x86A1, 0x0001, 0x0000, 0x000C,
    0x5346, 0x3130, 0x3030, 0x3030, 0x3030, 0x3031, *[0] * 14, 0xB8D4,
]  # fmt: skip
INDUCTION_SLOT = reg.InductionMailbox(2, InductionBody(transaction=100002, scan_slot=4))
INDUCTION_SLOT_REGISTERS = [0x0002, 0x0001, 0x86A2, 0x0002, 0x0004, 0x0000, *[0] * 20, 0x96C3]
CONFIRMATION = reg.ConfirmationMailbox(
    1, DivertBody(transaction=100001, chute=7, outcome="diverted")
)
CONFIRMATION_REGISTERS = [0x0001, 0x0001, 0x86A1, 0x0007, 0x0001, 0x29BF]
COMMAND = reg.DivertCommand(1, 100001, 7)
COMMAND_REGISTERS = [0x0001, 0x0001, 0x86A1, 0x0007, 0x6354]
STATUS = reg.CommandStatus(1, reg.CommandResult.ACCEPTED)
STATUS_REGISTERS = [0x0001, 0x0001, 0x2490]


# --- the map ------------------------------------------------------------------------------


def test_the_map_is_one_contiguous_block_read_in_two_requests() -> None:
    """Offsets are documented in docs/devices/sorter.md; a change there must change here."""
    assert (reg.INDUCTION, reg.INDUCTION_ACK, reg.CONFIRMATION, reg.CONFIRMATION_ACK) == (
        0, 27, 28, 34,
    )  # fmt: skip
    assert (reg.COMMAND, reg.COMMAND_STATUS, reg.MAP_SIZE, reg.EVENTS_SIZE) == (35, 40, 43, 35)
    assert reg.EVENTS_SIZE <= 125  # one read-holding-registers request may ask for 125


def test_crc16_modbus_agrees_with_pymodbus_rtu_crc() -> None:
    """The same CRC as Modbus RTU frames; the register holds it as a number (high byte first)."""
    for registers in ([0x1234, 0xABCD], [0], INDUCTION_BARCODE_REGISTERS[:-1]):
        data = b"".join(value.to_bytes(2, "big") for value in registers)
        rtu = FramerRTU.compute_CRC(data)  # byte-swapped, as RTU sends the low byte first
        assert reg.crc16_modbus(registers) == int.from_bytes(rtu.to_bytes(2, "little"), "big")


@pytest.mark.parametrize(("seq", "after"), [(0, 1), (1, 2), (65534, 65535), (65535, 1)])
def test_sequence_numbers_skip_zero_which_means_empty(seq: int, after: int) -> None:
    assert reg.next_seq(seq) == after


@pytest.mark.parametrize(
    ("frame", "registers", "encode", "decode"),
    [
        (
            INDUCTION_BARCODE,
            INDUCTION_BARCODE_REGISTERS,
            reg.encode_induction,
            reg.decode_induction,
        ),
        (INDUCTION_SLOT, INDUCTION_SLOT_REGISTERS, reg.encode_induction, reg.decode_induction),
        (CONFIRMATION, CONFIRMATION_REGISTERS, reg.encode_confirmation, reg.decode_confirmation),
        (COMMAND, COMMAND_REGISTERS, reg.encode_command, reg.decode_command),
        (STATUS, STATUS_REGISTERS, reg.encode_status, reg.decode_status),
    ],
    ids=["induction-barcode", "induction-slot", "confirmation", "command", "status"],
)
def test_documented_examples_encode_and_decode(
    frame: Any, registers: list[int], encode: Any, decode: Any
) -> None:
    assert encode(frame) == registers
    assert decode(registers) == frame


def test_an_induction_can_carry_both_a_barcode_and_a_scan_slot() -> None:
    mailbox = reg.InductionMailbox(9, InductionBody(transaction=1, barcode="A B", scan_slot=0))
    assert reg.decode_induction(reg.encode_induction(mailbox)) == mailbox


def test_empty_mailboxes_decode_to_nothing_whatever_their_crc() -> None:
    """A freshly booted PLC has zeros everywhere, its CRC registers included."""
    assert reg.decode_induction([0] * reg.INDUCTION_SIZE) is None
    assert reg.decode_confirmation([0] * reg.CONFIRMATION_SIZE) is None
    assert reg.decode_command([0] * reg.COMMAND_SIZE) is None
    assert reg.decode_status([0] * reg.COMMAND_STATUS_SIZE) == reg.CommandStatus(
        0, reg.CommandResult.NONE
    )


def sealed(values: list[int]) -> list[int]:
    return [*values, reg.crc16_modbus(values)]


@pytest.mark.parametrize(
    ("registers", "decode", "kind", "match"),
    [
        ([1, 0, 5, 1, 0, 1, *[0x4100] + [0] * 19, 0], reg.decode_induction, "bad_checksum", "CRC"),
        (sealed([1, 0, 5, 4, 0, 0, *[0] * 20]), reg.decode_induction, "invalid", "flags"),
        (sealed([1, 0, 5, 1, 0, 0, *[0] * 20]), reg.decode_induction, "invalid", "length 0"),
        (sealed([1, 0, 5, 1, 0, 41, *[0x4141] * 20]), reg.decode_induction, "invalid", "41"),
        (sealed([1, 0, 5, 1, 0, 2, 0x4101, *[0] * 19]), reg.decode_induction, "invalid", "barcode"),
        (sealed([1, 0, 5, 1, 0, 1, 0xE900, *[0] * 19]), reg.decode_induction, "invalid", "barcode"),
        (sealed([1, 0, 5, 0, 0, 0, *[0] * 20]), reg.decode_induction, "invalid", "scan slot"),
        (sealed([1, 0, 5, 7, 9]), reg.decode_confirmation, "invalid", "outcome code 9"),
        (sealed([1, 0, 5, 7, 1])[:-2], reg.decode_confirmation, "invalid", "4 registers"),
        ([1, 0, 5, 7, 0x10000, 0], reg.decode_confirmation, "invalid", "0..65535"),
        (sealed([1, 6]), reg.decode_status, "invalid", "result code 6"),
        ([1, 1, 0x2491], reg.decode_status, "bad_checksum", "CRC"),
    ],
)
def test_unusable_blocks_raise_mailbox_errors_of_their_kind(
    registers: list[int], decode: Any, kind: str, match: str
) -> None:
    with pytest.raises(reg.MailboxError, match=match) as caught:
        decode(registers)
    assert caught.value.kind == kind


def test_every_single_bit_error_in_a_mailbox_is_caught() -> None:
    """The CRC is what stands between a torn or damaged read and a wrong parcel."""
    for index in range(len(INDUCTION_BARCODE_REGISTERS)):
        for bit in range(16):
            damaged = list(INDUCTION_BARCODE_REGISTERS)
            damaged[index] ^= 1 << bit
            if index == 0 and damaged[0] == 0:
                assert reg.decode_induction(damaged) is None  # reads as empty: harmless
                continue
            with pytest.raises(reg.MailboxError):
                reg.decode_induction(damaged)


def test_frames_check_what_the_map_can_carry() -> None:
    with pytest.raises(ValueError, match="at most 40"):
        reg.InductionMailbox(1, InductionBody(transaction=1, barcode="X" * 41))
    with pytest.raises(ValueError, match="seq"):
        reg.DivertCommand(0, 1, 1)
    with pytest.raises(ValueError, match="chute"):
        reg.DivertCommand(1, 1, 0x10000)
    with pytest.raises(TypeError):
        reg.CommandStatus(1, 1)  # type: ignore[arg-type]


def test_the_modbus_corruptor_flips_one_bit_of_register_data_and_spares_the_header() -> None:
    corrupt = modbus_tcp_corruptor(seed=1)
    answer = bytes.fromhex("0007 0000 0009 01 03 06 0001 0001 2490")
    for _ in range(50):
        damaged = corrupt(answer)
        assert damaged[:9] == answer[:9]
        diff = int.from_bytes(damaged, "big") ^ int.from_bytes(answer, "big")
        assert diff.bit_count() == 1
    write_answer = bytes.fromhex("0008 0000 0006 01 10 001b 0001")
    assert corrupt(write_answer) == write_answer[:-1] + b"\x00"


# --- properties ---------------------------------------------------------------------------

seqs = st.integers(1, 0xFFFF)
transactions = st.integers(0, 0xFFFFFFFF)
barcodes = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=40)
inductions = st.builds(
    lambda seq, transaction, barcode, slot: reg.InductionMailbox(
        seq, InductionBody(transaction=transaction, barcode=barcode, scan_slot=slot)
    ),
    seqs,
    transactions,
    barcodes | st.none(),
    st.integers(0, 0xFFFF),
) | st.builds(
    lambda seq, transaction, barcode: reg.InductionMailbox(
        seq, InductionBody(transaction=transaction, barcode=barcode)
    ),
    seqs,
    transactions,
    barcodes,
)
confirmations = st.builds(
    lambda seq, transaction, chute, outcome: reg.ConfirmationMailbox(
        seq, DivertBody(transaction=transaction, chute=chute, outcome=outcome)
    ),
    seqs,
    transactions,
    st.integers(0, 0xFFFF),
    st.sampled_from(["diverted", "missed", "recirculated"]),
)
commands = st.builds(reg.DivertCommand, seqs, transactions, st.integers(0, 0xFFFF))
statuses = st.builds(reg.CommandStatus, st.integers(0, 0xFFFF), st.sampled_from(reg.CommandResult))


@given(inductions)
def test_inductions_round_trip(mailbox: reg.InductionMailbox) -> None:
    registers = reg.encode_induction(mailbox)
    assert len(registers) == reg.INDUCTION_SIZE
    assert reg.decode_induction(registers) == mailbox


@given(confirmations)
def test_confirmations_round_trip(mailbox: reg.ConfirmationMailbox) -> None:
    assert reg.decode_confirmation(reg.encode_confirmation(mailbox)) == mailbox


@given(commands)
def test_commands_round_trip(command: reg.DivertCommand) -> None:
    assert reg.decode_command(reg.encode_command(command)) == command


@given(statuses)
def test_statuses_round_trip(status: reg.CommandStatus) -> None:
    if status.ack == 0:  # ack 0 is "nothing processed yet", whatever the rest says
        assert reg.decode_status(reg.encode_status(status)).ack == 0
    else:
        assert reg.decode_status(reg.encode_status(status)) == status


DECODERS = {
    reg.decode_induction: reg.INDUCTION_SIZE,
    reg.decode_confirmation: reg.CONFIRMATION_SIZE,
    reg.decode_command: reg.COMMAND_SIZE,
    reg.decode_status: reg.COMMAND_STATUS_SIZE,
}


@given(st.sampled_from(list(DECODERS)), st.data())
def test_decoding_any_registers_raises_nothing_but_mailbox_errors(
    decode: Any, data: st.DataObject
) -> None:
    size = data.draw(st.sampled_from([DECODERS[decode], 0, DECODERS[decode] + 1]))
    registers = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=size, max_size=size))
    if data.draw(st.booleans()) and registers:
        registers = sealed(registers[:-1])  # a valid CRC, so the content checks run too
    with contextlib.suppress(reg.MailboxError):
        decode(registers)


# --- the simulated PLC program, on its own clock --------------------------------------------


def plc_for(*parcels: SimParcel, **settings: Any) -> SimulatedPlc:
    return SimulatedPlc(SorterScenario(parcels=parcels, **settings))


def posted_induction(plc: SimulatedPlc) -> reg.InductionMailbox | None:
    return reg.decode_induction(plc.image[reg.INDUCTION : reg.INDUCTION_ACK])


def posted_confirmation(plc: SimulatedPlc) -> reg.ConfirmationMailbox | None:
    return reg.decode_confirmation(plc.image[reg.CONFIRMATION : reg.CONFIRMATION_ACK])


def command(
    plc: SimulatedPlc, seq: int, transaction: int, chute: int, now: float
) -> reg.CommandStatus:
    registers = reg.encode_command(reg.DivertCommand(seq, transaction, chute))
    plc.host_wrote(reg.COMMAND, registers, now)
    return reg.decode_status(plc.image[reg.COMMAND_STATUS : reg.MAP_SIZE])


def test_plc_posts_arrived_parcels_one_at_a_time_until_each_is_taken() -> None:
    plc = plc_for(
        SimParcel(0, 1, barcode="AAAA"), SimParcel(0, 2, scan_slot=3), SimParcel(5, 3, barcode="C")
    )
    plc.advance(0)
    first = posted_induction(plc)
    assert first is not None
    assert first.body.transaction == 1
    plc.advance(1)
    assert posted_induction(plc) == first  # not taken yet: nothing else is posted
    plc.host_wrote(reg.INDUCTION_ACK, [first.seq], 1)
    plc.advance(1)
    second = posted_induction(plc)
    assert second == reg.InductionMailbox(2, InductionBody(transaction=2, scan_slot=3))
    plc.host_wrote(reg.INDUCTION_ACK, [second.seq], 1)
    plc.advance(4.9)
    assert posted_induction(plc) == second  # parcel 3 has not arrived
    plc.advance(5)
    assert [body.transaction for body in plc.inductions] == [1, 2, 3]


def test_plc_posts_an_unacknowledged_induction_again_with_the_same_transaction() -> None:
    plc = plc_for(SimParcel(0, 7, barcode="AAAA"), ack_timeout_s=2)
    plc.advance(0)
    plc.advance(1.9)
    assert [body.transaction for body in plc.inductions] == [7]
    plc.advance(2)
    again = posted_induction(plc)
    assert again is not None
    assert (again.seq, again.body.transaction) == (2, 7)


def test_commanded_parcels_are_confirmed_at_their_chute_after_the_travel_time() -> None:
    plc = plc_for(
        SimParcel(0, 1, barcode="AAAA"),
        SimParcel(0, 2, barcode="BBBB", outcome="recirculated"),
        jammed_chutes=frozenset({13}),
        travel_s=1,
    )
    plc.advance(0)
    assert command(plc, 1, 1, 13, 0) == reg.CommandStatus(1, reg.CommandResult.ACCEPTED)
    plc.host_wrote(reg.INDUCTION_ACK, [1], 0)
    plc.advance(0)
    assert command(plc, 2, 2, 5, 0).result is reg.CommandResult.ACCEPTED
    plc.advance(0.9)
    assert posted_confirmation(plc) is None
    plc.advance(1)
    missed = posted_confirmation(plc)
    assert missed == reg.ConfirmationMailbox(
        1, DivertBody(transaction=1, chute=13, outcome="missed")
    )
    plc.host_wrote(reg.CONFIRMATION_ACK, [1], 1)
    plc.advance(1)
    assert plc.confirmations == [
        DivertBody(transaction=1, chute=13, outcome="missed"),
        DivertBody(transaction=2, chute=5, outcome="recirculated"),
    ]


def test_a_parcel_without_a_command_recirculates_after_the_decision_timeout() -> None:
    plc = plc_for(SimParcel(0, 4, barcode="AAAA"), decision_timeout_s=3)
    plc.advance(0)
    plc.advance(3)
    assert plc.confirmations == [DivertBody(transaction=4, chute=0, outcome="recirculated")]


def test_plc_answers_each_command_and_a_repeat_the_same_way() -> None:
    plc = plc_for(SimParcel(0, 1, barcode="AAAA"), travel_s=0, chutes=10)
    plc.advance(0)
    result = reg.CommandResult
    assert command(plc, 1, 99, 3, 0).result is result.UNKNOWN_TRANSACTION
    assert command(plc, 2, 1, 11, 0).result is result.INVALID_CHUTE
    assert command(plc, 3, 1, 3, 0).result is result.ACCEPTED
    plc.advance(0)  # travel 0: the parcel is at its chute now
    assert command(plc, 4, 1, 3, 0).result is result.ACCEPTED  # a retry after a lost answer
    assert command(plc, 5, 1, 4, 0).result is result.TOO_LATE
    before = list(plc.commands)
    assert command(plc, 5, 1, 4, 0).result is result.TOO_LATE  # same seq: not processed again
    assert plc.commands == before
    damaged = reg.encode_command(reg.DivertCommand(6, 1, 3))
    damaged[3] ^= 1
    plc.host_wrote(reg.COMMAND, damaged, 0)
    assert reg.decode_status(plc.image[reg.COMMAND_STATUS :]) == reg.CommandStatus(
        6, result.BAD_CHECKSUM
    )


# --- scenarios ----------------------------------------------------------------------------


def test_the_example_scenario_file_is_the_built_in_default() -> None:
    assert load_scenario(EXAMPLE_SCENARIO) == DEFAULT_SCENARIO


def test_scenario_files_with_faults_load(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        "[plc]\nchutes = 4\njammed_chutes = [2]\n[faults]\ndrop = 0.5\nseed = 3\n"
        '[[parcels]]\nat_s = 0\ntransaction = 1\nbarcode = "AB-1"\noutcome = "missed"\n'
    )
    scenario = load_scenario(path)
    assert scenario.faults == LineFaults(drop=0.5, seed=3)
    assert scenario.parcels == (SimParcel(0.0, 1, barcode="AB-1", outcome="missed"),)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[[parcels]]\nat_s = 0\ntransaction = 1\nbarcode = 'A'\ncolour = 'red'\n", "colour"),
        ("[plc]\nunit = 0\n[[parcels]]\nat_s = 0\ntransaction = 1\nbarcode = 'A'\n", "unit"),
        ("[[parcels]]\nat_s = 0\ntransaction = 1\nbarcode = '" + "X" * 41 + "'\n", "at most 40"),
        ("[[parcels]]\nat_s = 0\ntransaction = 1\n", "barcode or a scan slot"),
        (
            "[plc]\njammed_chutes = [30]\n[[parcels]]\nat_s = 0\ntransaction = 1\nscan_slot = 1\n",
            "jammed",
        ),
        ("[faults]\ndrop = 2\n[[parcels]]\nat_s = 0\ntransaction = 1\nscan_slot = 1\n", "drop"),
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
        ({"parcels": (SimParcel(0, 1, scan_slot=1), SimParcel(1, 1, scan_slot=2))}, "unique"),
        ({"unit": 248}, "unit"),
        ({"chutes": 0}, "chutes"),
        ({"ack_timeout_s": 0}, "ack_timeout_s"),
        ({"travel_s": float("nan")}, "travel_s"),
        ({"base_address": 0xFFFF}, "base_address"),
    ],
)
def test_scenarios_are_checked_on_construction(kwargs: dict[str, Any], match: str) -> None:
    kwargs.setdefault("parcels", (SimParcel(0, 1, scan_slot=1),))
    with pytest.raises(ValueError, match=match):
        SorterScenario(**kwargs)


def test_parcels_are_checked_on_construction() -> None:
    with pytest.raises(ValueError, match="at_s"):
        SimParcel(-1, 1, scan_slot=1)
    with pytest.raises(ValueError, match="barcode or a scan slot"):
        SimParcel(0, 1)
    with pytest.raises(ValueError, match="outcome"):
        SimParcel(0, 1, scan_slot=1, outcome="lost")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"unit": 0}, "unit"),
        ({"base_address": 0xFFF0}, "base_address"),
        ({"poll_interval_s": 0}, "positive"),
        ({"window": 0}, "window"),
        ({"reconnect_max_s": 0.01}, "reconnect_max_s"),
    ],
)
def test_driver_settings_are_checked_without_io(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SorterPlc("127.0.0.1", 1, **kwargs)
