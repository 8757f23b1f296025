"""The sorter PLC driver against its simulator: Modbus TCP on 127.0.0.1 through the fault proxy.

The simulated PLC runs on a fake clock that only the tests move, so the PLC itself never
times out on its own; every repeat it makes is one a test asked for. Line faults are
seeded. Nothing here waits by sleeping: tests wait for events, or poll a counter with a
deadline for readiness.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from contracts import DivertBody, InductionBody
from firmware_bridge.sim import sorter_cli
from firmware_bridge.sim.faults import LineFaults
from firmware_bridge.sim.sorter import SimParcel, SorterScenario, SorterSimulator
from firmware_bridge.sorter.driver import DivertRejected, SorterPlc
from tests.helpers import SIM_CLI, FakeClock, run_async

pytestmark = pytest.mark.hil

T = TypeVar("T")
DRIVER_LOG = "firmware_bridge.sorter.driver"


async def until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll for readiness with a deadline (for states no event announces)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def fast_plc(sim: SorterSimulator, **kwargs: float) -> SorterPlc:
    settings = {
        "poll_interval_s": 0.005,
        "timeout_s": 0.15,
        "command_timeout_s": 0.5,
        "reconnect_initial_s": 0.01,
        "reconnect_max_s": 0.05,
    } | kwargs
    return SorterPlc(*sim.address, **settings)  # type: ignore[arg-type]


def parcels(count: int) -> tuple[SimParcel, ...]:
    return tuple(SimParcel(0, 1000 + i, barcode=f"SF{i:010d}") for i in range(count))


def chute_of(transaction: int) -> int:
    return transaction % 20 + 1


def still(**settings: object) -> SorterScenario:
    """A PLC that never times out by itself and sends parcels on at once (travel 0)."""
    base: dict[str, object] = {"travel_s": 0.0, "decision_timeout_s": 1e6, "ack_timeout_s": 1e6}
    return SorterScenario(**(base | settings))  # type: ignore[arg-type]


async def sort_all(
    plc: SorterPlc,
    expected: int,
    *,
    divert: Callable[[int], int | None] = chute_of,
    on_event: Callable[[InductionBody | DivertBody], Awaitable[None]] | None = None,
) -> tuple[list[InductionBody], list[DivertBody]]:
    """Consume events, diverting each induction, until ``expected`` confirmations came."""
    inducted: list[InductionBody] = []
    confirmed: list[DivertBody] = []
    async for event in plc.events():
        if isinstance(event, InductionBody):
            inducted.append(event)
            chute = divert(event.transaction)
            if chute is not None:
                await plc.divert(event.transaction, chute)
        else:
            confirmed.append(event)
        if on_event is not None:
            await on_event(event)
        if len(confirmed) == expected:
            break
    return inducted, confirmed


def diverted(scenario: SorterScenario) -> list[DivertBody]:
    return [
        DivertBody(transaction=p.transaction, chute=chute_of(p.transaction), outcome="diverted")
        for p in scenario.parcels
    ]


def warnings_about(caplog: pytest.LogCaptureFixture, kind: str) -> int:
    return sum(
        1
        for record in caplog.records
        if record.name == DRIVER_LOG
        and record.levelno == logging.WARNING
        and f"stats[{kind!r}]" in record.getMessage()
    )


def test_every_parcel_is_inducted_diverted_and_confirmed_once() -> None:
    scenario = still(
        parcels=(
            SimParcel(0, 1, barcode="SF1000000001"),
            SimParcel(0, 2, scan_slot=4),
            SimParcel(0, 3, barcode="YT2000000003", repeat_induction=True),
            SimParcel(0, 4, barcode="ZT3000000004", outcome="recirculated"),
            SimParcel(0, 5, barcode="JD4000000005", repeat_confirmation=True),
            SimParcel(0, 6, barcode="JD4000000006"),
        ),
        jammed_chutes=frozenset({13}),
    )
    chutes = {1: 7, 2: 8, 3: 9, 4: 10, 5: 11, 6: 13}

    async def body() -> None:
        async with (
            SorterSimulator(scenario, clock=FakeClock()) as sim,
            # A clean line: a generous timeout, so a busy CI machine is not counted as a fault.
            fast_plc(sim, timeout_s=2.0) as plc,
        ):
            inducted, confirmed = await sort_all(plc, 6, divert=chutes.get)
            assert inducted == [parcel.body for parcel in scenario.parcels]
            assert sorted(confirmed, key=lambda body: body.transaction) == [
                DivertBody(transaction=1, chute=7, outcome="diverted"),
                DivertBody(transaction=2, chute=8, outcome="diverted"),
                DivertBody(transaction=3, chute=9, outcome="diverted"),
                DivertBody(transaction=4, chute=10, outcome="recirculated"),
                DivertBody(transaction=5, chute=11, outcome="diverted"),
                DivertBody(transaction=6, chute=13, outcome="missed"),
            ]
            # The PLC posted transaction 3 twice; the driver yielded it once.
            assert [body.transaction for body in sim.plc.inductions].count(3) == 2
            assert plc.stats["duplicates"] >= 1
            faults = ("timeouts", "bad_checksum", "protocol_errors", "unexpected_bytes")
            assert [plc.stats[kind] for kind in faults] == [0, 0, 0, 0]

    run_async(body())


def test_a_plc_that_reposts_after_a_host_timeout_yields_the_induction_once() -> None:
    scenario = still(parcels=parcels(2), ack_timeout_s=5.0)
    clock = FakeClock()

    async def body() -> None:
        async with SorterSimulator(scenario, clock=clock) as sim, fast_plc(sim) as plc:

            async def host_is_slow(event: InductionBody | DivertBody) -> None:
                if isinstance(event, InductionBody) and event.transaction == 1000:
                    clock.now += 6.0  # past the PLC's ack timeout before the host acks
                    await plc.divert(1001, 1)  # any request runs the PLC: it reposts now

            with pytest.raises(DivertRejected, match="unknown transaction"):
                await sort_all(plc, 2, on_event=host_is_slow)
            inducted, confirmed = await sort_all(plc, 2)
            assert [body.transaction for body in sim.plc.inductions][:2] == [1000, 1000]
            assert [body.transaction for body in inducted] == [1001]
            assert {body.transaction for body in confirmed} == {1000, 1001}
            assert plc.stats["duplicates"] == 1

    run_async(body())


def test_repeating_an_accepted_divert_sends_nothing() -> None:
    async def body() -> None:
        async with (
            SorterSimulator(still(parcels=parcels(1)), clock=FakeClock()) as sim,
            fast_plc(sim) as plc,
        ):

            async def divert_again(event: InductionBody | DivertBody) -> None:
                await plc.divert(event.transaction, chute_of(event.transaction))

            await sort_all(plc, 1, on_event=divert_again)
            assert len(sim.plc.commands) == 1
            assert plc.stats["repeated_commands"] == 2  # after the induction and the confirmation

    run_async(body())


FAULT_COUNTERS = {
    "drop": ("timeouts",),
    "stall": ("timeouts",),
    "corrupt": ("bad_checksum", "protocol_errors"),
    "garbage": ("unexpected_bytes", "timeouts", "protocol_errors"),
    "duplicate": ("unexpected_bytes",),  # pymodbus drops a repeated answer without a word
}


@pytest.mark.parametrize("fault", list(FAULT_COUNTERS))
def test_line_faults_are_counted_and_logged_and_no_event_is_lost_or_corrupted(
    fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    faults = LineFaults(**{fault: 0.15}, stall_s=0.1, seed=4)
    scenario = still(parcels=parcels(8), faults=faults)

    async def body() -> None:
        async with (
            SorterSimulator(scenario, clock=FakeClock()) as sim,
            fast_plc(sim, timeout_s=0.06) as plc,
        ):
            inducted, confirmed = await sort_all(plc, 8)
            assert inducted == [parcel.body for parcel in scenario.parcels]
            assert confirmed == diverted(scenario)
            assert sim.proxy is not None
            assert sim.proxy.injected[fault] >= 1
            counted = sum(plc.stats[kind] for kind in FAULT_COUNTERS[fault])
            logged = sum(warnings_about(caplog, kind) for kind in FAULT_COUNTERS[fault])
            assert 1 <= logged <= counted

    with caplog.at_level(logging.WARNING, logger=DRIVER_LOG):
        run_async(body())


def test_a_plc_that_never_answers_is_logged_once_however_often_it_times_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scenario = still(parcels=parcels(1), faults=LineFaults(drop=1.0))

    async def body() -> None:
        async with (
            SorterSimulator(scenario, clock=FakeClock()) as sim,
            fast_plc(sim, timeout_s=0.05) as plc,
        ):
            consumer = asyncio.create_task(sort_all(plc, 1))
            await until(lambda: plc.stats["timeouts"] >= 4, "four timeouts")
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)

    with caplog.at_level(logging.WARNING, logger=DRIVER_LOG):
        run_async(body())
    assert warnings_about(caplog, "timeouts") == 1


def test_unplugged_plc_is_reconnected_with_backoff_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scenario = still(parcels=parcels(6))

    async def body() -> None:
        async with SorterSimulator(scenario, clock=FakeClock()) as sim, fast_plc(sim) as plc:

            async def replug_after_some_failures() -> None:
                await until(lambda: plc.stats["connect_failures"] >= 3, "three failed connects")
                await sim.replug()

            replugger: list[asyncio.Task[None]] = []

            async def unplug_after_two(event: InductionBody | DivertBody) -> None:
                if isinstance(event, DivertBody) and event.transaction == 1001:
                    await sim.unplug()
                    replugger.append(asyncio.create_task(replug_after_some_failures()))

            inducted, confirmed = await sort_all(plc, 6, on_event=unplug_after_two)
            await asyncio.gather(*replugger)
            assert inducted == [parcel.body for parcel in scenario.parcels]
            assert confirmed == diverted(scenario)
            assert (plc.stats["disconnects"], plc.stats["reconnects"]) == (1, 1)

    with caplog.at_level(logging.INFO, logger=DRIVER_LOG):
        run_async(body())
    unavailable = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(unavailable) == 1
    assert "reconnecting with backoff" in unavailable[0].getMessage()


def test_a_divert_the_plc_refuses_raises_and_is_not_remembered() -> None:
    async def body() -> None:
        async with (
            SorterSimulator(still(parcels=parcels(1), chutes=10), clock=FakeClock()) as sim,
            fast_plc(sim) as plc,
        ):
            with pytest.raises(DivertRejected, match="invalid chute") as caught:
                await plc.divert(1000, 99)
            assert caught.value.result.name == "INVALID_CHUTE"
            with pytest.raises(DivertRejected, match="unknown transaction"):
                await plc.divert(5555, 3)
            await plc.divert(1000, 3)
            await plc.divert(1000, 3)
            assert plc.stats["repeated_commands"] == 1  # only the accepted one is remembered

    run_async(body())


def test_simulator_cli_prints_an_address_a_driver_can_use_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    scenario = tmp_path / "one.toml"
    scenario.write_text('[[parcels]]\nat_s = 0\ntransaction = 42\nbarcode = "SF42"\n')

    async def body() -> tuple[list[str], InductionBody | DivertBody, int, bytes]:
        process = await asyncio.create_subprocess_exec(
            *SIM_CLI, "sorter", "--scenario", str(scenario),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None
        try:
            lines = [(await process.stdout.readline()).decode().strip() for _ in range(2)]
            host, port = lines[0].rsplit(":", 1)
            async with SorterPlc(host, int(port), poll_interval_s=0.01) as plc:
                event = await anext(aiter(plc.events()))
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = await process.communicate()
        assert process.returncode is not None
        return lines, event, process.returncode, stderr

    lines, event, returncode, stderr = run_async(body())
    assert lines[0].startswith("127.0.0.1:")
    assert lines[1] == "unit 1, holding registers 0-42, chutes 1-24: 1 parcel over 0 s"
    assert event == InductionBody(transaction=42, barcode="SF42")
    assert returncode == 0, stderr.decode()


def test_simulator_cli_help_names_the_scenario_and_the_map(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser(prog="postedge sim")
    sorter_cli.add_command(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["sorter", "--help"])
    text = capsys.readouterr().out
    for option in ("--scenario FILE", "--port N", "--duration S", "docs/devices/sorter.md"):
        assert option in text
