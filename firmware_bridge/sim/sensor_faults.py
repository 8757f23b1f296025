"""What a simulated sensor shows: a scenario for the truth, and sensor faults on top.

A :class:`Scenario` says how the true value moves with time (steady, drifting, an
excursion). Sensor faults (:class:`SensorFault`) are the sensor itself misbehaving while
the line is perfect: a value that stops moving (stuck), one wild reading (spike), a value
no sensor of that kind can show (out of range), or no answer at all (silent), in windows
given by a :class:`Schedule`. Line faults (:mod:`firmware_bridge.sim.faults`) are another
layer: they damage frames, not values.

Everything here is a pure function of the simulated time: the same seed and time give
the same value in every process, so a test that sets the clock knows exactly what the
simulator serves. Scenario files describe both with :class:`TrendConfig` and
:class:`SensorFaultConfig`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

ScenarioKind = Literal["steady", "drift", "excursion"]
SCENARIO_KINDS: tuple[ScenarioKind, ...] = get_args(ScenarioKind)


@dataclass(frozen=True)
class Scenario:
    """How a simulated quantity moves with time; build one with the class methods.

    ``noise`` adds a deterministic wobble of at most that amplitude, new every second and
    the same for the same ``seed``, so a scenario stays a pure function of time.
    """

    kind: ScenarioKind
    base: float
    per_minute: float = 0.0
    peak: float | None = None
    start_s: float = 0.0
    ramp_s: float = 0.0
    hold_s: float = 0.0
    noise: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in SCENARIO_KINDS:
            raise ValueError(f"kind must be one of {SCENARIO_KINDS}, not {self.kind!r}")
        for name in ("base", "per_minute", "start_s", "ramp_s", "hold_s", "noise"):
            _check_number(name, getattr(self, name))
        for name in ("start_s", "ramp_s", "hold_s", "noise"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if (self.kind == "excursion") != (self.peak is not None):
            raise ValueError("peak is required for an excursion, and only there")
        if self.peak is not None:
            _check_number("peak", self.peak)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, not {self.seed!r}")

    @classmethod
    def steady(cls, base: float, *, noise: float = 0.0, seed: int = 0) -> Scenario:
        """Stays at ``base``."""
        return cls("steady", base, noise=noise, seed=seed)

    @classmethod
    def drift(
        cls, base: float, per_minute: float, *, noise: float = 0.0, seed: int = 0
    ) -> Scenario:
        """Starts at ``base`` and moves ``per_minute`` every minute, for ever (a failing cooler)."""
        return cls("drift", base, per_minute=per_minute, noise=noise, seed=seed)

    @classmethod
    def excursion(
        cls,
        base: float,
        peak: float,
        start_s: float,
        ramp_s: float,
        hold_s: float,
        *,
        noise: float = 0.0,
        seed: int = 0,
    ) -> Scenario:
        """Sits at ``base``, ramps to ``peak`` from ``start_s`` over ``ramp_s``, holds it
        for ``hold_s``, and ramps back to ``base`` over ``ramp_s`` (a door left open)."""
        return cls(
            "excursion",
            base,
            peak=peak,
            start_s=start_s,
            ramp_s=ramp_s,
            hold_s=hold_s,
            noise=noise,
            seed=seed,
        )

    def value_at(self, elapsed_s: float) -> float:
        """The value ``elapsed_s`` seconds after the simulation started."""
        _check_number("elapsed_s", elapsed_s)
        if elapsed_s < 0:
            raise ValueError("elapsed_s must not be negative")
        return self._trend(elapsed_s) + self._wobble(elapsed_s)

    def _trend(self, t: float) -> float:
        if self.kind == "steady":
            return self.base
        if self.kind == "drift":
            return self.base + self.per_minute * t / 60.0
        assert self.peak is not None
        rise = self.peak - self.base
        into = t - self.start_s
        hold_end = self.ramp_s + self.hold_s
        if into < 0 or into >= hold_end + self.ramp_s:
            return self.base
        if into < self.ramp_s:
            return self.base + rise * into / self.ramp_s
        if into < hold_end:
            return self.peak
        return self.peak - rise * (into - hold_end) / self.ramp_s

    def _wobble(self, t: float) -> float:
        if not self.noise:
            return 0.0
        # A string seed is hashed with SHA-512, so the sequence is the same in every process.
        return random.Random(f"{self.seed}:{math.floor(t)}").uniform(-self.noise, self.noise)


SensorFaultKind = Literal["stuck", "spike", "out_of_range", "silent"]
SENSOR_FAULT_KINDS: tuple[SensorFaultKind, ...] = get_args(SensorFaultKind)

ValueAt = Callable[[float], float]
"""A scenario's value at a time in seconds since the simulation started."""


