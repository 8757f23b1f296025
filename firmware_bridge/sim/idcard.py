"""A simulated ID-card reader (or vendor-SDK adapter) on a pty, with line faults.

The reader is data: an :class:`IdCardScenario` is a list of steps, each the answer the
reader gives (a card, no card, an error). In ``per_read`` mode each read request takes
the next step (a step may answer several reads); in ``timeline`` mode each step lasts
``hold_s`` seconds, as a card laid on the reader and taken away. Scenario files are TOML
(see ``firmware_bridge/sim/scenarios/idcard.toml``).

The identities are personal data even when made up: the simulator never logs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts import IdentityRead, IdType
from contracts.configfile import load_toml_model
from firmware_bridge.codec import FrameStream
from firmware_bridge.idcard.codec import (
    IdFrame,
    NoCard,
    ReaderFault,
    ReadRequest,
    decode,
    encode,
    record_from,
)
from firmware_bridge.sim.faults import NO_FAULTS, LineFaults, LineFaultsConfig
from firmware_bridge.sim.serial_device import SerialDeviceSim

AnswerKind = Literal["card", "none", "error"]
ANSWER_KINDS: tuple[AnswerKind, ...] = get_args(AnswerKind)
ReaderMode = Literal["per_read", "timeline"]
READER_MODES: tuple[ReaderMode, ...] = get_args(ReaderMode)


def flip_middle_bit(frame: bytes) -> bytes:
    """The reader's "corrupt" fault: one bit of the middle byte flipped, for the CRC to catch.

    The default (last bit of the last byte) would turn ETX 0x03 into STX 0x02: a framing
    fault, not the checksum fault this is meant to be.
    """
    if not frame:
        return frame
    middle = len(frame) // 2
    return frame[:middle] + bytes([frame[middle] ^ 0x10]) + frame[middle + 1 :]


@dataclass(frozen=True)
class SimulatedAnswer:
    """One step of a scenario: what the reader answers, and for how many reads or seconds."""

    answer: AnswerKind
    identity: IdentityRead | None = None
    error: int | None = None
    reads: int = 1
    """``per_read`` mode: how many read requests this step answers."""
    hold_s: float = 5.0
    """``timeline`` mode: how long this step lasts."""

    def __post_init__(self) -> None:
        if self.answer not in ANSWER_KINDS:
            raise ValueError(f"answer must be one of {ANSWER_KINDS}, not {self.answer!r}")
        if (self.answer == "card") != (self.identity is not None):
            raise ValueError("an identity is needed for a card answer, and only there")
        if self.identity is not None:
            record_from(self.identity, 0)  # must fit the wire format (no 0x1F in a field)
        if (self.answer == "error") != (self.error is not None):
            raise ValueError("an error code is needed for an error answer, and only there")
        if self.error is not None and not 0 <= self.error <= 0xFF:
            raise ValueError("error code must be in 0..255")
        if isinstance(self.reads, bool) or not isinstance(self.reads, int) or self.reads < 1:
            raise ValueError("reads must be an int of at least 1")
        if not math.isfinite(self.hold_s) or self.hold_s <= 0:
            raise ValueError("hold_s must be a finite number above 0")

    def frame(self, seq: int) -> IdFrame:
        """The answer frame to read request ``seq``."""
        if self.identity is not None:
            return record_from(self.identity, seq)
        if self.error is not None:
            return ReaderFault(seq, self.error)
        return NoCard(seq)


@dataclass(frozen=True)
class IdCardScenario:
    """The steps a simulated reader goes through; validated on construction."""

    steps: tuple[SimulatedAnswer, ...]
    mode: ReaderMode = "per_read"
    repeat: bool = True
    """Start over after the last step; else the last step stays."""
    faults: LineFaults = NO_FAULTS

    def __post_init__(self) -> None:
        if not isinstance(self.steps, tuple) or not self.steps:
            raise ValueError("a scenario needs a non-empty tuple of steps")
        if not all(isinstance(step, SimulatedAnswer) for step in self.steps):
            raise TypeError("steps must be SimulatedAnswer objects")
        if self.mode not in READER_MODES:
            raise ValueError(f"mode must be one of {READER_MODES}, not {self.mode!r}")
        if not isinstance(self.faults, LineFaults):
            raise TypeError("faults must be LineFaults")

    def step_for(self, read_index: int, elapsed_s: float) -> SimulatedAnswer:
        """The step that answers read number ``read_index`` (from 0) at ``elapsed_s``."""
        if self.mode == "per_read":
            return self._walk([step.reads for step in self.steps], read_index)
        return self._walk([step.hold_s for step in self.steps], elapsed_s)

    def _walk(self, lengths: list[int] | list[float], position: float) -> SimulatedAnswer:
        total = sum(lengths)
        if position >= total:
            if not self.repeat:
                return self.steps[-1]
            position %= total
        ends = itertools.accumulate(lengths)
        return next(step for step, end in zip(self.steps, ends, strict=True) if position < end)

    def describe(self) -> str:
        kinds = ", ".join(step.answer for step in self.steps)
        return f"{self.mode}, {len(self.steps)} steps ({kinds})"


class IdCardSimulator(SerialDeviceSim):
    """Answers read requests as the scenario says; use with ``async with``.

    ``clock`` (monotonic seconds) drives ``timeline`` mode, so tests can set the time.
    """

    def __init__(
        self,
        scenario: IdCardScenario,
        *,
        link: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(link=link, faults=scenario.faults, corrupt=flip_middle_bit)
        self.scenario = scenario
        self.answered: list[tuple[int, AnswerKind]] = []
        """``(seq, answer kind)`` of every answer handed to the fault injector."""
        self._clock = clock
        self._started_at = 0.0
        self._requests: FrameStream[IdFrame] = FrameStream(decode)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._started_at = self._clock()
        await super().start()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await super().stop()

    def on_bytes(self, data: bytes) -> None:
        """Answer every intact read request; a damaged one goes unanswered, as on a real line."""
        for result in self._requests.feed(data):
            if isinstance(result.frame, ReadRequest):
                self._answer(result.frame.seq)

    def _answer(self, seq: int) -> None:
        step = self.scenario.step_for(len(self.answered), self._clock() - self._started_at)
        self.answered.append((seq, step.answer))
        task = asyncio.get_running_loop().create_task(self.send(encode(step.frame(seq))))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


# --- scenario files -------------------------------------------------------------------------


class StepConfig(BaseModel):
    """One ``[[steps]]`` entry; card fields only with ``answer = "card"``."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    answer: AnswerKind
    name: str | None = None
    id_type: IdType = "resident"
    id_number: str | None = None
    authority: str | None = None
    valid_from: dt.date | None = None
    valid_until: dt.date | None = Field(default=None, description="omit for long-term (长期)")
    error: int | None = None
    reads: int = Field(default=1, ge=1)
    hold_s: float = Field(default=5.0, gt=0, allow_inf_nan=False)

    def to_step(self) -> SimulatedAnswer:
        identity = None
        if self.answer == "card":
            identity = IdentityRead.model_validate(
                self.model_dump(
                    include={"name", "id_type", "id_number", "authority"},
                )
                | {"valid_from": self.valid_from, "valid_until": self.valid_until}
            )
        elif any(v is not None for v in (self.name, self.id_number, self.authority)):
            raise ValueError("card fields belong to card answers only")
        return SimulatedAnswer(self.answer, identity, self.error, self.reads, self.hold_s)


