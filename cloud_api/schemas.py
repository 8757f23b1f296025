"""The API's JSON shapes (they are the OpenAPI document's schemas)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field, field_validator

from contracts import format_utc_ms

T = TypeVar("T")


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds and ``Z``; None stays None."""
    return format_utc_ms(value.astimezone(UTC)) if value is not None else None


class Page(BaseModel, Generic[T]):
    items: list[T]
    page: int = Field(description="1-based")
    per_page: int
    total: int = Field(description="items on all pages")


class UserOut(BaseModel):
    name: str
    role: str
    scopes: list[str]
    permissions: list[str]
    active: bool = True


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class LoginOut(BaseModel):
    token: str = Field(description="also set as the HttpOnly cookie postedge_session")
    expires_at: str | None
    user: UserOut


class UserIn(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    role: str = Field(description="supervisor, operator, auditor or admin")
    scopes: list[str] = Field(description="'*', 'station:ID' or 'division:PREFIX'")
    password: str | None = Field(
        default=None, min_length=8, max_length=256, description="required for a new user"
    )
    active: bool = True


class TokenIn(BaseModel):
    label: str = Field(min_length=1, max_length=200)
    expires_days: int | None = Field(default=None, ge=1, le=3650, description="None: no expiry")


class TokenOut(BaseModel):
    id: int
    user: str
    kind: str
    label: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    last_used_at: str | None
    token: str | None = Field(default=None, description="the clear token, only when made")


class AuditOut(BaseModel):
    id: int
    at: str
    user: str
    action: str
    station: str | None
    target: str
    details: dict[str, Any]


class DeviceOut(BaseModel):
    id: str
    role: str | None = Field(description="None for a device seen only in telemetry")
    online: bool
    last_seen: str | None = Field(description="time of its latest status message")
    probes: list[str]


class StationOut(BaseModel):
    id: str
    name: str
    division: str
    tier: str
    online: int = Field(description="devices online now")
    open_alerts: int = Field(description="alerts not yet resolved")
    devices: list[DeviceOut]


class ProfileOut(BaseModel):
    name: str
    low_c: float | None
    high_c: float | None
    critical_low_c: float | None
    critical_high_c: float | None


class TemperaturePointOut(BaseModel):
    ts: str
    celsius: float = Field(description="the reading, or the bucket's mean")
    min: float | None = Field(default=None, description="the bucket's minimum (downsampled)")
    max: float | None = Field(default=None, description="the bucket's maximum (downsampled)")


class TemperatureSeriesOut(BaseModel):
    station: str
    device: str
    probe: str
    every: str | None
    profile: ProfileOut | None
    points: list[TemperaturePointOut]


class AlertOut(BaseModel):
    id: int
    ref: str = Field(description="alert:N, as in MQTT alert messages")
    station: str
    device: str | None
    subject: str | None
    kind: str
    severity: str
    state: str
    raised_at: str
    escalated_at: str | None
    acknowledged_by: str | None
    acknowledged_at: str | None
    resolved_by: str | None
    resolved_at: str | None
    waybill: str | None
    details: dict[str, Any]


class ParcelOut(BaseModel):
    waybill: str
    station: str
    destination: str
    accepted_at: str
    cleared: bool
    hold: bool


class RealnameOut(BaseModel):
    id_type: str
    masked_number: str
    masked_name: str
    masked_phone: str | None


class ClearanceOut(BaseModel):
    cleared: bool
    realname: bool
    xray: str | None = Field(description="the latest verdict: PASS, SUSPECT, FAIL")
    hold: str | None = Field(description="the reason of the open hold")


class TraceEventOut(BaseModel):
    at: str
    kind: str
    station: str | None
    device: str | None
    summary: str
    details: dict[str, Any]


class DecisionOut(BaseModel):
    id: str
    kind: str
    outcome: str
    reason: str | None
    facts: dict[str, Any]
    decided_at: str
    station: str
    device: str


class TraceOut(BaseModel):
    waybill: str
    station: str | None
    destination: str | None
    accepted_at: str | None
    clerk: str | None
    realname: RealnameOut | None
    clearance: ClearanceOut
    events: list[TraceEventOut]
    decisions: list[DecisionOut]


_NUMBER_LIKE = re.compile(r"[0-9]{11,}|[0-9]{14,17}[Xx]")
"""A mobile number (11 digits) or an identity document number (15 or 18 characters)."""


class RevealIn(BaseModel):
    reason: str = Field(
        min_length=3,
        max_length=200,
        description="why; kept in the audit trail as written, so it may not hold an "
        "identity document or phone number",
    )

    @field_validator("reason")
    @classmethod
    def _no_numbers_of_people(cls, reason: str) -> str:
        """The audit trail is read by every auditor: a reason that quotes the number it
        asks for (or a caller's phone) would keep it there in clear."""
        if _NUMBER_LIKE.search(re.sub(r"[\s\-]", "", reason)):
            raise ValueError(
                "must not hold an identity document or phone number (it is kept in the "
                "audit trail); name a ticket or case instead"
            )
        return reason


class RevealOut(BaseModel):
    id_type: str
    number: str
    name: str


class CommandIn(BaseModel):
    station: str
    device: str
    command: str = Field(description="open_slot or set_profile")
    args: dict[str, Any] = Field(default_factory=dict)


class CommandOut(BaseModel):
    id: str
    command: str
    topic: str
    expires: str
