"""The ID-card reader driver against its simulator over real ptys, one test per line fault.

Every test also checks what matters most here: no name, ID number or issuing authority
ever shows in a log line or an exception, whatever the fault.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from contracts import IdentityRead
from firmware_bridge.errors import (
    BridgeError,
    DeviceProtocolError,
    DeviceTimeout,
    DeviceUnavailable,
)
from firmware_bridge.idcard.codec import CardRecord, decode, encode
from firmware_bridge.idcard.driver import IdCardReader
from firmware_bridge.nullmodem import Direction
from firmware_bridge.serial_link import SerialLink
from firmware_bridge.sim.faults import FaultInjector, LineFaults
from firmware_bridge.sim.idcard import (
    SAMPLE_IDENTITY,
    IdCardScenario,
    IdCardSimulator,
    SimulatedAnswer,
    flip_middle_bit,
)
from tests.helpers import SIM_CLI, run_async

pytestmark = pytest.mark.hil

T = TypeVar("T")
LOGGER = "firmware_bridge.idcard.driver"
OTHER = IdentityRead(
    name="李四",
    id_type="resident",
    id_number="440524188001010014",
    authority="汕头市公安局潮阳分局",
    valid_from=SAMPLE_IDENTITY.valid_from,
    valid_until=None,
)
PERSONAL = [
    value
    for identity in (SAMPLE_IDENTITY, OTHER)
    for value in (identity.name, identity.id_number, identity.authority)
]
CARD = SimulatedAnswer("card", SAMPLE_IDENTITY)
NONE = SimulatedAnswer("none")
errors_seen: list[BaseException] = []


@pytest.fixture(autouse=True)
def no_personal_data_anywhere(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """After each test: no personal value in any log record or error the driver raised."""
    caplog.set_level(logging.DEBUG)
    errors_seen.clear()
    yield
    texts = [caplog.text, *(f"{e!s} {e!r} {e.__cause__!r}" for e in errors_seen)]
    leaks = [value for value in PERSONAL for text in texts if value in text]
    assert leaks == []


async def read_error(reader: IdCardReader, timeout: float = 0.1) -> BridgeError:
    """The error a read raises (kept for the personal-data check)."""
    with pytest.raises(BridgeError) as caught:
        await reader.read_card(timeout)
    errors_seen.append(caught.value)
    return caught.value


def scenario(*steps: SimulatedAnswer, faults: LineFaults | None = None) -> IdCardScenario:
    return IdCardScenario(steps or (CARD,), faults=faults or LineFaults())


def no_faults(sim: IdCardSimulator) -> None:
    sim.faults = FaultInjector(LineFaults(), corrupt=flip_middle_bit)


def warnings(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(
        1
        for record in caplog.records
        if record.name == LOGGER and record.levelno == logging.WARNING and text in record.message
    )


def first_answer_only(damage: Callable[[bytes], bytes]) -> Callable[[Direction, bytes], bytes]:
    """A null-modem manipulator that damages the first answer and lets the rest through."""
    done: list[bool] = []

    def manipulate(direction: Direction, data: bytes) -> bytes:
        if direction is Direction.TO_DEVICE and not done:
            done.append(True)
            return damage(data)
        return data

    return manipulate


def test_reads_follow_the_scenario_card_none_and_reader_error() -> None:
    steps = (CARD, SimulatedAnswer("card", OTHER), NONE, SimulatedAnswer("error", error=2))

    async def body() -> None:
        async with (
            IdCardSimulator(scenario(*steps)) as sim,
            SerialLink(sim.device_path) as link,
            IdCardReader(link, reader="counter-1") as reader,
        ):
            assert await reader.read_card() == SAMPLE_IDENTITY
            assert await reader.read_card() == OTHER
            assert await reader.read_card() is None
            error = await read_error(reader, 1.0)
            assert isinstance(error, DeviceProtocolError)
            assert "reports error 2 (card read failed" in str(error)
            assert await reader.read_card() == SAMPLE_IDENTITY  # the scenario repeats
            assert [seq for seq, _ in sim.answered] == [1, 2, 3, 4, 5]
            stats = reader.stats
            assert (stats.cards, stats.no_card, stats.reader_errors) == (3, 1, 1)

    run_async(body())


def test_a_timeline_shows_the_card_while_it_lies_on_the_reader() -> None:
    now = [0.0]
    steps = (SimulatedAnswer("none", hold_s=2), SimulatedAnswer("card", OTHER, hold_s=5))

    async def body() -> list[IdentityRead | None]:
        timeline = IdCardScenario(steps, mode="timeline", repeat=False)
        async with (
            IdCardSimulator(timeline, clock=lambda: now[0]) as sim,
            SerialLink(sim.device_path) as link,
            IdCardReader(link) as reader,
        ):
            seen = []
            for t in (0.0, 1.9, 2.0, 6.9, 60.0):
                now[0] = t
                seen.append(await reader.read_card())
            return seen

    assert run_async(body()) == [None, None, OTHER, OTHER, OTHER]


def test_drop_a_lost_answer_times_out_is_logged_once_and_the_next_read_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        async with (
            IdCardSimulator(scenario(faults=LineFaults(drop=1.0))) as sim,
            SerialLink(sim.device_path) as link,
            IdCardReader(link, retries=0) as reader,
        ):
            for _ in range(2):
                assert isinstance(await read_error(reader), DeviceTimeout)
            no_faults(sim)
            assert await reader.read_card() == SAMPLE_IDENTITY
            assert reader.stats.timeouts == 2
            assert warnings(caplog, "no answer within 0.1 s") == 1

    run_async(body())


def test_drop_one_lost_answer_is_recovered_by_a_retry() -> None:
    async def body() -> None:
        async with (
            IdCardSimulator(scenario(CARD, NONE)) as sim,
            SerialLink(sim.device_path) as link,
            IdCardReader(link, retries=1) as reader,
        ):
            assert sim.modem is not None
            sim.modem.set_manipulator(first_answer_only(lambda data: b""))
            assert await reader.read_card(0.1) is None  # the retry's answer: step two
            assert reader.stats.timeouts == 1

    run_async(body())


def test_corrupt_answers_are_bad_checksums_never_values(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with (
            IdCardSimulator(scenario(faults=LineFaults(corrupt=1.0))) as sim,
            SerialLink(sim.device_path) as link,
            IdCardReader(link, retries=0) as reader,
        ):
            for _ in range(3):
                error = await read_error(reader)
                assert isinstance(error, DeviceProtocolError)
                assert "bad checksum or garbled frame" in str(error)
            no_faults(sim)
            assert await reader.read_card() == SAMPLE_IDENTITY
            assert reader.stats.bad_checksum >= 3
            assert reader.stats.garbled == 3
            assert warnings(caplog, "garbled") == 1

    run_async(body())


def test_corrupt_one_damaged_answer_is_recovered_by_a_retry() -> None:
    async def body() -> None:
        async with (
            IdCardSimulator(scenario(CARD, SimulatedAnswer("card", OTHER))) as sim,
            SerialLink(sim.device_path) as link,
            IdCardReader(link, retries=1) as reader,
        ):
            assert sim.modem is not None
            sim.modem.set_manipulator(first_answer_only(flip_middle_bit))
            assert await reader.read_card(0.2) == OTHER
            assert reader.stats.bad_checksum >= 1

    run_async(body())


def test_garbage_before_answers_is_skipped_and_every_read_succeeds() -> None:
    async def body() -> None:
        async with (
            IdCardSimulator(scenario(CARD, NONE, faults=LineFaults(garbage=1.0, seed=5))) as sim,
            SerialLink(sim.device_path) as link,
            IdCardReader(link, retries=0) as reader,
        ):
            results = [await reader.read_card(0.5) for _ in range(10)]
            assert results == [SAMPLE_IDENTITY, None] * 5
            assert reader.stats.skipped >= 10

    run_async(body())


def test_stall_a_late_answer_to_an_earlier_read_is_never_taken_for_this_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The late card is another read's answer (another person, perhaps): ignored by its seq."""

    async def body() -> None:
        arrived = asyncio.Event()

        def trace(sending: bool, data: bytes) -> None:
            if not sending:  # nothing comes in before the late answer
                arrived.set()

        stalled = scenario(CARD, NONE, faults=LineFaults(stall=1.0, stall_s=0.3))
        async with (
            IdCardSimulator(stalled) as sim,
            SerialLink(sim.device_path, trace=trace) as link,
            IdCardReader(link, retries=0) as reader,
        ):
            assert isinstance(await read_error(reader, 0.05), DeviceTimeout)
            await arrived.wait()
            no_faults(sim)
            assert await reader.read_card() is None
            assert reader.stats.stale == 1
            assert warnings(caplog, "answer to an earlier read ignored") == 1

    run_async(body())


