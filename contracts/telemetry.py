"""Bodies of telemetry messages (channel ``telemetry``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from contracts.ids import Identifier
from contracts.models import BODY


class TemperatureBody(BaseModel):
    """One probe reading: temperature, and relative humidity where the probe has it."""

    model_config = BODY

    probe: Identifier
    celsius: float = Field(ge=-273.15, allow_inf_nan=False)
    humidity: float | None = Field(default=None, ge=0.0, le=100.0, allow_inf_nan=False)


class StatusBody(BaseModel):
    """A device's presence: published retained on connect, and as the MQTT last will."""

    model_config = BODY

    state: Literal["online", "offline"]
    boot: int = Field(ge=1)
    version: str = Field(min_length=1, max_length=64)


LinkState = Literal["up", "down"]


class HealthBody(BaseModel):
    """The edge agent's own health, published once a minute on its health device's
    telemetry topic (kind ``health``)."""

    model_config = BODY

    uptime_s: float = Field(ge=0, allow_inf_nan=False)
    cpu_percent: float = Field(ge=0, allow_inf_nan=False, description="share of one core")
    rss_bytes: int = Field(ge=0)
    disk_free_bytes: int = Field(ge=0)
    outbox_depth: int = Field(ge=0, description="messages not yet confirmed by a receipt")
    outbox_bytes: int = Field(ge=0)
    oldest_unconfirmed_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    thinned: int = Field(ge=0, description="temperature readings thinned out since install")
    links: dict[Identifier, LinkState] = Field(max_length=256)
    warnings: list[Annotated[str, StringConstraints(max_length=200)]] = Field(
        default_factory=list, max_length=20
    )
