"""The X-ray machine driver against its simulator over real TCP on 127.0.0.1, and the fault proxy.

Line faults are seeded; the machine's ack timeout and heartbeat are short so re-sends
come quickly. Nothing here waits by sleeping: tests wait for records, or poll a counter
with a deadline for readiness.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest

from contracts import XrayBody
from firmware_bridge.sim import xray_cli
from firmware_bridge.sim.faults import LineFaults
from firmware_bridge.sim.tcp_faults import Flow, TcpFaultProxy
from firmware_bridge.sim.xray import SimRecord, Verdict, XrayScenario, XraySimulator
from firmware_bridge.xray.codec import Ack, XrayRecord, crc16, decode
from firmware_bridge.xray.codec import encode as encode_frame
from firmware_bridge.xray.driver import XrayMachine
from tests.helpers import SIM_CLI, run_async

pytestmark = pytest.mark.hil

T = TypeVar("T")
DRIVER_LOG = "firmware_bridge.xray.driver"
START = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll for readiness with a deadline (for states no event announces)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


class WallClock:
    """Each record gets the next millisecond, so every record's time is distinct and known."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> datetime:
        self.calls += 1
        return START + timedelta(milliseconds=self.calls)


def records(count: int, first: int = 0) -> tuple[SimRecord, ...]:
    verdicts: tuple[Verdict, ...] = ("PASS", "SUSPECT", "FAIL")
    return tuple(
        SimRecord(0, f"SF{i:010d}", verdicts[i % 3], f"op-{i % 4}", f"xray/{i}.png")
        for i in range(first, first + count)
    )


def quick(records: tuple[SimRecord, ...], **settings: object) -> XrayScenario:
    base: dict[str, object] = {"boot": 7, "heartbeat_s": 0.05, "ack_timeout_s": 0.1}
    return XrayScenario(records, **(base | settings))  # type: ignore[arg-type]


def machine(sim: XraySimulator, **settings: float) -> XrayMachine:
    base = {"silence_timeout_s": 1.0, "reconnect_initial_s": 0.01, "reconnect_max_s": 0.05}
    return XrayMachine(*sim.address, **(base | settings))  # type: ignore[arg-type]


async def take(source: AsyncIterator[XrayBody], count: int) -> list[XrayBody]:
    return [await anext(source) for _ in range(count)]


def lines_about(caplog: pytest.LogCaptureFixture, kind: str) -> int:
    """Log lines (INFO and up) that report a fault ``kind``."""
    return sum(
        1
        for record in caplog.records
        if record.name == DRIVER_LOG
        and record.levelno >= logging.INFO
        and f"stats[{kind!r}]" in record.getMessage()
    )


def test_every_record_arrives_once_in_order_and_is_acknowledged() -> None:
    sent: list[bytes] = []

    def trace(sending: bool, data: bytes) -> None:
        if sending:
            sent.append(data)

    async def body() -> None:
        async with (
            XraySimulator(quick(records(6)), wall_clock=WallClock()) as sim,
            XrayMachine(*sim.address, trace=trace) as xr,
        ):
            got = await take(xr.records(), 6)
            assert got == sim.produced
            assert [b.scanned_at for b in got] == [
                START + timedelta(milliseconds=i) for i in range(1, 7)
            ]
            await until(lambda: len(sim.acked) == 5, "five acks at the machine")
            assert sim.acked == {(7, seq) for seq in range(1, 6)}  # the 6th: when we ask for more
            assert xr.boot == 7
            assert xr.stats["records"] == 6
            assert xr.stats["duplicates"] == 0

    run_async(body())
    assert [decode(data).frame for data in sent] == [Ack(7, seq) for seq in range(1, 6)]


FAULT_COUNTERS = {
    "drop": (),  # invisible to the host: the machine sends the record again after its timeout
    "corrupt": ("bad_checksum",),
    "garbage": ("garbage",),
    "duplicate": ("duplicates",),
    "stall": ("timeouts",),
}


