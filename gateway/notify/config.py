"""The ``[notify]`` section of the gateway file: webhooks that receive alerts.

Example (see docs/notifications.md)::

    [notify]
    queue_path = "notify.sqlite"
    per_station_per_minute = 6

    [[notify.webhooks]]
    name = "qa-robot"
    url = "https://oapi.dingtalk.com/robot/send?access_token=..."
    format = "dingtalk"
    secret = "SEC..."
    min_severity = "critical"

A webhook URL is a credential (the robots' ``access_token``/``key`` is in it), so the
notifier logs webhook *names*, never URLs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from contracts.ids import Identifier

_STRICT = ConfigDict(extra="forbid", frozen=True)

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
"""Severities in order, for ``min_severity``."""


class WebhookConfig(BaseModel):
    """One receiver: where, in which format, and which alerts it wants."""

    model_config = _STRICT

    name: Identifier
    url: str = Field(description="http(s) URL, robots' token included")
    format: Literal["json", "wecom", "dingtalk"] = "json"
    secret: SecretStr | None = Field(
        default=None,
        description="json: HMAC key of X-Postedge-Signature; dingtalk: the robot's 加签 "
        "secret; wecom: none",
    )
    stations: list[Identifier] = Field(
        default_factory=list, description="only these stations' alerts; empty: every station"
    )
    min_severity: Severity = "warning"
    timeout_s: float = Field(default=5.0, gt=0, le=120)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if any(c.isspace() for c in value):
            raise ValueError("must not contain white space")
        return value

    @model_validator(mode="after")
    def _wecom_has_no_secret(self) -> Self:
        # A secret that would silently be ignored is a misconfiguration: say so at start-up.
        if self.format == "wecom" and self.secret is not None:
            raise ValueError("a wecom robot takes no secret (its key is in the URL)")
        return self

    def wants(self, station: str, severity: str) -> bool:
        """Whether an alert of ``station`` and ``severity`` goes to this webhook."""
        if self.stations and station not in self.stations:
            return False
        return SEVERITY_RANK[severity] >= SEVERITY_RANK[self.min_severity]


class NotifyConfig(BaseModel):
    """The delivery queue, the webhooks, and the retry and rate-limit policy."""

    model_config = _STRICT

    queue_path: Path = Path("notify.sqlite")
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    per_station_per_minute: int = Field(
        default=6,
        ge=1,
        le=600,
        description="deliveries per station and webhook per minute; more wait in the queue",
    )
    retry_initial_s: float = Field(default=2.0, gt=0)
    retry_max_s: float = Field(default=300.0, gt=0)
    give_up_after_s: float = Field(default=86400.0, gt=0, description="since the alert was queued")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [webhook.name for webhook in self.webhooks]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"webhook names must be unique: {', '.join(duplicates)}")
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s must be at least retry_initial_s")
        return self

    def webhook(self, name: str) -> WebhookConfig | None:
        return next((webhook for webhook in self.webhooks if webhook.name == name), None)
