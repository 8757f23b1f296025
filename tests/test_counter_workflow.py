"""Counter acceptance against the real scanner and ID-card simulators on ptys.

Every test also checks that no name, document number, issuing authority or phone
number shows in a log record (at DEBUG), a refusal or the clerk's terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import pytest

from contracts import AnyBody, AnyEnvelope, IdentityRead, decode, encode, make_envelope
from contracts.station import AcceptanceBody
from edge.clerk import run_clerk_terminal
from edge.terminal import read_lines
from edge.workflows.counter import (
    CounterConfig,
    CounterRefusal,
    CounterStatus,
    CounterWorkflow,
    IdCardConfig,
)
from firmware_bridge.idcard.driver import IdCardReader
from firmware_bridge.scanner.driver import SerialScanner
from firmware_bridge.serial_link import SerialLink
from firmware_bridge.sim.idcard import (
    SAMPLE_IDENTITY,
    IdCardScenario,
    IdCardSimulator,
    SimulatedAnswer,
)
from firmware_bridge.sim.scanner import ScannerScenario, ScannerSimulator, SimulatedCode
from tests.helpers import run_async

pytestmark = pytest.mark.hil

NOW = dt.datetime(2026, 6, 1, 2, 0, tzinfo=dt.UTC)
WAYBILL = "YT2412345678901"
XICHENG = "110102000000"
PHONE = "13800138000"
BAD_CHECK = SAMPLE_IDENTITY.model_copy(
    update={"name": "王五", "id_number": "110105194912310021", "authority": "某市公安局"}
)
EXPIRED = SAMPLE_IDENTITY.model_copy(
    update={"valid_from": dt.date(2005, 1, 1), "valid_until": dt.date(2025, 1, 1)}
)
PASSPORT = IdentityRead(
    name="JOHN SMITH",
    id_type="passport",
    id_number="EA1234567",
    authority="MINISTRY OF FOREIGN AFFAIRS",
    valid_from=dt.date(2020, 1, 1),
    valid_until=dt.date(2030, 1, 1),
)
PERSONAL = [
    value
    for identity in (SAMPLE_IDENTITY, BAD_CHECK, PASSPORT)
    for value in (identity.name, identity.id_number, identity.authority)
] + [PHONE, "0013"]
CARD = SimulatedAnswer("card", SAMPLE_IDENTITY)
NONE = SimulatedAnswer("none")
CONFIG = CounterConfig(
    idcard=IdCardConfig(port="/dev/null"),
    clerk="clerk-1",
    destinations={"西城区": XICHENG, "100032": XICHENG},
    id_wait_s=0.3,
    id_read_timeout_s=0.5,
    id_poll_s=0.02,
)
texts_seen: list[str] = []
"""Refusals and terminal output of the current test, for the personal-data check."""


@pytest.fixture(autouse=True)
def no_personal_data_anywhere(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    texts_seen.clear()
    yield
    leaks = [value for value in PERSONAL for text in [caplog.text, *texts_seen] if value in text]
    assert leaks == []


@dataclass
class FakeOutbox:
    """The device runtime's ``emit``: envelopes numbered as the outbox would."""

    envelopes: list[AnyEnvelope] = field(default_factory=list)
    refuse: bool = False

    def __call__(self, body: AnyBody) -> AnyEnvelope | None:
        if self.refuse:
            return None
        envelope = make_envelope(
            station="village-1", device="counter-1", boot=1, seq=len(self.envelopes) + 1,
            ts=NOW, body=body,
        )  # fmt: skip
        self.envelopes.append(envelope)
        return envelope

    def acceptances(self) -> list[AcceptanceBody]:
        return [e.body for e in self.envelopes if isinstance(e.body, AcceptanceBody)]


@dataclass
class Bench:
    workflow: CounterWorkflow
    scanner_sim: ScannerSimulator
    scanner: SerialScanner
    outbox: FakeOutbox

    async def scan(self, code: str = WAYBILL) -> None:
        await self.scanner_sim.scan(SimulatedCode(code, "code128", 0.0))


@contextlib.asynccontextmanager
async def counter(
    *cards: SimulatedAnswer,
    config: CounterConfig = CONFIG,
    now: dt.datetime = NOW,
) -> AsyncIterator[Bench]:
    """A counter wired to a simulated scanner and ID-card reader over real ptys."""
    codes = ScannerScenario((SimulatedCode(WAYBILL, "code128", 0.0),), repeat=False)
    async with (
        ScannerSimulator(codes, autoplay=False) as scanner_sim,
        SerialLink(scanner_sim.device_path) as scanner_link,
        SerialScanner(scanner_link, reader="counter-scanner") as scanner,
        IdCardSimulator(IdCardScenario(cards or (CARD,))) as id_sim,
        SerialLink(id_sim.device_path) as id_link,
        IdCardReader(id_link, reader="counter-id", retries=0) as reader,
    ):
        outbox = FakeOutbox()
        workflow = CounterWorkflow(config, scanner, reader, outbox, clock=lambda: now)
        yield Bench(workflow, scanner_sim, scanner, outbox)


