"""What a starting gateway hands its webhook notifier again (``gateway.alerts``), on
SQLite and PostgreSQL ledgers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from gateway.alerts import CATCH_UP_WINDOW, alert_message, unannounced_candidates
from gateway.ledger import Ledger, LedgerTx
from tests.apiworld import registry

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    with Ledger(ledger_url) as opened:
        opened.sync_registry(registry())  # station village-23
        yield opened


def raise_alert(tx: LedgerTx, subject: str, raised_at: datetime) -> int:
    return tx.add_alert(
        station="village-23", kind="temperature_high", waybill=None, severity="warning",
        details={"celsius": 9.5}, raised_at=raised_at, subject=subject,
    )  # fmt: skip


def test_open_alerts_raised_or_escalated_within_the_window_are_handed_over(
    ledger: Ledger,
) -> None:
    old = NOW - CATCH_UP_WINDOW - HOUR
    with ledger.transaction() as tx:
        recent = raise_alert(tx, "recent", NOW - 2 * HOUR)
        raise_alert(tx, "old", old)
        escalated = raise_alert(tx, "old-escalated", old)
        tx.escalate_alert(escalated, severity="critical", at=NOW - HOUR)
        acknowledged = raise_alert(tx, "acknowledged", NOW - HOUR)
        tx.acknowledge_alert(acknowledged, by="qa", at=NOW)
        resolved = raise_alert(tx, "resolved", NOW - HOUR)
        tx.resolve_alert(resolved, by="qa", at=NOW)
    with ledger.transaction(write=False) as tx:
        handed = unannounced_candidates(tx, NOW)
        expected = [alert_message(row) for row in (tx.alert(escalated), tx.alert(recent)) if row]
    assert [(m.subject, m.state, m.severity) for m in handed] == [
        ("old-escalated", "open", "critical"),  # oldest first
        ("recent", "open", "warning"),
    ]
    assert handed == expected  # the same message the engine announced, state and all
    assert handed[1].details == {"celsius": 9.5}
