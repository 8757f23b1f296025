"""Line faults a simulator injects into what it sends, declared as data.

Each fault is a probability per frame, drawn from a seeded generator, so a test run is
repeatable. What "corrupt" means depends on the protocol: by default one bit of the last
byte (a checksum, or a line terminator) is flipped; a simulator may pass its own.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields

from pydantic import BaseModel, ConfigDict, Field

Write = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True)
class LineFaults:
    """Per-frame fault probabilities (0 to 1) and the stall length."""

    drop: float = 0.0
    """The frame is never sent."""
    corrupt: float = 0.0
    """The frame is sent damaged (bad checksum)."""
    garbage: float = 0.0
    """Noise bytes are sent before the frame."""
    duplicate: float = 0.0
    """The frame is sent twice."""
    stall: float = 0.0
    """The frame is sent ``stall_s`` late."""
    stall_s: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in ("drop", "corrupt", "garbage", "duplicate", "stall") and not (
                0.0 <= value <= 1.0
            ):
                raise ValueError(f"fault probability {item.name} must be within 0..1, got {value}")
        if self.stall_s < 0:
            raise ValueError("stall_s must not be negative")

    @property
    def any(self) -> bool:
        """Whether any fault may happen at all."""
        return any((self.drop, self.corrupt, self.garbage, self.duplicate, self.stall))


NO_FAULTS = LineFaults()


class LineFaultsConfig(BaseModel):
    """The ``[faults]`` table of a scenario file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drop: float = Field(default=0.0, ge=0, le=1)
    corrupt: float = Field(default=0.0, ge=0, le=1)
    garbage: float = Field(default=0.0, ge=0, le=1)
    duplicate: float = Field(default=0.0, ge=0, le=1)
    stall: float = Field(default=0.0, ge=0, le=1)
    stall_s: float = Field(default=2.0, ge=0)
    seed: int = 0

    def to_faults(self) -> LineFaults:
        return LineFaults(**self.model_dump())


def flip_last_bit(frame: bytes) -> bytes:
    """The default corruption: one bit of the last byte flipped."""
    if not frame:
        return frame
    return frame[:-1] + bytes([frame[-1] ^ 0x01])


class FaultInjector:
    """Sends frames through ``write`` with the faults applied; counts what it injected."""

    def __init__(
        self, faults: LineFaults, *, corrupt: Callable[[bytes], bytes] = flip_last_bit
    ) -> None:
        self.faults = faults
        self._corrupt = corrupt
        self._random = random.Random(faults.seed)
        self.injected: Counter[str] = Counter()

    def _roll(self, name: str, probability: float) -> bool:
        hit = probability > 0 and self._random.random() < probability
        if hit:
            self.injected[name] += 1
        return hit

    async def send(self, frame: bytes, write: Write) -> None:
        f = self.faults
        if self._roll("drop", f.drop):
            return
        if self._roll("stall", f.stall):
            await asyncio.sleep(f.stall_s)  # the fault itself: the device is late
        if self._roll("garbage", f.garbage):
            await write(
                bytes(self._random.randrange(256) for _ in range(self._random.randint(1, 8)))
            )
        data = self._corrupt(frame) if self._roll("corrupt", f.corrupt) else frame
        await write(data)
        if self._roll("duplicate", f.duplicate):
            await write(data)
