"""Cold-chain product profiles a probe can carry, with their temperature limits.

The edge keeps the profile of each probe (set by the ``set_profile`` command) for its
local alarm; the gateway's cold-chain engine owns the full rules (delays, hysteresis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ProfileName = Literal["frozen", "chilled", "pharma", "fresh", "custom"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Inclusive range in °C; ``None`` means unbounded on that side."""

    low_c: float | None
    high_c: float | None

    def contains(self, celsius: float) -> bool:
        return (self.low_c is None or celsius >= self.low_c) and (
            self.high_c is None or celsius <= self.high_c
        )


BUILTIN_LIMITS: dict[str, Limits] = {
    "frozen": Limits(None, -18.0),
    "chilled": Limits(0.0, 4.0),
    "pharma": Limits(2.0, 8.0),
    "fresh": Limits(0.0, 10.0),
}
"""The named profiles' limits; ``custom`` carries its own."""