def check(error: pytest.ExceptionInfo[CounterRefusal], reason: str) -> CounterRefusal:
    texts_seen.append(f"{error.value!s} {error.value!r}")
    assert error.value.reason == reason, error.value
    return error.value


async def accept_sample(bench: Bench, *, waybill: str = WAYBILL) -> AnyEnvelope:
    wf = bench.workflow
    await bench.scan(waybill)
    assert await wf.begin(5) == waybill
    await wf.read_id()
    wf.inspect("书籍 books", True)
    wf.destination(XICHENG)
    return wf.submit()


def test_happy_path_emits_one_acceptance_with_every_piece() -> None:
    async def body() -> None:
        async with counter() as bench:
            wf = bench.workflow
            await bench.scan()
            assert await wf.begin(5) == WAYBILL
            sender = await wf.read_id()
            assert (sender.name, sender.number) == ("张*", "1101**********002X")
            assert wf.set_phone("138 0013 8000") == "138****8000"
            wf.inspect(" 书籍 books ", True, ["", " "])
            assert wf.destination(" 西城区 ") == XICHENG
            shown = wf.status
            texts_seen.append(repr(shown))
            assert str(shown.sender) == "张* 1101**********002X (resident)"
            envelope = wf.submit("clerk-7")
            assert envelope.kind == "acceptance"
            assert decode(encode(envelope)) == envelope
            [accepted] = bench.outbox.acceptances()
            assert accepted.waybill == WAYBILL
            assert accepted.destination == XICHENG
            assert accepted.sender == SAMPLE_IDENTITY
            assert accepted.sender_phone == PHONE
            assert accepted.inspection.inspected is True
            assert accepted.inspection.declared_contents == "书籍 books"
            assert accepted.inspection.refused_items == []
            assert accepted.clerk == "clerk-7"
            assert wf.status == CounterStatus()  # the identity is dropped
            assert wf.stats.accepted == 1
            assert not wf.stats.refused
            with pytest.raises(CounterRefusal) as error:
                wf.submit()  # nothing at the counter any more
            check(error, "no_waybill")
            with pytest.raises(CounterRefusal) as error:
                wf.enter_waybill(WAYBILL)
            check(error, "duplicate_waybill")

    run_async(body())


def test_missing_pieces_are_refused_with_their_reason_and_kept_pieces_stay() -> None:
    async def body() -> None:
        async with counter() as bench:
            wf = bench.workflow
            with pytest.raises(CounterRefusal) as error:
                await wf.read_id()
            check(error, "no_waybill")
            with pytest.raises(CounterRefusal) as error:
                await wf.begin(0.05)
            assert "no scan" in check(error, "no_waybill").detail
            await bench.scan("NOT A WAYBILL")
            with pytest.raises(CounterRefusal) as error:
                await wf.begin(5)
            check(error, "bad_waybill")

            wf.enter_waybill(WAYBILL)
            with pytest.raises(CounterRefusal) as error:
                wf.submit()
            check(error, "no_identity")
            await wf.read_id()
            with pytest.raises(CounterRefusal) as error:
                wf.submit()
            check(error, "no_inspection")
            with pytest.raises(CounterRefusal) as error:
                wf.inspect("衣服 clothes", False)
            check(error, "not_inspected")
            with pytest.raises(CounterRefusal) as error:
                wf.inspect("  ", True)
            check(error, "no_declared_contents")
            with pytest.raises(CounterRefusal) as error:
                wf.inspect("衣服 clothes", True, ["打火机 lighter", "鞭炮"])
            assert check(error, "refused_items").detail == "打火机 lighter、鞭炮"
            with pytest.raises(CounterRefusal) as error:
                wf.submit()
            check(error, "no_inspection")  # a refused inspection is not recorded
            wf.inspect("衣服 clothes", True)
            with pytest.raises(CounterRefusal) as error:
                wf.submit()
            check(error, "no_destination")
            for bad in ("12345", "990000000000", "东城区", ""):
                with pytest.raises(CounterRefusal) as error:
                    wf.destination(bad)
                check(error, "bad_destination")
            assert wf.destination("100032") == XICHENG
            with pytest.raises(CounterRefusal) as error:
                wf.set_phone("12345")
            check(error, "invalid_phone")
            with pytest.raises(CounterRefusal) as error:
                wf.submit("clerk 1")
            check(error, "no_clerk")
            wf.submit()  # the kept pieces are complete: accepted, configured clerk
            [accepted] = bench.outbox.acceptances()
            assert (accepted.clerk, accepted.sender_phone) == ("clerk-1", None)
            assert wf.stats.refused["bad_destination"] == 4

    run_async(body())


