"""Cold-chain exposure figures from a probe's readings: pure functions, no I/O.

Supervisors must prove afterwards what a probe, and a parcel in its compartment, saw:
minutes out of range, min/max/mean and the mean kinetic temperature (MKT), per local day
and per stay. :mod:`gateway.coldchain.exposure` reads the readings from the telemetry
store and writes the figures back; everything here is plain arithmetic on values, so the
rules below are tested without a store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from contracts.profiles import Limits
from contracts.timestamps import to_epoch_ns

ACTIVATION_ENERGY_J_PER_MOL = 83_144.0
"""ΔH of the MKT formula: the pharmacopoeias' conventional 83.144 kJ/mol."""
GAS_CONSTANT_J_PER_MOL_K = 8.314462618
ZERO_CELSIUS_K = 273.15

_NS_PER_S = 1_000_000_000
_DH_OVER_R = ACTIVATION_ENERGY_J_PER_MOL / GAS_CONSTANT_J_PER_MOL_K


@dataclass(frozen=True, slots=True)
class Reading:
    """One temperature reading at its device time (ns since the epoch)."""

    time_ns: int
    celsius: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.celsius) or self.celsius < -ZERO_CELSIUS_K:
            raise ValueError("a reading must be a finite temperature above absolute zero")


def mean_kinetic_temperature(samples: Iterable[tuple[float, float]]) -> float:
    """The time-weighted MKT in °C of ``(celsius, weight_s)`` samples.

    ``T_k = (ΔH/R) / −ln(Σ wᵢ·exp(−ΔH/(R·Tᵢ)) / Σ wᵢ)``, T in kelvin. MKT weighs warm
    spells more than the arithmetic mean does, as degradation does (Arrhenius): 20 h at
    5 °C plus 4 h at 15 °C gives 7.70 °C against a mean of 6.67 °C.

    The sum is taken as a log-sum-exp (the largest exponent factored out), so no term
    underflows even near absolute zero; the result is clamped to the samples' range,
    where it lies mathematically, so rounding cannot put it outside (a constant gives
    itself exactly). Zero weights are ignored; a negative weight, a non-finite value or
    no weight at all is a :class:`ValueError`.
    """
    exponents: list[tuple[float, float]] = []
    low, high = math.inf, -math.inf
    for celsius, weight in samples:
        if not (math.isfinite(celsius) and math.isfinite(weight)) or weight < 0:
            raise ValueError("MKT samples need finite temperatures and non-negative weights")
        if celsius < -ZERO_CELSIUS_K:
            raise ValueError("a temperature below absolute zero")
        if weight > 0:
            kelvin = celsius + ZERO_CELSIUS_K
            exponents.append((-_DH_OVER_R / kelvin if kelvin > 0 else -math.inf, weight))
            low, high = min(low, celsius), max(high, celsius)
    if not exponents:
        raise ValueError("MKT of no time: the samples carry no weight")
    top = max(exponent for exponent, _ in exponents)
    if top == -math.inf:  # every sample at absolute zero
        return low
    total = math.fsum(weight for _, weight in exponents)
    scaled = math.fsum(weight * math.exp(exponent - top) for exponent, weight in exponents)
    kelvin = _DH_OVER_R / -(top + math.log(scaled / total))
    return min(max(kelvin - ZERO_CELSIUS_K, low), high)


@dataclass(frozen=True, slots=True)
class Exposure:
    """What a probe saw in the window ``[start_ns, end_ns)``; see :func:`exposure`.

    ``min_c``, ``max_c``, ``mean_c`` and ``mkt_c`` are ``None`` when no time of the
    window is covered by a reading.
    """

    start_ns: int
    end_ns: int
    readings: int
    covered_s: float
    out_of_range_s: float
    min_c: float | None
    max_c: float | None
    mean_c: float | None
    mkt_c: float | None

    @property
    def out_of_range_minutes(self) -> float:
        return self.out_of_range_s / 60


@dataclass(frozen=True, slots=True)
class _Hold:
    """A reading and the nanoseconds of the window it stands for."""

    celsius: float
    ns: int