def test_duplicated_answers_are_counted_and_ignored() -> None:
    async def body() -> None:
        async with (
            IdCardSimulator(scenario(CARD, NONE, faults=LineFaults(duplicate=1.0))) as sim,
            SerialLink(sim.device_path) as link,
            IdCardReader(link) as reader,
        ):
            results = [await reader.read_card() for _ in range(4)]
            assert results == [SAMPLE_IDENTITY, None, SAMPLE_IDENTITY, None]
            assert reader.stats.stale >= 3

    run_async(body())


def test_an_invalid_record_is_a_protocol_error_naming_fields_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def invalid_number(data: bytes) -> bytes:
        record = decode(data).frame
        assert isinstance(record, CardRecord)
        return encode(dataclasses.replace(record, id_number=record.id_number + "-!"))

    async def body() -> None:
        async with (
            IdCardSimulator(scenario()) as sim,
            SerialLink(sim.device_path) as link,
            IdCardReader(link) as reader,
        ):
            assert sim.modem is not None
            sim.modem.set_manipulator(first_answer_only(invalid_number))
            error = await read_error(reader, 1.0)
            assert str(error).endswith("card record fields fail validation: id_number")
            assert await reader.read_card() == SAMPLE_IDENTITY
            assert reader.stats.invalid == 1
            assert warnings(caplog, "fail validation: id_number") == 1

    run_async(body())