def test_no_card_and_reader_errors_are_refused_and_a_later_card_is_read() -> None:
    async def body() -> None:
        cards = (NONE, SimulatedAnswer("error", error=2), SimulatedAnswer("none", reads=3), CARD)
        async with counter(*cards) as bench:
            wf = bench.workflow
            wf.enter_waybill(WAYBILL)
            with pytest.raises(CounterRefusal) as error:
                await wf.read_id(wait_s=0)  # one read, no card
            check(error, "no_identity")
            with pytest.raises(CounterRefusal) as error:
                await wf.read_id()
            assert "card read failed" in check(error, "id_read_failed").detail
            sender = await wf.read_id()  # polls past three empty reads
            assert sender.name == "张*"

    run_async(body())


@pytest.mark.parametrize(
    ("card", "now", "reason", "detail"),
    [
        (BAD_CHECK, NOW, "invalid_id", "rule check_character"),
        (SAMPLE_IDENTITY, dt.datetime(1940, 1, 1, tzinfo=dt.UTC), "invalid_id", "future_birth"),
        (EXPIRED, NOW, "id_expired", "ended"),
        (PASSPORT.model_copy(update={"id_number": "ABCDEFG"}), NOW, "invalid_id", "passport"),
    ],
)
def test_a_bad_document_is_refused_at_the_counter_with_its_rule(
    card: IdentityRead, now: dt.datetime, reason: str, detail: str
) -> None:
    async def body() -> None:
        async with counter(SimulatedAnswer("card", card), CARD, now=now) as bench:
            wf = bench.workflow
            wf.enter_waybill(WAYBILL)
            with pytest.raises(CounterRefusal) as error:
                await wf.read_id()
            assert detail in check(error, reason).detail
            assert wf.status.sender is None
            with pytest.raises(CounterRefusal) as error:
                wf.submit()
            check(error, "no_identity")

    run_async(body())


def test_a_passport_is_accepted_and_shown_half_masked() -> None:
    async def body() -> None:
        async with counter(SimulatedAnswer("card", PASSPORT)) as bench:
            wf = bench.workflow
            wf.enter_waybill(WAYBILL)
            sender = await wf.read_id()
            assert (sender.name, sender.number) == ("J*********", "EA*****67")
            wf.inspect("文件 documents", True)
            wf.destination(XICHENG)
            wf.submit()
            assert bench.outbox.acceptances()[0].sender == PASSPORT

    run_async(body())


def test_options_uninspected_and_refused_items_taken_out_are_accepted_when_allowed() -> None:
    lenient = CONFIG.model_copy(update={"require_inspection": False, "accept_refused_items": True})

    async def body() -> None:
        async with counter(config=lenient) as bench:
            wf = bench.workflow
            wf.enter_waybill(WAYBILL)
            await wf.read_id()
            wf.inspect("杂物 sundries", False, ["打火机 lighter"])
            wf.destination(XICHENG)
            wf.submit()
            [accepted] = bench.outbox.acceptances()
            assert accepted.inspection.inspected is False
            assert accepted.inspection.refused_items == ["打火机 lighter"]

    run_async(body())


def test_an_outbox_failure_keeps_the_acceptance_for_another_try() -> None:
    async def body() -> None:
        async with counter() as bench:
            bench.outbox.refuse = True
            with pytest.raises(CounterRefusal) as error:
                await accept_sample(bench)
            check(error, "not_kept")
            assert bench.workflow.status.sender is not None
            bench.outbox.refuse = False
            bench.workflow.submit()
            assert len(bench.outbox.acceptances()) == 1

    run_async(body())


def test_begin_takes_the_newest_waiting_scan_and_cancel_drops_the_identity() -> None:
    async def body() -> None:
        async with counter() as bench:
            wf = bench.workflow
            for code in ("SF0000000001", "SF0000000002"):
                await bench.scan(code)
            await wait_for(lambda: bench.scanner.stats.scans == 2, "two scans")
            assert await wf.begin(0.05) == "SF0000000002"
            assert wf.stats.stale_scans == 1
            await wf.read_id()
            wf.cancel()
            assert wf.status == CounterStatus()
            with pytest.raises(CounterRefusal) as error:
                wf.inspect("x", True)
            check(error, "no_waybill")
            stop = asyncio.Event()
            stop.set()
            wf.enter_waybill(WAYBILL)
            await wf.run(stop)  # the workflow stops: what was at the counter is dropped
            assert wf.status.waybill is None
            assert bench.outbox.envelopes == []

    run_async(body())


