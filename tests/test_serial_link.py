"""SerialLink over real ptys: reads, writes, timeouts, and unplug/replug at the same link."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from firmware_bridge.errors import DeviceTimeout, DeviceUnavailable
from firmware_bridge.nullmodem import PtyNullModem
from firmware_bridge.serial_link import SerialLink

pytestmark = pytest.mark.hil


async def read_exactly(link: SerialLink, count: int) -> bytes:
    data = b""
    while len(data) < count:
        data += await link.read(2)
    return data


def test_bytes_flow_both_ways_and_are_traced() -> None:
    async def scenario() -> None:
        seen: list[tuple[bool, bytes]] = []
        async with PtyNullModem() as modem:
            sim = os.open(modem.sim_path, os.O_RDWR | os.O_NOCTTY)
            try:
                async with SerialLink(
                    modem.device_path, trace=lambda s, d: seen.append((s, d))
                ) as link:
                    assert link.is_open
                    await link.write(b"PING\r")
                    loop = asyncio.get_running_loop()
                    assert await loop.run_in_executor(None, os.read, sim, 64) == b"PING\r"
                    os.write(sim, b"PONG\r\n")
                    assert await read_exactly(link, 6) == b"PONG\r\n"
            finally:
                os.close(sim)
        assert seen[0] == (True, b"PING\r")
        assert b"".join(d for s, d in seen if not s) == b"PONG\r\n"

    asyncio.run(scenario())


def test_silence_is_a_timeout() -> None:
    async def scenario() -> None:
        async with PtyNullModem() as modem, SerialLink(modem.device_path) as link:
            with pytest.raises(DeviceTimeout, match="nothing received"):
                await link.read(0.1)

    asyncio.run(scenario())


def test_unplug_is_reported_and_replug_at_the_same_link_reopens(tmp_path: Path) -> None:
    async def scenario() -> None:
        link_path = tmp_path / "ttyScanner"
        first = PtyNullModem(link=link_path)
        await first.start()
        async with SerialLink(str(link_path), reopen_initial_s=0.02, reopen_max_s=0.1) as link:
            assert link.is_open
            await first.stop()  # unplugged
            with pytest.raises(DeviceUnavailable):
                await link.read(2)
            assert not link.is_open
            assert link.vanished == 1
            second = PtyNullModem(link=link_path)  # plugged in again: another tty, same name
            await second.start()
            try:
                assert await link.wait_open(5)
                assert link.opens == 2
                sim = os.open(second.sim_path, os.O_RDWR | os.O_NOCTTY)
                try:
                    os.write(sim, b"back\n")
                    assert await read_exactly(link, 5) == b"back\n"
                finally:
                    os.close(sim)
            finally:
                await second.stop()

    asyncio.run(scenario())


def test_a_device_absent_at_start_is_opened_when_it_appears(tmp_path: Path) -> None:
    async def scenario() -> None:
        link_path = tmp_path / "ttyLate"
        async with SerialLink(str(link_path), reopen_initial_s=0.02, reopen_max_s=0.05) as link:
            assert not link.is_open
            with pytest.raises(DeviceUnavailable, match="not connected"):
                await link.write(b"x")
            async with PtyNullModem(link=link_path):
                assert await link.wait_open(5)

    asyncio.run(scenario())


def test_two_links_cannot_share_a_port() -> None:
    async def scenario() -> None:
        async with PtyNullModem() as modem, SerialLink(modem.device_path) as first:
            assert first.is_open
            async with SerialLink(modem.device_path, reopen_initial_s=0.05) as second:
                assert not second.is_open

    asyncio.run(scenario())