@dataclass(frozen=True)
class Schedule:
    """When a fault is active: windows of ``duration_s`` from ``start_s``, every ``every_s``.

    Without ``every_s`` there is one window; without ``duration_s`` it lasts for ever.
    Each window happens with ``probability``, drawn per window from ``seed``, so a long
    run can have faults at irregular but repeatable times.
    """

    start_s: float = 0.0
    duration_s: float | None = None
    every_s: float | None = None
    probability: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_number("start_s", self.start_s, low=0.0)
        if self.duration_s is not None:
            _check_number("duration_s", self.duration_s, low=0.0)
        if self.every_s is not None:
            _check_number("every_s", self.every_s, low=0.0)
            if self.every_s == 0:
                raise ValueError("every_s must be more than 0")
            if self.duration_s is None or self.duration_s > self.every_s:
                raise ValueError("a repeating fault needs duration_s, at most every_s")
        _check_number("probability", self.probability, low=0.0, high=1.0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, not {self.seed!r}")

    def window_start(self, elapsed_s: float) -> float | None:
        """The start of the window ``elapsed_s`` falls in, or None if the fault is off then."""
        into = elapsed_s - self.start_s
        if into < 0:
            return None
        index = 0
        if self.every_s is not None:
            index = math.floor(into / self.every_s)
            into -= index * self.every_s
        if self.duration_s is not None and into >= self.duration_s:
            return None
        if self.probability < 1.0 and not self._happens(index):
            return None
        return elapsed_s - into

    def _happens(self, index: int) -> bool:
        # A string seed is hashed with SHA-512: the same draw in every process.
        return random.Random(f"{self.seed}:{index}").random() < self.probability


@dataclass(frozen=True)
class SensorFault:
    """One fault of the sensor, and when it happens.

    ``stuck`` repeats the value the sensor had when the window opened; ``spike`` adds
    ``delta`` for a short window (shorter than the read interval: one wild reading);
    ``out_of_range`` shows ``value`` instead of the truth; ``silent`` does not answer.
    """

    kind: SensorFaultKind
    when: Schedule = field(default_factory=Schedule)
    delta: float | None = None
    value: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in SENSOR_FAULT_KINDS:
            raise ValueError(f"kind must be one of {SENSOR_FAULT_KINDS}, not {self.kind!r}")
        if not isinstance(self.when, Schedule):
            raise TypeError("when must be a Schedule")
        if (self.kind == "spike") != (self.delta is not None):
            raise ValueError("delta is required for a spike, and only there")
        if (self.kind == "out_of_range") != (self.value is not None):
            raise ValueError("value is required for out_of_range, and only there")
        if self.delta is not None:
            _check_number("delta", self.delta)
        if self.value is not None:
            _check_number("value", self.value)
        if self.kind == "spike" and self.when.duration_s is None:
            raise ValueError("a spike needs a duration_s (one reading, not a new level)")

    def apply(self, elapsed_s: float, value_at: ValueAt) -> float | None:
        """What the sensor shows at ``elapsed_s`` under this fault; None means silence.

        Outside the fault's windows that is the true value.
        """
        opened = self.when.window_start(elapsed_s)
        if opened is None:
            return value_at(elapsed_s)
        if self.kind == "stuck":
            return value_at(opened)
        if self.kind == "spike":
            assert self.delta is not None
            return value_at(elapsed_s) + self.delta
        if self.kind == "out_of_range":
            return self.value
        return None

    def active(self, elapsed_s: float) -> bool:
        return self.when.window_start(elapsed_s) is not None


def sensor_reading(
    faults: Sequence[SensorFault], elapsed_s: float, value_at: ValueAt
) -> tuple[float | None, SensorFault | None]:
    """The value shown at ``elapsed_s`` (None: silent) and the fault behind it, if any.

    The first fault active at that time wins, so a list reads as a priority order.
    """
    for fault in faults:
        if fault.active(elapsed_s):
            return fault.apply(elapsed_s, value_at), fault
    return value_at(elapsed_s), None


def _check_number(
    name: str, value: object, *, low: float | None = None, high: float | None = None
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, not {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be {low} or more, not {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be {high} or less, not {value}")


class ScheduleConfig(BaseModel):
    """The schedule keys of a fault table in a scenario file (flat, beside ``kind``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    duration_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    every_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    probability: float = Field(default=1.0, ge=0, le=1)
    seed: int = 0

    @model_validator(mode="after")
    def _schedule_consistent(self) -> Self:
        self.to_schedule()  # Schedule's own checks, reported at the table's location
        return self

    def to_schedule(self) -> Schedule:
        return Schedule(self.start_s, self.duration_s, self.every_s, self.probability, self.seed)


class SensorFaultConfig(ScheduleConfig):
    """One ``[[...faults]]`` table: ``kind``, its ``delta`` or ``value``, and the schedule."""

    kind: SensorFaultKind
    delta: float | None = Field(default=None, allow_inf_nan=False)
    value: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        self.to_fault()  # the dataclass's checks, reported with the table's location
        return self

    def to_fault(self) -> SensorFault:
        return SensorFault(self.kind, self.to_schedule(), delta=self.delta, value=self.value)


class TrendConfig(BaseModel):
    """A scenario in a scenario file: ``{ kind = "drift", base = 4.0, per_minute = 0.5 }``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ScenarioKind = "steady"
    base: float = Field(allow_inf_nan=False)
    per_minute: float = Field(default=0.0, allow_inf_nan=False)
    peak: float | None = Field(default=None, allow_inf_nan=False)
    start_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    ramp_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    hold_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    noise: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        self.to_scenario()  # Scenario's own checks, reported at the table's location
        return self

    def to_scenario(self) -> Scenario:
        return Scenario(**self.model_dump())