# --- the clerk's terminal ---------------------------------------------------------------


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """A readiness probe with a deadline, for state no event announces."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def test_terminal_walks_a_scanned_parcel_through_with_refusals_shown() -> None:
    script = "\n".join(
        [
            "",  # [2] card on the reader
            "138 0013 8000",  # [3] phone
            "书籍 books", "n", "",  # [4] not inspected: refused, asked again
            "书籍 books", "y", "刀具，打火机",  # refused items: asked again
            "书籍 books", "y", "",
            "nowhere",  # [5] refused
            "西城区",
            "maybe", "y",  # [6] submit
        ]
    )  # fmt: skip
    out = io.StringIO()

    async def body() -> int:
        async with counter() as bench:
            await bench.scan()
            await wait_for(lambda: bench.scanner.stats.scans == 1, "the scan")
            lines = read_lines(io.StringIO(script + "\n"))
            accepted = await run_clerk_terminal(bench.workflow, lines, out, clerk="clerk-7")
            [acceptance] = bench.outbox.acceptances()
            assert (acceptance.clerk, acceptance.sender_phone) == ("clerk-7", PHONE)
            assert acceptance.inspection.refused_items == []
            return accepted

    assert run_async(body()) == 1
    shown = out.getvalue()
    texts_seen.append(shown)
    assert f"运单 Waybill: {WAYBILL}" in shown
    assert "证件 ID: 张* 1101**********002X (居民身份证 resident ID)" in shown
    assert "手机 Mobile: 138****8000" in shown
    assert "拒收 REFUSED [not_inspected] 未确认验视 / inspection not confirmed" in shown
    assert "拒收 REFUSED [refused_items] 含禁寄物品 / refused items present: 刀具、打火机" in shown
    assert "拒收 REFUSED [bad_destination] 目的地无效 / bad destination" in shown
    assert "请输入 y 或 n / answer y or n" in shown
    assert f"已收寄 ACCEPTED {WAYBILL} (counter-1:1:1)" in shown
    assert shown.rstrip().endswith("再见 Bye")


def test_terminal_on_a_pipe_asks_for_the_clerk_takes_a_typed_waybill_and_cancels() -> None:
    """Lines come through a real pipe (as from a console); nothing is emitted."""
    no_clerk = CONFIG.model_copy(update={"clerk": None})
    out = io.StringIO()
    script = ["bad clerk", "clerk-9", "SF1234567890", "", "c", "SF1234567890", "", "", "q"]

    async def body() -> None:
        read_fd, write_fd = os.pipe()
        with os.fdopen(write_fd, "w", encoding="utf-8") as writer:
            writer.write("\n".join(script) + "\n")
        async with counter(SimulatedAnswer("card", BAD_CHECK), CARD, config=no_clerk) as bench:
            with os.fdopen(read_fd, "r", encoding="utf-8") as reader:
                accepted = await run_clerk_terminal(bench.workflow, read_lines(reader), out)
            assert accepted == 0
            assert bench.outbox.envelopes == []
            assert bench.workflow.status.waybill is None

    run_async(body())
    shown = out.getvalue()
    texts_seen.append(shown)
    assert "工号无效 invalid clerk id" in shown
    assert "收寄员 clerk clerk-9" in shown
    assert "运单 Waybill: SF1234567890" in shown
    assert "[invalid_id] 证件号码无效 / invalid ID document: rule check_character" in shown
    assert "已取消 Cancelled" in shown
    assert shown.count("[3/6]") == 1  # only the second parcel got past the card; q ends it


def test_terminal_takes_a_scan_that_arrives_while_it_waits() -> None:
    out = io.StringIO()
    queue: asyncio.Queue[str] = asyncio.Queue()

    async def typed() -> AsyncIterator[str]:
        while (line := await queue.get()) != "EOF":
            yield line

    async def body() -> None:
        async with counter() as bench:
            terminal = asyncio.ensure_future(run_clerk_terminal(bench.workflow, typed(), out))
            await wait_for(lambda: "[1/6]" in out.getvalue(), "the waybill prompt")
            await bench.scan()
            await wait_for(lambda: "[2/6]" in out.getvalue(), "the card prompt")
            for line in ("", "", "文件", "y", "", XICHENG, "y", "EOF"):
                queue.put_nowait(line)
            assert await terminal == 1
            assert bench.outbox.acceptances()[0].waybill == WAYBILL

    run_async(body())
    texts_seen.append(out.getvalue())


def test_counter_config_refuses_unknown_keys_bad_codes_and_clashing_names() -> None:
    base = {"idcard": {"port": "/dev/ttyUSB2"}}
    assert CounterConfig.model_validate(base).require_inspection is True
    for bad in (
        base | {"clerck": "c1"},
        base | {"destinations": {"西城区": "11010200000"}},
        base | {"destinations": {"Xicheng": XICHENG, " xicheng ": XICHENG}},
    ):
        with pytest.raises(ValueError, match="validation error"):
            CounterConfig.model_validate(bad)
