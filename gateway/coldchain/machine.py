"""The state machine of one probe, and of one cold compartment's door: pure, no I/O.

A probe has three alert channels, each with its own state:

- ``temperature``: normal → pending (out of the limits, the alarm delay running) →
  alarm → escalated (unacknowledged for ``escalate_after_s``) → recovering (back inside
  the limits by the hysteresis) → normal. A reading beyond a critical limit alarms at
  once, from any state. While alarmed, a reading inside the hysteresis band (inside the
  limits, but not by the hysteresis) neither clears nor re-raises: no flapping. In
  recovering, a reading that is not cleared returns to the alarm (the same alert); the
  alert resolves after ``clear_after_s`` of cleared readings.
- ``offline``: the probe has been silent for ``offline_after_s`` (seen by :meth:`tick`);
  its next reading resolves it.
- ``fault``: an impossible value (outside ``plausible``, e.g. a DS18B20's 85 °C power-on
  value or −127 °C when disconnected) or a value stuck for ``stuck_after_s``; a plausible,
  changing reading resolves it. Impossible values never reach the temperature channel.

Times are seconds since the epoch: the device's timestamp for readings, the engine's
clock for :meth:`tick`. Each call returns the :class:`Transition` list the engine turns
into ledger rows, published alerts and notifications; the machine keeps no alert ids of
its own beyond what the engine stores in its :class:`Channel`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from contracts.profiles import Limits

Condition = Literal["normal", "pending", "alarm", "escalated", "recovering"]
Severity = Literal["warning", "critical"]
ChannelName = Literal["temperature", "offline", "fault", "door"]
Change = Literal["raise", "update", "escalate", "resolve"]
Side = Literal["high", "low"]


UNBOUNDED = Limits(None, None)
PLAUSIBLE = Limits(-60.0, 60.0)
"""What a cold-chain probe can really read; beyond it the sensor is broken."""


@dataclass(frozen=True, slots=True)
class Rules:
    """A profile's alarm rules (see ``gateway.coldchain.config`` for the defaults)."""

    limits: Limits
    critical: Limits = UNBOUNDED
    delay_s: float = 600.0
    hysteresis_c: float = 0.5
    clear_after_s: float = 300.0
    escalate_after_s: float = 1800.0
    offline_after_s: float = 900.0
    plausible: Limits = PLAUSIBLE
    stuck_after_s: float | None = 6 * 3600.0

    def __post_init__(self) -> None:
        if self.delay_s < 0 or self.clear_after_s < 0 or self.hysteresis_c < 0:
            raise ValueError("delays and hysteresis cannot be negative")
        if self.escalate_after_s <= 0 or self.offline_after_s <= 0:
            raise ValueError("escalate_after_s and offline_after_s must be positive")


@dataclass(slots=True)
class Channel:
    """One alert channel's state; ``alert`` is the engine's id of the open alert."""

    condition: Condition = "normal"
    since: float | None = None
    side: Side | None = None
    severity: Severity | None = None
    raised_at: float | None = None
    acknowledged: bool = False
    escalated: bool = False
    alert: str | None = None

    def alarmed(self) -> bool:
        return self.condition in ("alarm", "escalated", "recovering")


@dataclass(frozen=True, slots=True)
class Transition:
    """What changed: ``raise`` a new alert, ``update`` its severity, ``escalate`` or
    ``resolve`` it. ``kind`` is the alert kind (``temperature_high``, ``probe_offline``...)."""

    channel: ChannelName
    change: Change
    kind: str
    severity: Severity
    at: float
    details: dict[str, float | str]


@dataclass(slots=True)
class ProbeState:
    """Everything the machine remembers about one probe; the engine persists it."""

    temperature: Channel = field(default_factory=Channel)
    offline: Channel = field(default_factory=Channel)
    fault: Channel = field(default_factory=Channel)
    last_seen: float | None = None
    last_value: float | None = None
    same_since: float | None = None


def _beyond(limits: Limits, celsius: float) -> Side | None:
    """Which side of ``limits`` a reading is on, or None if inside."""
    if limits.high_c is not None and celsius > limits.high_c:
        return "high"
    if limits.low_c is not None and celsius < limits.low_c:
        return "low"
    return None


def _side(rules: Rules, celsius: float) -> Side | None:
    return _beyond(rules.limits, celsius)


def _critical(rules: Rules, celsius: float) -> Side | None:
    return _beyond(rules.critical, celsius)


def _cleared(rules: Rules, side: Side | None, celsius: float) -> bool:
    """Inside the limits by the hysteresis, on the side the excursion was."""
    high, low = rules.limits.high_c, rules.limits.low_c
    if side == "high":
        return high is None or celsius <= high - rules.hysteresis_c
    if side == "low":
        return low is None or celsius >= low + rules.hysteresis_c
    return _side(rules, celsius) is None


def _raise(
    channel: Channel,
    name: ChannelName,
    kind: str,
    severity: Severity,
    at: float,
    **details: float | str,
) -> Transition:
    channel.condition = "alarm"
    channel.severity = severity
    channel.raised_at = at
    channel.since = None
    channel.acknowledged = False
    channel.escalated = False
    return Transition(name, "raise", kind, severity, at, dict(details))


