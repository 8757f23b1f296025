"""The notification package's error root; callers catch these, never sqlite3's."""

from __future__ import annotations

from gateway.errors import GatewayError


class NotifyError(GatewayError):
    """An alert could not be queued for its webhooks (the notifier is not running, or the
    queue file cannot be written): the caller knows the alert is *not* durably queued."""
