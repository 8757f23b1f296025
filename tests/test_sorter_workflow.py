"""The sorter workflow against the simulated PLC over Modbus TCP, on a real clock.

The gateway is played by the test: a task takes each induction the workflow emits and
calls ``on_decision`` on the loop thread, as the device runtime does. The PLC simulator
never times out by itself (its own decision timeout is huge), so every divert it sees was
written by the workflow. Waits are on queues, or polls with a deadline for state no event
announces; timing is measured from the Modbus frames themselves (the driver's trace hook).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import pytest
from pydantic import BaseModel, ValidationError

from contracts import (
    AnyBody,
    AnyEnvelope,
    DecisionMessage,
    DivertBody,
    InductionBody,
    InductionEnvelope,
    SortDecision,
    make_envelope,
)
from contracts.station import SortMissBody
from edge.workflows import ScanSource
from edge.workflows.sorter import SorterWorkflow, SorterWorkflowConfig
from firmware_bridge.scanner.driver import SerialScanner
from firmware_bridge.serial_link import SerialLink
from firmware_bridge.sim.scanner import ScannerScenario, ScannerSimulator, SimulatedCode
from firmware_bridge.sim.sorter import SimParcel, SorterScenario, SorterSimulator
from firmware_bridge.sorter import registers as reg
from firmware_bridge.sorter.driver import SorterPlc
from tests.helpers import run_async

pytestmark = pytest.mark.hil

B = TypeVar("B", bound=BaseModel)

EXCEPTION = 24
LOGGER = "edge.workflows.sorter"


def still(*parcels: SimParcel, **settings: object) -> SorterScenario:
    """A PLC that never gives up on a parcel itself and confirms it as soon as it is diverted."""
    base: dict[str, object] = {"travel_s": 0.0, "decision_timeout_s": 1e6, "ack_timeout_s": 1e6}
    return SorterScenario(parcels=parcels, **(base | settings))  # type: ignore[arg-type]


def barcoded(*transactions: int) -> tuple[SimParcel, ...]:
    return tuple(SimParcel(0, t, barcode=f"SF{t:010d}") for t in transactions)


class Station:
    """The workflow's ``emit``: envelopes as the outbox makes them; inductions also queued."""

    def __init__(self, *, publish_inductions: bool = True) -> None:
        self.envelopes: list[AnyEnvelope] = []
        self.inductions: asyncio.Queue[InductionEnvelope] = asyncio.Queue()
        self.emitted_at: dict[str, float] = {}
        self._publish_inductions = publish_inductions

    def emit(self, body: AnyBody) -> AnyEnvelope | None:
        if isinstance(body, InductionBody) and not self._publish_inductions:
            return None
        envelope = make_envelope(
            station="county-1",
            device="sorter-1",
            boot=1,
            seq=len(self.envelopes) + 1,
            ts=datetime.now(UTC),
            body=body,
        )
        self.envelopes.append(envelope)
        self.emitted_at[envelope.id] = time.monotonic()
        if isinstance(envelope, InductionEnvelope):
            self.inductions.put_nowait(envelope)
        return envelope

    def bodies(self, kind: type[B]) -> list[B]:
        return [e.body for e in self.envelopes if isinstance(e.body, kind)]


def decision(
    induction: InductionEnvelope,
    chute: int,
    *,
    transaction: int | None = None,
    request: str | None = None,
) -> DecisionMessage:
    """The gateway's answer to ``induction`` (or, with overrides, to something else)."""
    body = SortDecision(
        transaction=induction.body.transaction if transaction is None else transaction,
        waybill=induction.body.barcode,
        chute=chute,
        reason=None if chute != EXCEPTION else "no_realname",
    )
    return DecisionMessage(
        id=f"dec:{induction.id}",
        ts=datetime.now(UTC),
        request=induction.id if request is None else request,
        body=body,
    )