def _resolve(
    channel: Channel, name: ChannelName, kind: str, at: float, **details: float | str
) -> Transition:
    severity = channel.severity or "warning"
    channel.condition = "normal"
    channel.since = None
    channel.side = None
    channel.severity = None
    channel.raised_at = None
    channel.acknowledged = False
    channel.escalated = False
    return Transition(name, "resolve", kind, severity, at, dict(details))


def temperature_kind(side: Side | None) -> str:
    return "temperature_low" if side == "low" else "temperature_high"


class ProbeMachine:
    """Feeds readings and clock ticks through one probe's channels."""

    def __init__(self, rules: Rules, state: ProbeState | None = None) -> None:
        self.rules = rules
        self.state = state if state is not None else ProbeState()

    # -- readings ------------------------------------------------------------------

    def observe(self, at: float, celsius: float) -> list[Transition]:
        """One reading at device time ``at``. Readings older than the last are ignored:
        the machine runs forwards only (a redelivered reading has no second effect)."""
        state = self.state
        if state.last_seen is not None and at <= state.last_seen:
            return []
        out: list[Transition] = []
        if state.offline.alarmed():
            out.append(_resolve(state.offline, "offline", "probe_offline", at, celsius=celsius))
        if not self.rules.plausible.contains(celsius):
            state.last_seen = at
            state.same_since = None
            if not state.fault.alarmed():
                out.append(
                    _raise(
                        state.fault,
                        "fault",
                        "sensor_fault",
                        "warning",
                        at,
                        reason="impossible",
                        celsius=celsius,
                    )
                )
            return out
        out += self._stuck(at, celsius)
        state.last_seen = at
        state.last_value = celsius
        if not state.fault.alarmed():
            out += self._temperature(at, celsius)
        return out

    def _stuck(self, at: float, celsius: float) -> list[Transition]:
        state = self.state
        changed = state.last_value is None or abs(celsius - state.last_value) > 1e-9
        if changed or state.same_since is None:
            state.same_since = at
        if state.fault.alarmed():
            if changed:
                return [_resolve(state.fault, "fault", "sensor_fault", at, celsius=celsius)]
            return []
        limit = self.rules.stuck_after_s
        if limit is not None and at - state.same_since >= limit:
            return [
                _raise(
                    state.fault,
                    "fault",
                    "sensor_fault",
                    "warning",
                    at,
                    reason="stuck",
                    celsius=celsius,
                    stuck_s=at - state.same_since,
                )
            ]
        return []

    def _temperature(self, at: float, celsius: float) -> list[Transition]:
        rules, channel = self.rules, self.state.temperature
        side = _side(rules, celsius)
        critical = _critical(rules, celsius)
        if critical is not None:
            return self._critical(at, celsius, critical)
        if channel.condition == "normal":
            if side is not None:
                channel.condition, channel.since, channel.side = "pending", at, side
            return self._due(at, celsius)
        if channel.condition == "pending":
            if side is None:
                channel.condition, channel.since, channel.side = "normal", None, None
            elif side != channel.side:
                channel.since, channel.side = at, side
            return self._due(at, celsius)
        if side is not None and side != channel.side:
            # out on the other side: this excursion is over, the next one is pending
            kind = temperature_kind(channel.side)
            out = [_resolve(channel, "temperature", kind, at, celsius=celsius)]
            channel.condition, channel.since, channel.side = "pending", at, side
            return out + self._due(at, celsius)
        cleared = _cleared(rules, channel.side, celsius)
        if channel.condition == "recovering":
            if not cleared:
                channel.condition = "escalated" if channel.escalated else "alarm"
                channel.since = None
                return []
            return self._recovered(at, celsius)
        if cleared:  # alarm or escalated
            channel.condition, channel.since = "recovering", at
            return self._recovered(at, celsius)
        return []

    def _critical(self, at: float, celsius: float, side: Side) -> list[Transition]:
        """Beyond a critical limit: alarm at once, or make the open alarm critical."""
        channel = self.state.temperature
        kind = temperature_kind(side)
        if not channel.alarmed() or channel.side != side:
            out: list[Transition] = []
            if channel.alarmed():  # from a low alarm straight to a critical high: a new one
                out.append(_resolve(channel, "temperature", temperature_kind(channel.side), at))
            channel.side = side
            out.append(
                _raise(
                    channel,
                    "temperature",
                    kind,
                    "critical",
                    at,
                    celsius=celsius,
                    limit=_limit(self.rules.critical, side),
                )
            )
            return out
        channel.condition = "escalated" if channel.escalated else "alarm"
        channel.since = None
        if channel.severity == "critical":
            return []
        channel.severity = "critical"
        return [
            Transition(
                "temperature",
                "update",
                kind,
                "critical",
                at,
                {"celsius": celsius, "limit": _limit(self.rules.critical, side)},
            )
        ]

    def _due(self, at: float, celsius: float | None) -> list[Transition]:
        """Pending long enough: the alarm. ``at`` is a reading's time or a tick's."""
        channel = self.state.temperature
        if channel.condition != "pending" or channel.since is None:
            return []
        if at - channel.since < self.rules.delay_s:
            return []
        details: dict[str, float | str] = {
            "since": channel.since,
            "limit": _limit(self.rules.limits, channel.side),
        }
        if celsius is not None:
            details["celsius"] = celsius
        kind = temperature_kind(channel.side)
        channel.condition = "alarm"
        return [_raise(channel, "temperature", kind, "warning", at, **details)]

    def _recovered(self, at: float, celsius: float) -> list[Transition]:
        channel = self.state.temperature
        assert channel.since is not None
        if at - channel.since < self.rules.clear_after_s:
            return []
        return [
            _resolve(channel, "temperature", temperature_kind(channel.side), at, celsius=celsius)
        ]

    # -- the clock ------------------------------------------------------------------

    def tick(self, now: float) -> list[Transition]:
        """What the passing of time does: a pending alarm falls due (if the probe is still
        reporting), a silent probe goes offline, an unacknowledged alarm escalates."""
        state, rules = self.state, self.rules
        out: list[Transition] = []
        silent = state.last_seen is None or now - state.last_seen >= rules.offline_after_s
        if not silent and not state.fault.alarmed():
            out += self._due(now, None)
        if silent and state.last_seen is not None and not state.offline.alarmed():
            out.append(
                _raise(
                    state.offline,
                    "offline",
                    "probe_offline",
                    "warning",
                    now,
                    last_seen=state.last_seen,
                    silent_s=now - state.last_seen,
                )
            )
        for name, kind, channel in self._channels():
            out += escalate(channel, name, kind, now, rules.escalate_after_s)
        return out

    def _channels(self) -> list[tuple[ChannelName, str, Channel]]:
        state = self.state
        return [
            ("temperature", temperature_kind(state.temperature.side), state.temperature),
            ("offline", "probe_offline", state.offline),
            ("fault", "sensor_fault", state.fault),
        ]

    def channel(self, name: ChannelName) -> Channel:
        return {
            "temperature": self.state.temperature,
            "offline": self.state.offline,
            "fault": self.state.fault,
        }[name]

    # -- people -----------------------------------------------------------------------

    def acknowledge(self, name: ChannelName) -> bool:
        """Someone has seen the alarm: it no longer escalates. False if nothing is open."""
        return acknowledge(self.channel(name))

    def resolve(self, name: ChannelName, at: float) -> Transition | None:
        """Someone resolved the alert by hand. If the temperature is still out of the
        limits, the delay starts again from now: a new alert if it stays out."""
        channel = self.channel(name)
        if not channel.alarmed():
            return None
        kind = next(k for n, k, _ in self._channels() if n == name)
        transition = _resolve(channel, name, kind, at, by="person")
        value = self.state.last_value
        side = _side(self.rules, value) if value is not None else None
        if name == "temperature" and side is not None:
            channel.condition, channel.since, channel.side = "pending", at, side
        return transition