class IdCardScenarioConfig(BaseModel):
    """An ID-card reader scenario file; :meth:`to_scenario` gives the simulator's data."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    mode: ReaderMode = "per_read"
    repeat: bool = True
    steps: list[StepConfig] = Field(min_length=1)
    faults: LineFaultsConfig = LineFaultsConfig()

    @model_validator(mode="after")
    def _valid_scenario(self) -> IdCardScenarioConfig:
        self.to_scenario()  # the dataclasses' checks, reported against the file
        return self

    def to_scenario(self) -> IdCardScenario:
        return IdCardScenario(
            steps=tuple(step.to_step() for step in self.steps),
            mode=self.mode,
            repeat=self.repeat,
            faults=self.faults.to_faults(),
        )


def load_scenario(path: Path) -> IdCardScenario:
    """Read an ID-card scenario file; raises ``contracts.configfile.ConfigFileError``."""
    return load_toml_model(path, IdCardScenarioConfig).to_scenario()


SAMPLE_IDENTITY = IdentityRead(
    name="张三",
    id_type="resident",
    id_number="11010519491231002X",  # the worked example of GB 11643-1999, not a person
    authority="北京市公安局西城分局",
    valid_from=dt.date(2015, 3, 1),
    valid_until=dt.date(2035, 3, 1),
)

DEFAULT_SCENARIO = IdCardScenario(
    steps=(
        SimulatedAnswer("card", SAMPLE_IDENTITY, reads=2),
        SimulatedAnswer("none"),
    ),
)
"""What ``postedge sim idcard`` serves without ``--scenario``: a card for two reads, then none."""