def exposure(
    readings: Sequence[Reading], start_ns: int, end_ns: int, limits: Limits, max_gap_s: float
) -> Exposure:
    """The time-weighted exposure of one probe over ``[start_ns, end_ns)``.

    The rules, chosen so that the figures say what the probe really vouches for:

    - A reading holds from its time until the next reading, but for at most
      ``max_gap_s``: a probe silent for longer vouches for nothing after that, and the
      silence is left out (``covered_s`` falls short of the window) rather than guessed.
      The last reading holds until ``min(its time + max_gap_s, end_ns)``.
    - A reading before ``start_ns`` holds into the window (callers pass readings from
      ``start_ns − max_gap_s``); time outside the window is clipped off.
    - ``readings`` must be sorted by time (else :class:`ValueError`); of readings at the
      same time the later one wins, as a rewrite does in the store.
    - ``readings`` counts the readings whose hold covers some time of the window; min
      and max are over those readings, mean and MKT are weighted by their covered time.
    - ``out_of_range_s`` is the covered time whose reading ``limits`` do not contain.

    Sums run on integer nanoseconds, so ``out_of_range_s ≤ covered_s ≤ end − start``
    hold exactly. ``start_ns == end_ns`` is an empty window, not an error (a parcel
    deposited and picked up in the same millisecond).
    """
    if end_ns < start_ns:
        raise ValueError("the window ends before it starts")
    holds = _holds(readings, start_ns, end_ns, gap_ns(max_gap_s))
    covered_ns = sum(hold.ns for hold in holds)
    out_ns = sum(hold.ns for hold in holds if not limits.contains(hold.celsius))
    if not holds:
        return Exposure(start_ns, end_ns, 0, 0.0, 0.0, None, None, None, None)
    low = min(hold.celsius for hold in holds)
    high = max(hold.celsius for hold in holds)
    # Mathematically within [low, high]; the clamp keeps rounding from leaving it.
    mean = math.fsum(hold.celsius * hold.ns for hold in holds) / covered_ns
    return Exposure(
        start_ns=start_ns,
        end_ns=end_ns,
        readings=len(holds),
        covered_s=covered_ns / _NS_PER_S,
        out_of_range_s=out_ns / _NS_PER_S,
        min_c=low,
        max_c=high,
        mean_c=min(max(mean, low), high),
        mkt_c=mean_kinetic_temperature((hold.celsius, hold.ns / _NS_PER_S) for hold in holds),
    )


def gap_ns(max_gap_s: float) -> int:
    """``max_gap_s`` in whole nanoseconds, as :func:`exposure` applies it."""
    if not math.isfinite(max_gap_s) or max_gap_s <= 0:
        raise ValueError("max_gap_s must be a positive number of seconds")
    return round(max_gap_s * _NS_PER_S)


def _holds(readings: Sequence[Reading], start_ns: int, end_ns: int, gap: int) -> list[_Hold]:
    """Each reading's share of the window, in order; readings covering nothing dropped."""
    holds: list[_Hold] = []
    for index, reading in enumerate(readings):
        following = readings[index + 1].time_ns if index + 1 < len(readings) else end_ns
        if index + 1 < len(readings) and following < reading.time_ns:
            raise ValueError("readings must be sorted by time")
        until = min(following, reading.time_ns + gap, end_ns)
        covered = until - max(reading.time_ns, start_ns)
        if covered > 0:  # also drops a reading overwritten by one at the same time
            holds.append(_Hold(reading.celsius, covered))
    return holds


def day_window(day: date, tz: ZoneInfo) -> tuple[int, int]:
    """``day`` in ``tz`` as ``[start_ns, end_ns)``: local midnight to the next midnight.

    Offsets are taken at each midnight, so a day with a DST change lasts 23 or 25 hours.
    Where midnight itself is skipped (a zone that springs forward at 00:00) the
    day starts when the clocks jump, which is what ``fold=0`` gives for that gap.
    """
    start = datetime.combine(day, time(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    return to_epoch_ns(start), to_epoch_ns(end)