class Timeline:
    """The driver's trace hook: when each mailbox poll and each divert command was sent."""

    def __init__(self) -> None:
        self.polls: list[float] = []
        self.commands: list[float] = []

    def trace(self, sending: bool, data: bytes) -> None:
        if not sending or len(data) < 10:
            return
        function, address = data[7], int.from_bytes(data[8:10], "big")
        if function == 3 and address == reg.INDUCTION:
            self.polls.append(time.monotonic())
        elif function == 16 and address == reg.COMMAND:
            self.commands.append(time.monotonic())

    def poll_before(self, moment: float) -> float:
        """The last poll sent before ``moment``: the read that found an induction emitted then."""
        return max(t for t in self.polls if t <= moment)


@dataclass
class Rig:
    sim: SorterSimulator
    plc: SorterPlc
    station: Station
    workflow: SorterWorkflow
    timeline: Timeline

    def commands(self) -> list[tuple[int, int]]:
        """(transaction, chute) of every divert the PLC accepted."""
        return [
            (command.transaction, command.chute)
            for command, result in self.sim.plc.commands
            if command is not None and result is reg.CommandResult.ACCEPTED
        ]

    def confirmations(self) -> list[DivertBody]:
        return self.station.bodies(DivertBody)


@asynccontextmanager
async def running(
    scenario: SorterScenario,
    *,
    deadline_ms: int = 1000,
    scanner: ScanSource | None = None,
    station: Station | None = None,
    **settings: object,
) -> AsyncIterator[Rig]:
    """The simulated PLC on a real clock and the workflow polling it every 5 ms."""
    timeline = Timeline()
    async with SorterSimulator(scenario) as sim:
        host, port = sim.address
        config = SorterWorkflowConfig(
            host=host,
            port=port,
            poll_interval_ms=5,
            timeout_ms=150,
            deadline_ms=deadline_ms,
            exception_chute=EXCEPTION,
            **settings,
        )
        async with config.make_plc(trace=timeline.trace) as plc:
            station = station or Station()
            workflow = SorterWorkflow(config, plc, station.emit, scanner=scanner)
            stop = asyncio.Event()
            task = asyncio.create_task(workflow.run(stop))
            try:
                yield Rig(sim, plc, station, workflow, timeline)
            finally:
                stop.set()
                await task