def _limit(limits: Limits, side: Side | None) -> float | str:
    value = limits.high_c if side == "high" else limits.low_c
    return value if value is not None else ""


def acknowledge(channel: Channel) -> bool:
    if not channel.alarmed() or channel.acknowledged:
        return False
    channel.acknowledged = True
    return True


def escalate(
    channel: Channel, name: ChannelName, kind: str, now: float, after_s: float
) -> list[Transition]:
    """An alarm nobody acknowledged within ``after_s``: critical, and told again."""
    if channel.condition != "alarm" or channel.acknowledged or channel.escalated:
        return []
    if channel.raised_at is None or now - channel.raised_at < after_s:
        return []
    channel.condition, channel.escalated, channel.severity = "escalated", True, "critical"
    return [
        Transition(
            name, "escalate", kind, "critical", now, {"unacknowledged_s": now - channel.raised_at}
        )
    ]


@dataclass(frozen=True, slots=True)
class DoorRules:
    open_max_s: float = 120.0
    escalate_after_s: float = 1800.0


class DoorMachine:
    """A cold compartment's door: open longer than ``open_max_s`` raises ``door_open``;
    closing it resolves the alert."""

    def __init__(self, rules: DoorRules, state: Channel | None = None) -> None:
        self.rules = rules
        self.state = state if state is not None else Channel()

    def door(self, at: float, is_open: bool) -> list[Transition]:
        channel = self.state
        if is_open:
            if channel.condition == "normal":
                channel.condition, channel.since = "pending", at
            return self.tick(at)
        if channel.alarmed():
            return [_resolve(channel, "door", "door_open", at)]
        channel.condition, channel.since = "normal", None
        return []

    def tick(self, now: float) -> list[Transition]:
        channel = self.state
        if channel.condition == "pending" and channel.since is not None:
            if now - channel.since >= self.rules.open_max_s:
                since = channel.since
                return [
                    _raise(
                        channel,
                        "door",
                        "door_open",
                        "warning",
                        now,
                        opened_at=since,
                        open_s=now - since,
                    )
                ]
            return []
        return escalate(channel, "door", "door_open", now, self.rules.escalate_after_s)
