"""The station's local cold-chain alarm: a buzzer that sounds while a probe is out of range.

The gateway owns the full cold-chain rules (alarm delays, hysteresis, escalation); this
alarm is the one thing that must work on the box itself, with the network down: every
reading the agent takes is checked against its probe's profile limits (kept by the
``set_profile`` command, see :func:`edge.commands.load_profiles` and the ``on_change``
callback of :func:`edge.commands.set_profile_handler`), and the output sounds while any
probe is outside its range. No network, no gateway: it is local by construction.

A probe without a profile never alarms. An output that fails (a GPIO write error) is
logged once and tried again on the next reading; the readings go on regardless.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from contracts import TemperatureBody
from contracts.profiles import Limits
from edge.errors import EdgeError

log = logging.getLogger(__name__)


class AlarmError(EdgeError):
    """The alarm output could not be driven."""


class AlarmOutput(Protocol):
    """Something that sounds: a buzzer, a lamp, a relay. Both calls are idempotent."""

    def on(self) -> None: ...

    def off(self) -> None: ...


@dataclass(frozen=True)
class BuzzerChange:
    at: float
    sounding: bool


class SimulatedBuzzer:
    """An alarm output that records its changes (for tests and boxes without a buzzer)
    and logs one line per change."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.sounding = False
        self.changes: list[BuzzerChange] = []
        self._clock = clock

    def on(self) -> None:
        self._set(True)

    def off(self) -> None:
        self._set(False)

    def _set(self, sounding: bool) -> None:
        if sounding == self.sounding:
            return
        self.sounding = sounding
        self.changes.append(BuzzerChange(self._clock(), sounding))
        if sounding:
            log.warning("alarm buzzer on")
        else:
            log.info("alarm buzzer off")


class SysfsGpio:
    """A buzzer or relay on a GPIO line, through the kernel's sysfs interface.

    ``pin`` is the sysfs GPIO number. On a Raspberry Pi with a kernel before 6.6 that is
    the BCM number (GPIO17 = 17); since 6.6 the Pi's lines start at 512 (GPIO17 = 529,
    see ``/sys/class/gpio/gpiochip*/base``). ``base`` is ``/sys/class/gpio`` on a real
    box and a fake tree in tests. The constructor does no I/O: :meth:`start` exports the
    line (if it is not yet) and makes it an output, off.
    """

    def __init__(
        self,
        pin: int,
        *,
        base: Path = Path("/sys/class/gpio"),
        active_low: bool = False,
        export_wait_s: float = 1.0,
    ) -> None:
        if isinstance(pin, bool) or not isinstance(pin, int) or not 0 <= pin <= 4095:
            raise ValueError("pin must be an int in 0..4095")
        self.pin = pin
        self._base = base
        self._line = base / f"gpio{pin}"
        self._active_low = active_low
        self._export_wait_s = export_wait_s

    def start(self) -> None:
        """Export the line if needed, wait for the kernel to create it, set it low."""
        if not self._line.is_dir():
            self._write(self._base / "export", str(self.pin))
            # The kernel (and udev, for permissions) creates the line's directory after
            # the export write returns; there is no event to wait on, so poll briefly.
            deadline = time.monotonic() + self._export_wait_s
            while not (self._line / "value").exists():
                if time.monotonic() > deadline:
                    raise AlarmError(f"GPIO {self.pin}: not created after export")
                time.sleep(0.01)
        self._write(self._line / "active_low", "1" if self._active_low else "0")
        self._write(self._line / "direction", "out")
        self.off()

    def stop(self) -> None:
        """Leave the line off (and exported: another run takes it over as it is)."""
        self.off()

    def on(self) -> None:
        self._write(self._line / "value", "1")

    def off(self) -> None:
        self._write(self._line / "value", "0")

    def _write(self, path: Path, value: str) -> None:
        try:
            path.write_text(value)
        except OSError as exc:
            raise AlarmError(f"GPIO {self.pin}: cannot write {path.name}: {exc.strerror}") from None


class AlarmConfig(BaseModel):
    """``[devices.alarm]``: a GPIO line for the buzzer, or none for the simulated one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpio: int | None = Field(default=None, ge=0, le=4095, description="sysfs GPIO number")
    active_low: bool = False
    gpio_base: Path = Path("/sys/class/gpio")


def make_output(config: AlarmConfig) -> SimulatedBuzzer | SysfsGpio:
    """The output ``config`` names; start a :class:`SysfsGpio` before use."""
    if config.gpio is None:
        return SimulatedBuzzer()
    return SysfsGpio(config.gpio, base=config.gpio_base, active_low=config.active_low)


class ProbeAlarm:
    """Sounds ``output`` while any probe's last reading is outside its profile's limits.

    Feed it every reading (:meth:`on_reading`) and every profile change
    (:meth:`set_profile`, the ``on_change`` callback of ``set_profile_handler``). The
    constructor does no I/O; the output is only driven on a change of state.
    ``clock`` (monotonic seconds) times how long the alarm sounded, for the log.
    """

    def __init__(
        self,
        profiles: Mapping[str, Limits],
        output: AlarmOutput,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._profiles = dict(profiles)
        self._output = output
        self._clock = clock
        self._last: dict[str, float] = {}
        self._out: set[str] = set()
        self._applied: bool | None = None  # what the output was last set to; None: unknown
        self._since: float | None = None
        self._failing = False

    @property
    def sounding(self) -> bool:
        """Whether the alarm should sound now (any probe out of range)."""
        return bool(self._out)

    @property
    def out_of_range(self) -> frozenset[str]:
        return frozenset(self._out)

    def on_reading(self, reading: TemperatureBody) -> None:
        """Check one reading against its probe's profile and drive the output."""
        self._last[reading.probe] = reading.celsius
        self._check(reading.probe)
        self._apply()

    def set_profile(self, probe: str, limits: Limits) -> None:
        """A probe's new limits; its last reading is checked against them at once."""
        self._profiles[probe] = limits
        if probe in self._last:
            self._check(probe)
        self._apply()

    def _check(self, probe: str) -> None:
        limits = self._profiles.get(probe)
        celsius = self._last[probe]
        outside = limits is not None and not limits.contains(celsius)
        if outside and probe not in self._out:
            self._out.add(probe)
            log.warning(
                "alarm: probe %s at %.1f °C is outside %s", probe, celsius, _describe(limits)
            )
        elif not outside and probe in self._out:
            self._out.discard(probe)
            log.info("alarm: probe %s back in range at %.1f °C", probe, celsius)

    def _apply(self) -> None:
        wanted = self.sounding
        if wanted == self._applied:
            return
        try:
            if wanted:
                self._output.on()
            else:
                self._output.off()
        except EdgeError as exc:
            if not self._failing:
                self._failing = True
                log.error("alarm: output failed, will retry on the next reading: %s", exc)
            return
        if self._failing:
            self._failing = False
            log.info("alarm: output works again")
        self._applied = wanted
        self._log_change(wanted)

    def _log_change(self, sounding: bool) -> None:
        now = self._clock()
        if sounding:
            self._since = now
            log.warning("alarm sounding: %s out of range", ", ".join(sorted(self._out)))
        elif self._since is not None:
            log.info("alarm silenced after %.0f s", now - self._since)
            self._since = None


def _describe(limits: Limits | None) -> str:
    if limits is None:
        return "no profile"
    low = "-inf" if limits.low_c is None else f"{limits.low_c:g}"
    high = "+inf" if limits.high_c is None else f"{limits.high_c:g}"
    return f"{low}..{high} °C"