async def until(predicate: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    """Poll with a deadline, for state no event announces (a confirmation, a counter)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


async def answer(rig: Rig, chute_of: Callable[[int], int], count: int) -> None:
    """Play the gateway: answer each of the next ``count`` inductions as it is emitted."""
    for _ in range(count):
        induction = await rig.station.inductions.get()
        rig.workflow.on_decision(decision(induction, chute_of(induction.body.transaction)))


def divert_bodies(triples: Iterable[tuple[int, int, str]]) -> list[DivertBody]:
    return [DivertBody(transaction=t, chute=c, outcome=o) for t, c, o in triples]


def test_a_decision_in_time_diverts_to_its_chute_and_the_confirmation_is_emitted() -> None:
    async def body() -> Rig:
        async with running(still(*barcoded(1000))) as rig:
            await answer(rig, lambda _: 7, 1)
            await until(lambda: rig.confirmations(), "the confirmation")
            return rig

    rig = run_async(body())
    assert rig.commands() == [(1000, 7)]
    assert rig.confirmations() == divert_bodies([(1000, 7, "diverted")])
    assert rig.station.bodies(InductionBody) == [
        InductionBody(transaction=1000, barcode="SF0000001000")
    ]
    assert rig.station.bodies(SortMissBody) == []
    assert (rig.workflow.stats.routed, rig.workflow.stats.deadline_missed) == (1, 0)


def test_no_decision_sends_the_parcel_to_the_exception_chute_at_the_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The deadline runs from the PLC read, and the divert follows it closely."""

    async def body() -> Rig:
        async with running(still(*barcoded(1000)), deadline_ms=100) as rig:
            await until(lambda: rig.confirmations(), "the confirmation")
            return rig

    with caplog.at_level(logging.INFO, logger=LOGGER):
        rig = run_async(body())
    assert rig.commands() == [(1000, EXCEPTION)]
    induction = rig.station.envelopes[0]
    read_no_earlier_than = rig.timeline.poll_before(rig.station.emitted_at[induction.id])
    waited = rig.timeline.commands[0] - read_no_earlier_than
    assert 0.100 <= waited <= 0.250, waited
    (miss,) = rig.station.bodies(SortMissBody)
    assert (miss.transaction, miss.waybill, miss.chute) == (1000, "SF0000001000", EXCEPTION)
    assert miss.request == induction.id
    assert 100 <= miss.waited_ms <= 250
    assert rig.confirmations() == divert_bodies([(1000, EXCEPTION, "diverted")])
    assert rig.workflow.stats.deadline_missed == 1
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 1
    assert "transaction 1000" in lines[0]
    assert "no decision" in lines[0]


def test_a_decision_after_the_deadline_is_counted_as_late_and_ignored() -> None:
    async def body() -> Rig:
        async with running(still(*barcoded(1000)), deadline_ms=100) as rig:
            induction = await rig.station.inductions.get()
            await until(lambda: rig.station.bodies(SortMissBody), "the miss")
            rig.workflow.on_decision(decision(induction, 7))
            await until(lambda: rig.confirmations(), "the confirmation")
            return rig

    rig = run_async(body())
    assert rig.commands() == [(1000, EXCEPTION)]
    assert rig.confirmations() == divert_bodies([(1000, EXCEPTION, "diverted")])
    stats = rig.workflow.stats
    assert (stats.late_decisions, stats.routed, stats.stray_decisions) == (1, 0, 0)


def test_a_decision_for_another_request_or_transaction_does_not_divert_the_parcel() -> None:
    async def body() -> Rig:
        async with running(still(*barcoded(1000)), deadline_ms=150) as rig:
            induction = await rig.station.inductions.get()
            rig.workflow.on_decision(decision(induction, 5, request="sorter-1:1:999"))
            rig.workflow.on_decision(decision(induction, 6, transaction=4242))
            await until(lambda: rig.confirmations(), "the confirmation")
            return rig

    rig = run_async(body())
    assert rig.commands() == [(1000, EXCEPTION)]
    stats = rig.workflow.stats
    assert (stats.stray_decisions, stats.mismatched_decisions, stats.routed) == (1, 1, 0)
    assert stats.deadline_missed == 1


def test_inductions_in_flight_together_each_get_their_own_decision() -> None:
    """Four parcels wait at once; answered in reverse order, each goes to its own chute."""
    transactions = (2000, 2001, 2002, 2003)

    async def body() -> Rig:
        async with running(still(*barcoded(*transactions)), deadline_ms=3000) as rig:
            waiting = [await rig.station.inductions.get() for _ in transactions]
            assert rig.commands() == []  # all four in flight before any answer
            for induction in reversed(waiting):
                transaction = induction.body.transaction
                rig.workflow.on_decision(decision(induction, transaction % 20 + 1))
            await until(lambda: len(rig.confirmations()) == 4, "four confirmations")
            return rig

    rig = run_async(body())
    expected = {(t, t % 20 + 1) for t in transactions}
    assert set(rig.commands()) == expected
    assert {(b.transaction, b.chute) for b in rig.confirmations()} == expected
    assert rig.workflow.stats.routed == 4


def test_confirmations_of_every_outcome_are_emitted() -> None:
    scenario = still(
        SimParcel(0, 3000, barcode="SF3000"),
        SimParcel(0, 3001, barcode="SF3001"),
        SimParcel(0, 3002, barcode="SF3002", outcome="recirculated"),
        jammed_chutes=frozenset({13}),
    )
    chutes = {3000: 3, 3001: 13, 3002: 5}

    async def body() -> Rig:
        async with running(scenario) as rig:
            await answer(rig, chutes.__getitem__, 3)
            await until(lambda: len(rig.confirmations()) == 3, "three confirmations")
            return rig

    rig = run_async(body())
    expected = [(3000, 3, "diverted"), (3001, 13, "missed"), (3002, 5, "recirculated")]
    assert sorted(rig.confirmations(), key=lambda b: b.transaction) == divert_bodies(expected)
    assert rig.workflow.stats.confirmations == 3


def test_with_the_link_down_every_parcel_goes_to_the_exception_chute_and_the_belt_runs_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> Rig:
        async with running(still(*barcoded(4000, 4001, 4002)), deadline_ms=100) as rig:
            await until(lambda: len(rig.confirmations()) == 3, "three confirmations")
            return rig

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        rig = run_async(body())
    assert rig.commands() == [(t, EXCEPTION) for t in (4000, 4001, 4002)]
    misses = rig.station.bodies(SortMissBody)
    assert [m.transaction for m in misses] == [4000, 4001, 4002]
    assert rig.workflow.stats.deadline_missed == 3
    assert sum(1 for r in caplog.records if "exception chute" in r.getMessage()) == 3


def test_an_induction_the_outbox_cannot_keep_goes_to_the_exception_chute_at_once() -> None:
    """No decision can come for an unpublished induction, so the deadline is not waited."""

    async def body() -> tuple[Rig, float]:
        station = Station(publish_inductions=False)
        started = time.monotonic()
        async with running(still(*barcoded(1000)), deadline_ms=5000, station=station) as rig:
            await until(lambda: rig.confirmations(), "the confirmation")
            return rig, time.monotonic() - started

    rig, took = run_async(body())
    assert took < 2.5  # the deadline is 5 s
    assert rig.commands() == [(1000, EXCEPTION)]
    (miss,) = rig.station.bodies(SortMissBody)
    assert miss.request is None
    assert rig.workflow.stats.not_published == 1


def test_an_induction_by_scan_slot_takes_the_tunnel_read_of_its_slot() -> None:
    """Slot 4 has a read and is published with its code; slot 9 has none and goes without."""
    codes = (
        SimulatedCode("4;SF1000000004", "code128", 0.0),
        SimulatedCode("NO-SLOT-HERE", "code128", 0.0),
    )
    scanner_scenario = ScannerScenario(codes, repeat=False)
    parcels = (SimParcel(0, 5000, scan_slot=4), SimParcel(0, 5001, scan_slot=9))

    async def body() -> Rig:
        async with (
            ScannerSimulator(scanner_scenario, autoplay=False) as scanner_sim,
            SerialLink(scanner_sim.device_path) as link,
            SerialScanner(link, reader="tunnel") as scanner,
            running(still(*parcels), scanner=scanner, scan_wait_ms=300) as rig,
        ):
            await scanner_sim.play()
            await answer(rig, lambda t: t - 4997, 2)
            await until(lambda: len(rig.confirmations()) == 2, "two confirmations")
            return rig

    rig = run_async(body())
    assert rig.station.bodies(InductionBody) == [
        InductionBody(transaction=5000, barcode="SF1000000004", scan_slot=4),
        InductionBody(transaction=5001, scan_slot=9),
    ]
    assert sorted(rig.commands()) == [(5000, 3), (5001, 4)]
    stats = rig.workflow.stats
    assert (stats.scans, stats.unreadable_scans, stats.slots_without_scan) == (2, 1, 1)


def test_the_workflow_keeps_polling_through_a_pulled_plc_cable() -> None:
    """A divert that cannot be written is counted; the next parcel is routed after replug."""

    async def body() -> Rig:
        async with running(still(*barcoded(6000, 6001)), deadline_ms=3000) as rig:
            first = await rig.station.inductions.get()
            await rig.sim.unplug()
            rig.workflow.on_decision(decision(first, 3))
            await until(lambda: rig.workflow.stats.divert_failures == 1, "the failed divert")
            await rig.sim.replug()
            await answer(rig, lambda _: 4, 1)
            await until(lambda: rig.confirmations(), "the confirmation")
            return rig

    rig = run_async(body())
    assert rig.commands() == [(6001, 4)]
    assert rig.confirmations() == divert_bodies([(6001, 4, "diverted")])
    assert (rig.workflow.stats.divert_failures, rig.workflow.stats.routed) == (1, 1)
    assert rig.plc.stats["disconnects"] >= 1


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"deadline_ms": 100, "poll_interval_ms": 30}, "quarter of deadline_ms"),
        ({"scan_wait_ms": 300}, "below deadline_ms"),
        ({"scan_telegram": "^(?P<code>.+)$"}, "named groups"),
        ({"scan_telegram": "(("}, "not a regular expression"),
        ({"chute": 3}, "Extra inputs"),
    ],
)
def test_config_refuses_settings_the_belt_cannot_work_with(
    settings: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        SorterWorkflowConfig.model_validate({"host": "plc", "exception_chute": 24} | settings)
