"""``postedge gateway alerts``: list, acknowledge and resolve alerts in the ledger.

Station staff and supervisors without the dashboard use this; the cold-chain engine sees
an acknowledgement or resolution on its next tick (``[coldchain] tick_s``), stops the
escalation or restarts the delay, and publishes the alert's new state.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from contracts.errors import InvalidId
from contracts.ids import validate_id
from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.ledger import Ledger

STATES = ("open", "acknowledged", "resolved")


def add_alerts(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    alerts = sub.add_parser(
        "alerts",
        help="list, acknowledge and resolve alerts in the ledger",
        description=(
            "Alerts the gateway raised (cold chain: temperature_high/low, probe_offline, "
            "sensor_fault, door_open; security: xray_hold), from the [ledger] of GATEWAY.toml."
        ),
    )
    sub_alerts = alerts.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)
    listing = sub_alerts.add_parser("list", help="alerts, newest first (open and acknowledged)")
    listing.add_argument("config", type=Path, metavar="GATEWAY.toml")
    listing.add_argument("--station", help="only this station's")
    listing.add_argument(
        "--state", action="append", choices=STATES, help="these states (repeatable)"
    )
    listing.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    listing.set_defaults(func=_list)
    for action, verb in (("ack", "acknowledge"), ("resolve", "resolve")):
        change = sub_alerts.add_parser(action, help=f"{verb} an alert")
        change.add_argument("config", type=Path, metavar="GATEWAY.toml")
        change.add_argument("alert", metavar="ID", help="alert id, e.g. alert:12 or 12")
        change.add_argument("--by", required=True, metavar="USER", help="who (a user id)")
        change.set_defaults(func=_change, action=action)


def _open_ledger(path: Path) -> Ledger:
    from gateway.config import load_gateway_config
    from gateway.ledger import Ledger

    config = load_gateway_config(path)
    if config.ledger is None:
        raise GatewayError(f"{path}: no [ledger] section, so no alerts")
    return Ledger(config.ledger.url)


def _list(args: argparse.Namespace) -> int:
    ledger = _open_ledger(args.config)
    with ledger, ledger.transaction(write=False) as tx:
        rows = tx.alerts(
            states=args.state or ("open", "acknowledged"), station=args.station, limit=args.limit
        )
    for row in rows:
        raised = row.raised_at.isoformat(timespec="seconds")
        print(
            f"alert:{row.id}\t{row.station}\t{row.kind}\t{row.severity}\t{row.state}\t"
            f"{row.subject or row.waybill or ''}\t{raised}"
        )
    if not rows:
        print("no alerts")
    return 0


def _change(args: argparse.Namespace) -> int:
    text = str(args.alert).removeprefix("alert:")
    if not text.isdigit():
        raise GatewayError(f"alert id {args.alert!r} is not alert:N or N")
    try:
        by = validate_id(args.by, "user")
    except InvalidId as exc:
        raise GatewayError(str(exc)) from None
    ledger = _open_ledger(args.config)
    now = datetime.now(UTC)
    with ledger, ledger.transaction() as tx:
        row = tx.alert(int(text))
        if row is None:
            raise GatewayError(f"no alert:{text}")
        if args.action == "ack":
            done = tx.acknowledge_alert(row.id, by=by, at=now)
        else:
            done = tx.resolve_alert(row.id, by=by, at=now)
    if not done:
        print(f"alert:{row.id} is {row.state}: nothing to do")
        return 1
    print(f"alert:{row.id} {'acknowledged' if args.action == 'ack' else 'resolved'} by {by}")
    return 0
