"""Alerts rendered as webhook requests, and webhook answers judged: pure functions.

Three formats:

- ``json``: the body is the alert exactly as on the MQTT alert topic
  (:class:`contracts.alerts.AlertMessage` as JSON). Headers: ``Content-Type:
  application/json``, ``X-Postedge-Timestamp: <unix seconds>`` and, when the webhook has
  a secret, ``X-Postedge-Signature: sha256=<hex>``. The signature is HMAC-SHA256, keyed
  by the secret (UTF-8), over ``b"<timestamp>." + body`` (the timestamp header's decimal
  text, a dot, then the raw body bytes). A receiver recomputes it with
  :func:`verify_signature` (constant-time comparison) and should also refuse timestamps
  far from its own clock (say, more than five minutes), so a captured request cannot be
  replayed later. Binding the timestamp into the MAC is what makes that check sound.
- ``wecom``: a WeCom (企业微信) group robot message, ``{"msgtype": "markdown",
  "markdown": {"content": ...}}``; the robot's key is in its URL, there is no signing.
- ``dingtalk``: a DingTalk (钉钉) group robot message, ``{"msgtype": "markdown",
  "markdown": {"title": ..., "text": ...}}``. With a secret (加签), DingTalk's scheme:
  ``&timestamp=<ms>&sign=<sign>`` appended to the URL, where ``sign`` is the URL-encoded
  base64 of HMAC-SHA256 of ``f"{timestamp_ms}\\n{secret}"`` keyed by the secret.

The markdown holds the alert and nothing more (details never hold personal data: the
gateway guarantees it). Times come in as an argument, so the output is exact in tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote_plus

from pydantic import JsonValue

from contracts.alerts import AlertMessage
from contracts.timestamps import format_utc_ms
from gateway.notify.config import WebhookConfig

SIGNATURE_HEADER: Final = "X-Postedge-Signature"
TIMESTAMP_HEADER: Final = "X-Postedge-Timestamp"
WECOM_MAX_BYTES: Final = 4096
"""WeCom refuses markdown content longer than this (UTF-8 bytes)."""

_HEADLINE: Final = {
    "open": "告警 Alert",
    "acknowledged": "告警已确认 Alert acknowledged",
    "resolved": "告警解除 Alert resolved",
}


@dataclass(frozen=True)
class WebhookRequest:
    """One POST: the URL (signed, for dingtalk), the body and its headers."""

    url: str
    body: bytes
    headers: dict[str, str]


def render(alert: AlertMessage, webhook: WebhookConfig, now: float) -> WebhookRequest:
    """``alert`` as ``webhook``'s format wants it; ``now`` is the Unix time of sending."""
    secret = webhook.secret.get_secret_value() if webhook.secret is not None else None
    if webhook.format == "wecom":
        return render_wecom(alert, webhook.url)
    if webhook.format == "dingtalk":
        return render_dingtalk(alert, webhook.url, secret, now)
    return render_json(alert, webhook.url, secret, now)


def render_json(alert: AlertMessage, url: str, secret: str | None, now: float) -> WebhookRequest:
    body = alert.model_dump_json(by_alias=True).encode()
    timestamp = str(int(now))
    headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp}
    if secret is not None:
        headers[SIGNATURE_HEADER] = "sha256=" + _json_mac(secret, timestamp, body)
    return WebhookRequest(url, body, headers)


def verify_signature(secret: str, timestamp: str, body: bytes, header: str) -> bool:
    """Whether ``header`` (``sha256=<hex>``) signs ``timestamp`` and ``body`` with ``secret``.

    For receivers of the ``json`` format; check the timestamp's age separately.
    """
    expected = "sha256=" + _json_mac(secret, timestamp, body)
    return hmac.compare_digest(expected.encode(), header.encode())


def _json_mac(secret: str, timestamp: str, body: bytes) -> str:
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def render_wecom(alert: AlertMessage, url: str) -> WebhookRequest:
    content = _truncate("\n".join(markdown_lines(alert)), WECOM_MAX_BYTES)
    return _robot_request(url, {"msgtype": "markdown", "markdown": {"content": content}})


def render_dingtalk(
    alert: AlertMessage, url: str, secret: str | None, now: float
) -> WebhookRequest:
    # DingTalk's markdown needs a blank line to break a line.
    text = "\n\n".join(markdown_lines(alert))
    title = f"[postedge] {alert.kind} ({alert.severity})"
    if secret is not None:
        timestamp_ms = int(now * 1000)
        separator = "&" if "?" in url else "?"
        url = f"{url}{separator}timestamp={timestamp_ms}&sign={dingtalk_sign(secret, timestamp_ms)}"
    return _robot_request(url, {"msgtype": "markdown", "markdown": {"title": title, "text": text}})


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's 加签 value, URL-encoded, for ``timestamp_ms``."""
    to_sign = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode(), to_sign, hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest))


def markdown_lines(alert: AlertMessage) -> list[str]:
    """Short bilingual lines for a robot: headline, station, subject, state, time, details."""
    headline = _HEADLINE[alert.state]
    lines = [
        f"**[postedge] {headline}: {alert.kind} ({alert.severity})**",
        f"站点 Station: {alert.station}",
        f"对象 Subject: {_one_line(alert.subject)}",
        f"状态 State: {alert.state}",
        f"时间 Raised: {format_utc_ms(alert.raised_at)}",
    ]
    lines.extend(f"{_one_line(key)}: {_value(value)}" for key, value in alert.details.items())
    return lines


def answer_error(format: str, status: int, body: bytes) -> str | None:
    """Why a webhook's answer is not a delivery, or None if it is one.

    Any 2xx is a delivery, except that the robots answer 200 with ``errcode != 0`` when they
    refused the message (bad sign, rate limit, ...): that is worth retrying too.
    """
    if not 200 <= status < 300:
        return f"HTTP {status}"
    if format not in ("wecom", "dingtalk"):
        return None
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    if isinstance(answer, dict) and "errcode" in answer and answer["errcode"] != 0:
        errmsg = _one_line(str(answer.get("errmsg", "")))[:120]
        return f"errcode {answer['errcode']}: {errmsg}"
    return None


def _robot_request(url: str, message: dict[str, object]) -> WebhookRequest:
    body = json.dumps(message, ensure_ascii=False).encode()
    return WebhookRequest(url, body, {"Content-Type": "application/json; charset=utf-8"})


def _value(value: JsonValue) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return _one_line(text)


def _one_line(text: str) -> str:
    """A value cannot start a line of its own (and so cannot pass for another field)."""
    return " ".join(text.splitlines())


def _truncate(text: str, max_bytes: int) -> str:
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    return data[: max_bytes - 3].decode(errors="ignore") + "…"