def test_unplug_is_reported_and_reads_work_again_after_replug(tmp_path: Path) -> None:
    async def body() -> None:
        async with (
            IdCardSimulator(scenario(), link=tmp_path / "ttyID") as sim,
            SerialLink(sim.device_path, reopen_initial_s=0.02, reopen_max_s=0.05) as link,
            IdCardReader(link) as reader,
        ):
            assert await reader.read_card() == SAMPLE_IDENTITY
            await sim.unplug()
            assert isinstance(await read_error(reader), DeviceUnavailable)
            await sim.replug()
            assert await reader.read_card(2.0) == SAMPLE_IDENTITY
            assert reader.stats.unavailable == 1

    run_async(body())


def test_a_mixed_faulty_line_never_yields_a_wrong_identity() -> None:
    """Each identity returned is exactly the one the simulator gave for that very read."""
    faults = LineFaults(drop=0.1, corrupt=0.15, garbage=0.15, duplicate=0.15, seed=8)
    steps = (CARD, SimulatedAnswer("card", OTHER), NONE)

    async def body() -> int:
        async with (
            IdCardSimulator(scenario(*steps, faults=faults)) as sim,
            SerialLink(sim.device_path) as link,
            IdCardReader(link, retries=0) as reader,
        ):
            good = 0
            for _ in range(30):
                try:
                    result = await reader.read_card(0.1)
                except (DeviceTimeout, DeviceProtocolError) as exc:
                    errors_seen.append(exc)
                    continue
                # Requests are never damaged here, so the last answer is this read's.
                assert result == sim.scenario.step_for(len(sim.answered) - 1, 0.0).identity
                good += 1
            return good

    assert run_async(body()) >= 15


def test_cli_prints_a_port_a_driver_reads_the_sample_card_from_and_stops_cleanly() -> None:
    async def body() -> tuple[list[str], IdentityRead | None, int, bytes]:
        process = await asyncio.create_subprocess_exec(
            *SIM_CLI, "idcard", "--duration", "10",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None
        try:
            lines = [(await process.stdout.readline()).decode().strip() for _ in range(2)]
            async with SerialLink(lines[0]) as link, IdCardReader(link) as reader:
                identity = await reader.read_card(2.0)
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = await process.communicate()
        assert process.returncode is not None
        return lines, identity, process.returncode, stderr

    lines, identity, returncode, stderr = run_async(body())
    assert lines[0].startswith("/dev/pts/")
    assert lines[1] == "idcard: per_read, 2 steps (card, none)"
    assert identity == SAMPLE_IDENTITY
    assert returncode == 0, stderr.decode()
