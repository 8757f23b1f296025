"""Bodies of telemetry messages (channel ``telemetry``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.ids import Identifier

_BODY_CONFIG = ConfigDict(strict=True, extra="forbid", frozen=True)


class TemperatureBody(BaseModel):
    """One probe reading: temperature, and relative humidity where the probe has it."""

    model_config = _BODY_CONFIG

    probe: Identifier
    celsius: float = Field(ge=-273.15, allow_inf_nan=False)
    humidity: float | None = Field(default=None, ge=0.0, le=100.0, allow_inf_nan=False)


class StatusBody(BaseModel):
    """A device's presence: published retained on connect, and as the MQTT last will."""

    model_config = _BODY_CONFIG

    state: Literal["online", "offline"]
    boot: int = Field(ge=1)
    version: str = Field(min_length=1, max_length=64)