@pytest.mark.parametrize("fault", list(FAULT_COUNTERS))
def test_line_faults_are_counted_and_logged_and_no_record_is_lost_doubled_or_corrupted(
    fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A stall outlasts the driver's silence timeout, so it costs a reconnection: fewer of them.
    rate = 0.1 if fault == "stall" else 0.25
    faults = LineFaults(**{fault: rate}, stall_s=0.2, seed=5)
    scenario = quick(records(12), faults=faults, heartbeat_s=0.02)

    async def body() -> None:
        async with (
            XraySimulator(scenario, wall_clock=WallClock()) as sim,
            machine(sim, silence_timeout_s=0.1) as xr,
        ):
            got = await take(xr.records(), 12)
            assert sorted(got, key=lambda b: b.waybill) == sim.produced
            assert sim.injected[fault] >= 1
            for kind in FAULT_COUNTERS[fault]:
                assert xr.stats[kind] >= 1, kind
                assert 1 <= lines_about(caplog, kind) <= xr.stats[kind]
            if fault == "stall":
                assert sim.connections >= 2  # the silent connection was given up

    with caplog.at_level(logging.INFO, logger=DRIVER_LOG):
        run_async(body())


def test_a_machine_that_only_sends_damaged_lines_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        scenario = quick(records(3), faults=LineFaults(corrupt=1.0))
        async with XraySimulator(scenario) as sim, machine(sim) as xr:
            consumer = asyncio.create_task(take(xr.records(), 1))
            await until(lambda: xr.stats["bad_checksum"] >= 10, "ten bad lines")
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
            assert xr.stats["records"] == 0

    with caplog.at_level(logging.WARNING, logger=DRIVER_LOG):
        run_async(body())
    assert lines_about(caplog, "bad_checksum") == 1


def test_a_line_with_an_invalid_field_is_skipped_and_the_next_record_arrives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        async with XraySimulator(quick(records(1))) as sim, machine(sim) as xr:
            source = xr.records()
            first = await anext(source)
            bad = encode_frame(XrayRecord(7, 99, first)).replace(b"|PASS|", b"|MAYBE|")
            head = bad[: bad.rindex(b"|") + 1]
            await sim.write_raw(head + b"%04X\r\n" % crc16(head))  # a good CRC, a bad verdict
            sim.post(records(1, first=1)[0])
            assert (await anext(source)).waybill == "SF0000000001"
            assert xr.stats["invalid"] == 1

    with caplog.at_level(logging.WARNING, logger=DRIVER_LOG):
        run_async(body())
    assert lines_about(caplog, "invalid") == 1


def test_unplugged_machine_is_reconnected_and_unacknowledged_records_come_again_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        async with (
            XraySimulator(quick(records(3)), wall_clock=WallClock()) as sim,
            machine(sim) as xr,
        ):
            source = xr.records()
            got = await take(source, 3)  # the 3rd is not acknowledged until we ask again
            await sim.unplug()
            for record in records(2, first=3):
                sim.post(record)  # screened while the cable is out

            async def replug_after_failures() -> None:
                await until(lambda: xr.stats["connect_failures"] >= 3, "three failed connects")
                await sim.replug()

            replug = asyncio.create_task(replug_after_failures())
            got += await take(source, 2)
            await replug
            assert got == sim.produced
            assert xr.stats["duplicates"] >= 1  # the 3rd came again after the reconnection
            assert (xr.stats["disconnects"], xr.stats["reconnects"]) == (1, 1)

    with caplog.at_level(logging.INFO, logger=DRIVER_LOG):
        run_async(body())
    assert sum("unavailable" in record.getMessage() for record in caplog.records) == 1


def test_records_after_a_machine_reboot_are_not_taken_for_repeats() -> None:
    async def body() -> None:
        async with (
            XraySimulator(quick(records(2)), wall_clock=WallClock()) as sim,
            machine(sim) as xr,
        ):
            source = xr.records()
            got = await take(source, 2)
            await sim.reboot()
            for record in records(2, first=2):
                sim.post(record)  # seq 1 and 2 again, of boot 8
            got += await take(source, 2)
            assert got == sim.produced
            assert (xr.boot, xr.stats["reboots"]) == (8, 1)

    run_async(body())


# --- the proxy on its own -----------------------------------------------------------------


async def echo_server() -> asyncio.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


async def ask(address: tuple[str, int], question: bytes, answer_size: int) -> bytes:
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(question)
        return await reader.readexactly(answer_size)
    finally:
        writer.close()
        await writer.wait_closed()


def test_proxy_relays_both_ways_and_refuses_connections_while_unplugged() -> None:
    traced: list[tuple[Flow, bytes]] = []

    async def body() -> None:
        server = await echo_server()
        target = server.sockets[0].getsockname()[:2]
        try:
            async with TcpFaultProxy(target, trace=lambda f, d: traced.append((f, d))) as proxy:
                assert await ask(proxy.address, b"hello", 5) == b"HELLO"
                reader, writer = await asyncio.open_connection(*proxy.address)
                await proxy.unplug()
                assert await reader.read(10) == b""  # reset: the open connection is gone
                writer.close()
                with pytest.raises(ConnectionRefusedError):
                    await ask(proxy.address, b"x", 1)
                await proxy.replug()
                assert await ask(proxy.address, b"again", 5) == b"AGAIN"
                assert proxy.connections == 3
        finally:
            server.close()
            await server.wait_closed()

    run_async(body())
    assert traced[:2] == [(Flow.TO_SERVER, b"hello"), (Flow.TO_CLIENT, b"HELLO")]


def test_proxy_injects_faults_in_one_direction_by_seed() -> None:
    async def body() -> None:
        server = await echo_server()
        target = server.sockets[0].getsockname()[:2]
        try:
            faults = LineFaults(duplicate=1.0)
            async with TcpFaultProxy(target, to_client=faults) as proxy:
                assert await ask(proxy.address, b"ab", 4) == b"ABAB"
                assert proxy.injected_towards(Flow.TO_CLIENT)["duplicate"] == 1
                assert proxy.injected_towards(Flow.TO_SERVER) == {}
        finally:
            server.close()
            await server.wait_closed()

    run_async(body())


# --- the command line ----------------------------------------------------------------------


def test_simulator_cli_prints_an_address_a_driver_can_use_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    scenario = tmp_path / "one.toml"
    scenario.write_text(
        '[machine]\nboot = 5\n[[records]]\nat_s = 0\nwaybill = "SF0042"\nverdict = "FAIL"\n'
        'operator = "op-9"\nimage = "x/42.png"\n'
    )

    async def body() -> tuple[list[str], XrayBody, int, bytes]:
        process = await asyncio.create_subprocess_exec(
            *SIM_CLI, "xray", "--scenario", str(scenario),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None
        try:
            lines = [(await process.stdout.readline()).decode().strip() for _ in range(2)]
            host, port = lines[0].rsplit(":", 1)
            async with XrayMachine(host, int(port)) as xr:
                record = await anext(xr.records())
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = await process.communicate()
        assert process.returncode is not None
        return lines, record, process.returncode, stderr

    lines, record, returncode, stderr = run_async(body())
    assert lines[0].startswith("127.0.0.1:")
    assert lines[1] == "boot 5: 1 record over 0 s, heartbeat every 5 s"
    assert (record.waybill, record.verdict, record.operator, record.image) == (
        "SF0042", "FAIL", "op-9", "x/42.png",
    )  # fmt: skip
    assert returncode == 0, stderr.decode()


def test_simulator_cli_help_names_the_scenario_and_the_protocol(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser(prog="postedge sim")
    xray_cli.add_command(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["xray", "--help"])
    text = capsys.readouterr().out
    for option in ("--scenario FILE", "--port N", "--duration S", "docs/devices/xray.md"):
        assert option in text
