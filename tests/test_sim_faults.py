"""Fault injection and the serial simulator base, seen from a real SerialLink."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from firmware_bridge.errors import DeviceUnavailable
from firmware_bridge.serial_link import SerialLink
from firmware_bridge.sim.faults import FaultInjector, LineFaults, LineFaultsConfig, flip_last_bit
from firmware_bridge.sim.serial_device import SerialDeviceSim


def sent_with(faults: LineFaults, frames: list[bytes]) -> tuple[list[bytes], FaultInjector]:
    out: list[bytes] = []

    async def write(data: bytes) -> None:
        out.append(data)

    injector = FaultInjector(faults)

    async def run() -> None:
        for frame in frames:
            await injector.send(frame, write)

    asyncio.run(run())
    return out, injector


def test_no_faults_sends_frames_unchanged() -> None:
    frames = [bytes([i, i + 1]) for i in range(50)]
    assert sent_with(LineFaults(), frames)[0] == frames


@pytest.mark.parametrize("fault", ["drop", "corrupt", "garbage", "duplicate"])
def test_each_fault_happens_at_its_rate_and_is_counted(fault: str) -> None:
    frames = [b"frame-%03d" % i for i in range(400)]
    out, injector = sent_with(LineFaults(**{fault: 0.25}, seed=3), frames)
    hits = injector.injected[fault]
    assert 60 <= hits <= 140
    if fault == "drop":
        assert len(out) == 400 - hits
    elif fault == "corrupt":
        assert sum(1 for sent, frame in zip(out, frames, strict=True) if sent != frame) == hits
    elif fault == "garbage":
        assert len(out) == 400 + hits
    else:
        assert len(out) == 400 + hits


def test_faults_are_repeatable_by_seed() -> None:
    frames = [b"x%d" % i for i in range(100)]
    faults = LineFaults(drop=0.2, corrupt=0.2, garbage=0.2, duplicate=0.2, seed=9)
    assert sent_with(faults, frames)[0] == sent_with(faults, frames)[0]


def test_probabilities_are_checked() -> None:
    with pytest.raises(ValueError, match="drop"):
        LineFaults(drop=1.5)
    assert LineFaultsConfig(corrupt=0.5, seed=2).to_faults() == LineFaults(corrupt=0.5, seed=2)
    assert flip_last_bit(b"\x10\x20") == b"\x10\x21"


class Echo(SerialDeviceSim):
    def on_bytes(self, data: bytes) -> None:
        asyncio.get_running_loop().create_task(self.send(data.upper()))


@pytest.mark.hil
def test_simulator_answers_and_survives_unplug_and_replug(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with (
            Echo(link=tmp_path / "ttyEcho") as sim,
            SerialLink(sim.device_path, reopen_initial_s=0.02, reopen_max_s=0.05) as link,
        ):
            await link.write(b"hello")
            assert await link.read(2) == b"HELLO"
            await sim.unplug()
            with pytest.raises(DeviceUnavailable):
                await link.read(2)
            await sim.replug()
            assert await link.wait_open(5)
            await link.write(b"again")
            assert await link.read(2) == b"AGAIN"

    asyncio.run(scenario())
