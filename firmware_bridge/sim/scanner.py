"""A simulated serial barcode scanner on a pty, continuous or host-triggered, with line faults.

The scanner is data: a :class:`ScannerScenario` lists the codes it reads (with their
symbology and how long each read takes), its suffix and AIM setting, and its faults.
:class:`ScannerSimulator` plays it over a :class:`SerialDeviceSim`: in ``continuous``
mode it sends each code after its delay; in ``triggered`` mode it answers each trigger
command from the host with the next code. Scenario files are TOML (see
``firmware_bridge/sim/scenarios/scanner.toml``).

Scanner lines have no checksum, so "corrupt" here sets the high bit of one byte of the
line (:func:`set_high_bit`): damage a strict driver can see, where flipping the low bit
of a letter would make another valid code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts import Symbology
from contracts.configfile import load_toml_model
from firmware_bridge.scanner.codec import (
    AIM_OF_SYMBOLOGY,
    ScanLine,
    ScannerCodec,
    SuffixName,
)
from firmware_bridge.scanner.driver import HONEYWELL_STOP, HONEYWELL_TRIGGER
from firmware_bridge.sim.faults import NO_FAULTS, LineFaults, LineFaultsConfig
from firmware_bridge.sim.serial_device import SerialDeviceSim

log = logging.getLogger(__name__)

ScanMode = Literal["continuous", "triggered"]
SCAN_MODES: tuple[ScanMode, ...] = get_args(ScanMode)
SYMBOLOGIES: tuple[Symbology, ...] = get_args(Symbology)

_DIGITS: dict[Symbology, tuple[int, ...]] = {
    "ean13": (13,),
    "ean8": (8,),
    "upca": (12,),
    "upce": (6, 7, 8),
}
"""Digit counts of the EAN/UPC family: a driver tells these apart by length under ``]E0``."""


def set_high_bit(frame: bytes) -> bytes:
    """The scanner's "corrupt" fault: bit 7 of the middle byte set, making it non-ASCII."""
    if not frame:
        return frame
    middle = (len(frame) - 1) // 2
    return frame[:middle] + bytes([frame[middle] | 0x80]) + frame[middle + 1 :]


@dataclass(frozen=True)
class SimulatedCode:
    """One code the scanner reads, and how long the read takes (``delay_s``)."""

    code: str
    symbology: Symbology = "code128"
    delay_s: float = 0.5

    def __post_init__(self) -> None:
        ScanLine(self.code)  # printable ASCII, 1..512 characters
        if self.symbology not in SYMBOLOGIES:
            raise ValueError(f"symbology must be one of {SYMBOLOGIES}, not {self.symbology!r}")
        digits = _DIGITS.get(self.symbology)
        if digits is not None and not (self.code.isdigit() and len(self.code) in digits):
            raise ValueError(f"a {self.symbology} code has {digits} digits")
        if not isinstance(self.delay_s, int | float) or not math.isfinite(self.delay_s):
            raise ValueError("delay_s must be a finite number")
        if self.delay_s < 0:
            raise ValueError("delay_s must not be negative")


@dataclass(frozen=True)
class ScannerScenario:
    """What a simulated scanner reads and how it talks; validated on construction."""

    codes: tuple[SimulatedCode, ...]
    mode: ScanMode = "continuous"
    suffix: SuffixName = "CR"
    aim: bool = True
    repeat: bool = True
    """Start over after the last code; else the scanner goes quiet."""
    trigger: bytes = HONEYWELL_TRIGGER
    stop: bytes = HONEYWELL_STOP
    faults: LineFaults = NO_FAULTS

    def __post_init__(self) -> None:
        if not isinstance(self.codes, tuple) or not self.codes:
            raise ValueError("a scenario needs a non-empty tuple of codes")
        if not all(isinstance(code, SimulatedCode) for code in self.codes):
            raise TypeError("codes must be SimulatedCode objects")
        if self.mode not in SCAN_MODES:
            raise ValueError(f"mode must be one of {SCAN_MODES}, not {self.mode!r}")
        self.codec.encode(self.line(self.codes[0]))  # checks suffix and aim
        if not self.trigger or not self.stop or self.trigger == self.stop:
            raise ValueError("trigger and stop must be non-empty and different")
        if not isinstance(self.faults, LineFaults):
            raise TypeError("faults must be LineFaults")

    @property
    def codec(self) -> ScannerCodec:
        return ScannerCodec(self.suffix, self.aim)

    def line(self, code: SimulatedCode) -> ScanLine:
        """The line this scanner sends for ``code``."""
        return ScanLine(code.code, AIM_OF_SYMBOLOGY[code.symbology] if self.aim else None)

    def describe(self) -> str:
        aim = "AIM ids" if self.aim else "no AIM ids"
        return f"{self.mode}, suffix {self.suffix}, {aim}, {len(self.codes)} codes"


