"""Alert messages made from the ledger's alert rows.

:func:`alert_message` is the message the engines publish and notify for a row.
:func:`unannounced_candidates` is what a starting gateway hands its webhook notifier
again: every alert still open that was raised or escalated within the window, in the
form it was notified (state ``open``, its current severity). The delivery queue keeps
one row per alert state, severity and webhook, so what it already holds (delivered or
not) adds nothing, while a notification whose queueing failed after the ledger had
committed the alert (a full disk, say: counted as ``*.notify_failed``) is queued now.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from contracts.alerts import AlertMessage
from gateway.ledger import AlertRow, LedgerTx

CATCH_UP_WINDOW = timedelta(days=7)
"""How far back a starting gateway looks; well inside the delivery queue's 30 days of
finished rows, so nothing delivered is delivered again."""
_OPEN_LIMIT = 10_000


def alert_message(row: AlertRow, details: Mapping[str, Any] | None = None) -> AlertMessage:
    """The message for ``row`` as it stands, with ``details`` over the stored ones."""
    return AlertMessage(
        id=f"alert:{row.id}",
        station=row.station,
        kind=row.kind,
        severity=row.severity,
        state=row.state,
        subject=row.subject or row.waybill or row.kind,
        raised_at=row.raised_at,
        details={**row.details, **(details or {})},
    )


def unannounced_candidates(tx: LedgerTx, now: datetime) -> list[AlertMessage]:
    """Open alerts raised or escalated since ``now - CATCH_UP_WINDOW``, oldest first."""
    since = now - CATCH_UP_WINDOW
    rows = tx.alerts(states=("open",), limit=_OPEN_LIMIT)
    recent = [
        row
        for row in rows
        if row.raised_at >= since or (row.escalated_at is not None and row.escalated_at >= since)
    ]
    return [alert_message(row) for row in reversed(recent)]
