"""The scanner driver against its simulator over real ptys, one test per line fault.

Every test checks the same promises: the driver keeps going, counts the fault, logs it
once per burst, and never yields a code the simulator did not send. Waits are on scans
and events; the only polling is a readiness check with a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from contracts import ScanBody
from firmware_bridge.errors import DeviceTimeout
from firmware_bridge.scanner.codec import SUFFIX_NAMES, ScannerCodec, SuffixName
from firmware_bridge.scanner.driver import SerialScanner
from firmware_bridge.serial_link import SerialLink
from firmware_bridge.sim.faults import FaultInjector, LineFaults
from firmware_bridge.sim.scanner import (
    ScanMode,
    ScannerScenario,
    ScannerSimulator,
    SimulatedCode,
    set_high_bit,
)
from tests.helpers import SIM_CLI, run_async

pytestmark = pytest.mark.hil

T = TypeVar("T")
SENTINEL = SimulatedCode("END-OF-TEST", "code128", 0.0)
LOGGER = "firmware_bridge.scanner.driver"


def scenario(
    count: int = 5,
    *,
    mode: ScanMode = "continuous",
    suffix: SuffixName = "CR",
    aim: bool = True,
    faults: LineFaults | None = None,
) -> ScannerScenario:
    codes = tuple(
        SimulatedCode(f"YT{i:010d}", "qr" if i % 2 else "code128", 0.0) for i in range(count)
    )
    return ScannerScenario(
        codes, mode=mode, suffix=suffix, aim=aim, repeat=False, faults=faults or LineFaults()
    )


def codes_sent(sim: ScannerSimulator) -> list[str]:
    return [line.code for line in sim.sent]


async def scans_until_sentinel(sim: ScannerSimulator, scanner: SerialScanner) -> list[ScanBody]:
    """Send the sentinel clean (no faults) and collect every scan up to it."""
    await sim.write_raw(sim.scenario.codec.encode(sim.scenario.line(SENTINEL)))
    received = []
    while (scan := await scanner.next_scan(5)).code != SENTINEL.code:
        received.append(scan)
    return received


def assert_subsequence(received: list[str], sent: list[str]) -> None:
    """Every code received was sent, in order: nothing invented, glued or reordered."""
    remaining = iter(sent)
    assert all(code in remaining for code in received), (received, sent)


def warnings(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(
        1
        for record in caplog.records
        if record.name == LOGGER and record.levelno == logging.WARNING and text in record.message
    )


def no_faults(sim: ScannerSimulator) -> None:
    sim.faults = FaultInjector(LineFaults(), corrupt=set_high_bit)


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """A readiness probe with a deadline, for state no event announces (a port closing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("suffix", SUFFIX_NAMES)
@pytest.mark.parametrize("aim", [True, False])
def test_continuous_scans_arrive_in_order_with_their_symbology(
    suffix: SuffixName, aim: bool
) -> None:
    async def body() -> list[ScanBody]:
        async with (
            ScannerSimulator(scenario(6, suffix=suffix, aim=aim), autoplay=False) as sim,
            SerialLink(sim.device_path) as link,
            SerialScanner(link, reader="scan-1", suffix=suffix, aim=aim) as scanner,
        ):
            await sim.play()
            return [await scanner.next_scan(5) for _ in range(6)]

    scans = run_async(body())
    assert [scan.code for scan in scans] == [f"YT{i:010d}" for i in range(6)]
    expected = ["qr" if i % 2 else "code128" for i in range(6)] if aim else ["unknown"] * 6
    assert [scan.symbology for scan in scans] == expected
    assert {scan.reader for scan in scans} == {"scan-1"}


def test_a_variant_codec_replaces_the_standard_line_format_and_scans_iterates() -> None:
    variant = ScannerCodec("TAB", aim=False)

    async def body() -> list[str]:
        async with (
            ScannerSimulator(scenario(3, suffix="TAB", aim=False), autoplay=False) as sim,
            SerialLink(sim.device_path) as link,
            SerialScanner(link, reader="s", suffix="CR", decode=variant.decode) as scanner,
        ):
            await sim.play()
            codes = []
            async for scan in scanner.scans():
                codes.append(scan.code)
                if len(codes) == 3:
                    return codes
        raise AssertionError("unreachable")

    assert run_async(body()) == ["YT0000000000", "YT0000000001", "YT0000000002"]


def triggered(sim: ScannerSimulator, link: SerialLink) -> SerialScanner:
    return SerialScanner(
        link, reader="s", trigger=sim.scenario.trigger, stop=sim.scenario.stop, same_code_s=0
    )


def test_each_trigger_is_answered_with_the_next_code() -> None:
    async def body() -> tuple[list[str], int]:
        async with (
            ScannerSimulator(scenario(3, mode="triggered")) as sim,
            SerialLink(sim.device_path) as link,
            triggered(sim, link) as scanner,
        ):
            codes = [(await scanner.trigger(2)).code for _ in range(3)]
            return codes, sim.triggers

    assert run_async(body()) == (["YT0000000000", "YT0000000001", "YT0000000002"], 3)


def test_drop_a_lost_answer_times_out_sends_stop_and_the_next_trigger_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        sim_scenario = scenario(4, mode="triggered", faults=LineFaults(drop=1.0))
        async with (
            ScannerSimulator(sim_scenario) as sim,
            SerialLink(sim.device_path) as link,
            triggered(sim, link) as scanner,
        ):
            for _ in range(2):
                with pytest.raises(DeviceTimeout, match=r"no scan in 0\.1 s"):
                    await scanner.trigger(0.1)
            await wait_until(lambda: sim.stops == 2, "the stop commands")
            no_faults(sim)
            assert (await scanner.trigger(2)).code == codes_sent(sim)[2]
            assert scanner.stats.timeouts == 2
            assert warnings(caplog, "no scan within 0.1 s of the trigger") == 1

    run_async(body())


def test_corrupt_lines_are_skipped_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        sim_scenario = scenario(5, faults=LineFaults(corrupt=1.0))
        async with (
            ScannerSimulator(sim_scenario, autoplay=False) as sim,
            SerialLink(sim.device_path) as link,
            SerialScanner(link, reader="s") as scanner,
        ):
            await sim.play()
            assert await scans_until_sentinel(sim, scanner) == []
            assert scanner.stats.skipped == 5
            assert warnings(caplog, "line skipped: byte 0x") == 1

    run_async(body())


def test_garbage_between_lines_never_becomes_a_code(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        sim_scenario = scenario(30, faults=LineFaults(garbage=0.5, seed=4))
        async with (
            ScannerSimulator(sim_scenario, autoplay=False) as sim,
            SerialLink(sim.device_path) as link,
            SerialScanner(link, reader="s") as scanner,
        ):
            await sim.play()
            received = [scan.code for scan in await scans_until_sentinel(sim, scanner)]
            assert_subsequence(received, codes_sent(sim))
            assert scanner.stats.skipped >= sim.faults.injected["garbage"] > 0
            assert len(received) >= 30 - sim.faults.injected["garbage"]
            logged = warnings(caplog, "line skipped")
            assert 1 <= logged <= len(received) + 1  # again only after a good line between

    run_async(body())


def test_stall_a_late_answer_times_out_then_arrives_intact(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        sim_scenario = scenario(3, mode="triggered", faults=LineFaults(stall=1.0, stall_s=0.3))
        async with (
            ScannerSimulator(sim_scenario) as sim,
            SerialLink(sim.device_path) as link,
            triggered(sim, link) as scanner,
        ):
            with pytest.raises(DeviceTimeout):
                await scanner.trigger(0.05)
            late = await scanner.next_scan(3)
            assert late.code == codes_sent(sim)[0]
            no_faults(sim)
            assert (await scanner.trigger(2)).code == "YT0000000001"
            assert scanner.stats.timeouts == 1
            assert warnings(caplog, "of the trigger") == 1

    run_async(body())


def test_a_scan_waiting_before_a_trigger_is_dropped_as_stale() -> None:
    async def body() -> None:
        async with (
            ScannerSimulator(scenario(3, mode="triggered")) as sim,
            SerialLink(sim.device_path) as link,
            triggered(sim, link) as scanner,
        ):
            await sim.scan()  # someone pressed the scanner's own button
            assert (await scanner.next_scan(2)).code == "YT0000000000"
            await sim.scan()
            await wait_until(lambda: scanner.stats.scans == 2, "the second scan")
            assert (await scanner.trigger(2)).code == "YT0000000002"
            assert scanner.stats.stale == 1

    run_async(body())


def test_duplicated_lines_are_reported_once_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        sim_scenario = scenario(5, faults=LineFaults(duplicate=1.0))
        async with (
            ScannerSimulator(sim_scenario, autoplay=False) as sim,
            SerialLink(sim.device_path) as link,
            SerialScanner(link, reader="s", same_code_s=5.0) as scanner,
        ):
            await sim.play()
            received = [scan.code for scan in await scans_until_sentinel(sim, scanner)]
            assert received == codes_sent(sim)
            assert scanner.stats.duplicates == 5
            assert 1 <= warnings(caplog, "same code again") <= 5

    run_async(body())


def test_same_code_delay_is_off_with_zero() -> None:
    async def body() -> list[str]:
        code = SimulatedCode("SAME-CODE", "code128", 0.0)
        async with (
            ScannerSimulator(scenario(1), autoplay=False) as sim,
            SerialLink(sim.device_path) as link,
            SerialScanner(link, reader="s", same_code_s=0) as scanner,
        ):
            await sim.scan(code)
            await sim.scan(code)
            return [(await scanner.next_scan(2)).code for _ in range(2)]

    assert run_async(body()) == ["SAME-CODE", "SAME-CODE"]


def test_unplug_and_replug_drop_the_cut_line_and_scanning_resumes(tmp_path: Path) -> None:
    async def body() -> None:
        seen_partial = asyncio.Event()

        def trace(sending: bool, data: bytes) -> None:
            if not sending and b"PART" in data:
                seen_partial.set()

        async with (
            ScannerSimulator(scenario(3), link=tmp_path / "ttyScan", autoplay=False) as sim,
            SerialLink(
                sim.device_path, reopen_initial_s=0.02, reopen_max_s=0.05, trace=trace
            ) as link,
            SerialScanner(link, reader="s") as scanner,
        ):
            await sim.scan()
            assert (await scanner.next_scan(2)).code == "YT0000000000"
            await sim.write_raw(b"]C0PART")  # the cable goes mid-line
            await seen_partial.wait()
            await sim.unplug()
            await wait_until(lambda: not link.is_open, "the port to vanish")
            await sim.replug()
            assert await link.wait_open(5)
            await sim.scan()
            assert (await scanner.next_scan(2)).code == "YT0000000001"
            assert (scanner.stats.reconnects, scanner.stats.incomplete) == (1, 1)

    run_async(body())


class SteppingClock:
    """The driver reads its clock once per chunk it takes: each read moves time on 0.6 s."""

    def __init__(self) -> None:
        self.now = 100.0
        self.read = asyncio.Event()

    def __call__(self) -> float:
        self.now += 0.6
        self.read.set()
        return self.now


def test_a_partial_line_idle_past_the_gap_is_not_glued_to_the_next() -> None:
    """A lost suffix would glue two codes into one printable line: the gap rule stops it."""

    async def body() -> None:
        clock = SteppingClock()
        async with (
            ScannerSimulator(scenario(1), autoplay=False) as sim,
            SerialLink(sim.device_path) as link,
            SerialScanner(link, reader="s", line_gap_s=0.5, clock=clock) as scanner,
        ):
            await sim.write_raw(b"]C0AAAA")  # its suffix was lost on the line
            await clock.read.wait()
            await sim.write_raw(b"]C0BBBB\r")
            assert (await scanner.next_scan(2)).code == "BBBB"
            assert scanner.stats.incomplete == 1

    run_async(body())


def test_a_mixed_faulty_line_never_yields_a_corrupted_code(
    caplog: pytest.LogCaptureFixture,
) -> None:
    faults = LineFaults(drop=0.1, corrupt=0.15, garbage=0.15, duplicate=0.15, seed=11)

    async def body() -> None:
        async with (
            ScannerSimulator(scenario(60, faults=faults), autoplay=False) as sim,
            SerialLink(sim.device_path) as link,
            SerialScanner(link, reader="s") as scanner,
        ):
            await sim.play()
            received = [scan.code for scan in await scans_until_sentinel(sim, scanner)]
            assert_subsequence(received, codes_sent(sim))
            injected = sim.faults.injected
            assert (
                len(received) >= 60 - injected["drop"] - injected["corrupt"] - injected["garbage"]
            )
            # A duplicated damaged line is skipped twice, not counted as a duplicate.
            assert 0 < scanner.stats.duplicates <= injected["duplicate"]
            assert scanner.stats.skipped >= injected["corrupt"]

    run_async(body())


def test_cli_prints_a_port_a_driver_reads_scans_from_and_stops_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "fast.toml"
    path.write_text(
        'suffix = "CRLF"\n[[codes]]\ncode = "CLI-1"\nsymbology = "qr"\ndelay_s = 0.05\n'
    )

    async def body() -> tuple[str, ScanBody, int, bytes]:
        process = await asyncio.create_subprocess_exec(
            *SIM_CLI, "scanner", "--scenario", str(path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None
        try:
            port = (await process.stdout.readline()).decode().strip()
            async with (
                SerialLink(port) as link,
                SerialScanner(link, reader="cli", suffix="CRLF", same_code_s=0) as scanner,
            ):
                scan = await scanner.next_scan(5)
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = await process.communicate()
        assert process.returncode is not None
        return port, scan, process.returncode, stderr

    port, scan, returncode, stderr = run_async(body())
    assert port.startswith("/dev/pts/")
    assert scan == ScanBody(reader="cli", code="CLI-1", symbology="qr")
    assert returncode == 0, stderr.decode()
