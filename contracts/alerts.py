"""Alerts the gateway raises, as published on ``postedge/v1/{station}/_alerts``.

An alert names what it is about (``subject``: a waybill, a probe), how bad it is, and its
state in the lifecycle open → acknowledged → resolved. The cold-chain engine publishes
the latest alert per probe retained; security alerts (an X-ray hold) are not retained:
each is its own event. ``details`` never holds personal data.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, JsonValue, StringConstraints

from contracts.ids import Identifier
from contracts.models import MESSAGE
from contracts.timestamps import UtcTimestamp

AlertKind = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class AlertMessage(BaseModel):
    model_config = MESSAGE

    schema_version: Literal[1] = Field(default=1, alias="schema")
    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,160}$")]
    station: Identifier
    kind: AlertKind = Field(description="e.g. xray_hold, temperature_high, probe_offline")
    severity: Literal["info", "warning", "critical"]
    state: Literal["open", "acknowledged", "resolved"] = "open"
    subject: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    raised_at: UtcTimestamp
    details: dict[str, JsonValue] = Field(default_factory=dict)
