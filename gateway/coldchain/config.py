"""The ``[coldchain]`` section of the gateway file: profiles, probes, cold compartments.

Example::

    [coldchain]
    timezone = "Asia/Shanghai"     # the local day of the daily metrics
    default_profile = "chilled"    # for probes neither listed nor set by command

    [coldchain.profiles.pharma]    # override a built-in profile's keys, or define a new one
    delay_s = 300                  # out of range this long before the alarm
    hysteresis_c = 0.5             # back inside by this much before it clears

    [[coldchain.probes]]
    station = "village-23"
    device = "medbox"
    probe = "medicine"
    profile = "pharma"

    [[coldchain.compartments]]     # a refrigerated locker slot and the probe inside it
    station = "village-23"
    locker = "locker-1"
    board = 0
    lock = 3
    probe_device = "locker-1"
    probe = "cold-1"
    door_open_max_s = 120

A probe's profile, by precedence: the last ``set_profile`` command its device confirmed
(custom limits included), its ``[[coldchain.probes]]`` entry, ``default_profile``.
"""

from __future__ import annotations

from typing import Self
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.configfile import TimeZoneName
from contracts.ids import Identifier
from contracts.profiles import BUILTIN_LIMITS, Limits
from gateway.coldchain.machine import PLAUSIBLE, DoorRules, Rules

_STRICT = ConfigDict(extra="forbid", frozen=True)


class ProfileConfig(BaseModel):
    """One profile's rules; limits of ``None`` are unbounded on that side."""

    model_config = _STRICT

    low_c: float | None = None
    high_c: float | None = None
    critical_low_c: float | None = None
    critical_high_c: float | None = None
    delay_s: float = Field(default=600.0, ge=0, description="alarm delay")
    hysteresis_c: float = Field(default=0.5, ge=0)
    clear_after_s: float = Field(default=300.0, ge=0, description="cleared this long to resolve")
    offline_after_s: float = Field(default=900.0, gt=0, description="silent this long: offline")
    stuck_after_s: float | None = Field(
        default=6 * 3600.0, gt=0, description="an unchanging value this long is a sensor fault"
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        low = [v for v in (self.critical_low_c, self.low_c) if v is not None]
        high = [v for v in (self.high_c, self.critical_high_c) if v is not None]
        if low != sorted(low) or high != sorted(high) or (low and high and max(low) >= min(high)):
            raise ValueError(
                "limits must be ordered: critical_low_c ≤ low_c < high_c ≤ critical_high_c"
            )
        return self

    def rules(self, escalate_after_s: float, limits: Limits | None = None) -> Rules:
        """The machine's rules; ``limits`` replaces low/high (a custom profile's)."""
        return Rules(
            limits=limits if limits is not None else Limits(self.low_c, self.high_c),
            critical=Limits(self.critical_low_c, self.critical_high_c),
            delay_s=self.delay_s,
            hysteresis_c=self.hysteresis_c,
            clear_after_s=self.clear_after_s,
            escalate_after_s=escalate_after_s,
            offline_after_s=self.offline_after_s,
            plausible=PLAUSIBLE,
            stuck_after_s=self.stuck_after_s,
        )


def _builtin(name: str, critical_low: float | None, critical_high: float | None) -> ProfileConfig:
    limits = BUILTIN_LIMITS[name]
    return ProfileConfig(
        low_c=limits.low_c,
        high_c=limits.high_c,
        critical_low_c=critical_low,
        critical_high_c=critical_high,
    )


BUILTIN_PROFILES: dict[str, ProfileConfig] = {
    "frozen": _builtin("frozen", None, -10.0),
    "chilled": _builtin("chilled", -2.0, 8.0),
    "pharma": _builtin("pharma", 0.0, 12.0),
    "fresh": _builtin("fresh", -2.0, 15.0),
    "custom": ProfileConfig(),
}
"""Named profiles as shipped; ``custom`` takes its limits from the ``set_profile`` command.
Critical limits: freezing (below 0 °C) ruins vaccines and chilled produce at once."""


class ProbeAssignment(BaseModel):
    model_config = _STRICT

    station: Identifier
    device: Identifier
    probe: Identifier
    profile: Identifier


class CompartmentConfig(BaseModel):
    """A refrigerated locker slot: its door is watched, and parcels in it are measured
    by ``probe_device``/``probe``."""

    model_config = _STRICT

    station: Identifier
    locker: Identifier
    board: int = Field(ge=0, le=255)
    lock: int = Field(ge=1, le=24)
    probe_device: Identifier
    probe: Identifier
    door_open_max_s: float = Field(default=120.0, gt=0)


class ColdChainConfig(BaseModel):
    """The cold-chain engine (off unless the section is present; needs ``[ledger]``)."""

    model_config = _STRICT

    timezone: TimeZoneName = "Asia/Shanghai"
    default_profile: Identifier | None = Field(
        default="chilled", description="None: probes without a profile are not watched"
    )
    escalate_after_s: float = Field(default=1800.0, gt=0, description="unacknowledged this long")
    tick_s: float = Field(default=5.0, gt=0, le=300, description="how often time is checked")
    settle_s: float = Field(
        default=120.0, ge=0, description="wait after a day or a stay ends before measuring it"
    )
    profiles: dict[Identifier, ProfileConfig] = Field(default_factory=dict)
    probes: list[ProbeAssignment] = Field(default_factory=list)
    compartments: list[CompartmentConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _profiles_exist(self) -> Self:
        names = self.all_profiles()  # also checks that merged overrides are ordered
        wanted = [p.profile for p in self.probes]
        if self.default_profile is not None:
            wanted.append(self.default_profile)
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise ValueError(
                f"unknown profile(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}"
            )
        return self

    def profile_for(
        self,
        station: str,
        device: str,
        probe: str,
        *,
        set_by_command: str | None,
        low_c: float | None = None,
        high_c: float | None = None,
    ) -> tuple[str, ProfileConfig] | None:
        """A probe's profile, by precedence: the one its device confirmed by command
        (``custom`` with the command's limits), the configured assignment, the default;
        None when the probe is not watched."""
        profiles = self.all_profiles()
        if set_by_command == "custom":
            custom = profiles["custom"].model_copy(update={"low_c": low_c, "high_c": high_c})
            return "custom", custom
        name = set_by_command if set_by_command in profiles else None
        if name is None:
            assigned = {(p.station, p.device, p.probe): p.profile for p in self.probes}
            name = assigned.get((station, device, probe), self.default_profile)
        if name is None:
            return None
        return name, profiles[name]

    def all_profiles(self) -> dict[str, ProfileConfig]:
        """Built-in profiles with the configured overrides merged in (a section that sets
        only ``delay_s`` keeps the built-in limits), and the configured new ones."""
        merged = dict(BUILTIN_PROFILES)
        for name, override in self.profiles.items():
            base = merged.get(name)
            if base is None:
                merged[name] = override
                continue
            fields = {key: getattr(override, key) for key in override.model_fields_set}
            merged[name] = ProfileConfig.model_validate({**base.model_dump(), **fields})
        return merged

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def door_rules(self, compartment: CompartmentConfig) -> DoorRules:
        return DoorRules(compartment.door_open_max_s, self.escalate_after_s)