class ScannerSimulator(SerialDeviceSim):
    """Plays a :class:`ScannerScenario`; use with ``async with``.

    With ``autoplay`` (the default) a continuous scanner starts sending when started;
    tests turn it off and call :meth:`play` once their driver has the port open, because
    bytes sent before the driver opens it are lost (as on a real line).
    """

    def __init__(
        self, scenario: ScannerScenario, *, link: Path | None = None, autoplay: bool = True
    ) -> None:
        super().__init__(link=link, faults=scenario.faults, corrupt=set_high_bit)
        self.scenario = scenario
        self.autoplay = autoplay
        self.sent: list[ScanLine] = []
        """Every line handed to the fault injector, in order (delivered intact or not)."""
        self.triggers = 0
        self.stops = 0
        self._next = 0
        self._requests = bytearray()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await super().start()
        if self.autoplay and self.scenario.mode == "continuous":
            self._spawn(self.play())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await super().stop()

    async def play(self) -> None:
        """Read the scenario's codes one after the other, each after its delay."""
        while (code := self._take()) is not None:
            await asyncio.sleep(code.delay_s)  # the simulated time a read takes
            await self._send_code(code)

    async def scan(self, code: SimulatedCode | None = None) -> None:
        """Send one code now: ``code``, or the scenario's next one."""
        code = code if code is not None else self._take()
        if code is not None:
            await self._send_code(code)

    def on_bytes(self, data: bytes) -> None:
        """Host commands: each trigger is answered with the next code; stop is only counted."""
        self._requests += data
        trigger, stop = self.scenario.trigger, self.scenario.stop
        while True:
            found = [(at, cmd) for cmd in (trigger, stop) if (at := self._requests.find(cmd)) >= 0]
            if not found:
                break
            at, command = min(found)
            del self._requests[: at + len(command)]
            if command == trigger:
                self.triggers += 1
                if self.scenario.mode == "triggered":
                    self._spawn(self._answer())
            else:
                self.stops += 1
        keep = max(len(trigger), len(stop)) - 1  # a command split across reads
        del self._requests[: max(0, len(self._requests) - keep)]

    async def _answer(self) -> None:
        code = self._take()
        if code is None:
            return  # nothing left to read: the trigger times out
        await asyncio.sleep(code.delay_s)  # the simulated time a read takes
        await self._send_code(code)

    def _take(self) -> SimulatedCode | None:
        codes = self.scenario.codes
        if self._next >= len(codes):
            if not self.scenario.repeat:
                return None
            self._next = 0
        self._next += 1
        return codes[self._next - 1]

    async def _send_code(self, code: SimulatedCode) -> None:
        line = self.scenario.line(code)
        self.sent.append(line)
        await self.send(self.scenario.codec.encode(line))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("scanner simulator task failed: %r", error)


# --- scenario files -------------------------------------------------------------------------


class CodeConfig(BaseModel):
    """One ``[[codes]]`` entry of a scenario file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str
    symbology: Symbology = "code128"
    delay_s: float = Field(default=0.5, ge=0, allow_inf_nan=False)


class ScannerScenarioConfig(BaseModel):
    """A scanner scenario file; :meth:`to_scenario` turns it into the simulator's data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: ScanMode = "continuous"
    suffix: SuffixName = "CR"
    aim: bool = True
    repeat: bool = True
    trigger: str = HONEYWELL_TRIGGER.decode("ascii")
    stop: str = HONEYWELL_STOP.decode("ascii")
    codes: list[CodeConfig] = Field(min_length=1)
    faults: LineFaultsConfig = LineFaultsConfig()

    @model_validator(mode="after")
    def _valid_scenario(self) -> ScannerScenarioConfig:
        self.to_scenario()  # the dataclasses' checks, reported against the file
        return self

    def to_scenario(self) -> ScannerScenario:
        return ScannerScenario(
            codes=tuple(SimulatedCode(c.code, c.symbology, c.delay_s) for c in self.codes),
            mode=self.mode,
            suffix=self.suffix,
            aim=self.aim,
            repeat=self.repeat,
            trigger=self.trigger.encode("ascii"),
            stop=self.stop.encode("ascii"),
            faults=self.faults.to_faults(),
        )


def load_scenario(path: Path) -> ScannerScenario:
    """Read a scanner scenario file; raises ``contracts.configfile.ConfigFileError``."""
    return load_toml_model(path, ScannerScenarioConfig).to_scenario()


DEFAULT_SCENARIO = ScannerScenario(
    codes=(
        SimulatedCode("YT2412345678901", "code128", 1.0),
        SimulatedCode("SF1234567890123", "qr", 1.0),
        SimulatedCode("6901234567892", "ean13", 1.0),
        SimulatedCode("JT0001234567890", "code128", 1.0),
    ),
)
"""What ``postedge sim scanner`` plays without ``--scenario``: four reads a second apart."""
