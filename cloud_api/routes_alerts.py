"""Alerts: filter, acknowledge, resolve (the same ledger columns the CLI and the
cold-chain engine use; the engine picks a person's action up on its next tick)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from sqlalchemy import ColumnElement, and_, select

from cloud_api.auth import Principal
from cloud_api.context import (
    Reader,
    ServicesDep,
    page_of,
    require,
    station_in_scope,
    visible_ids,
)
from cloud_api.routes_stations import aware
from cloud_api.schemas import AlertOut, Page, iso
from gateway.ledger import AlertRow
from gateway.ledger import schema as t

router = APIRouter(prefix="/api/v1", tags=["alerts"])

State = Literal["open", "acknowledged", "resolved"]
AlertId = Annotated[str, Path(pattern=r"^(alert:)?[0-9]{1,9}$", description="N or alert:N")]
Actor = Annotated[Principal, Depends(require("alerts"))]


def alert_out(row: AlertRow) -> AlertOut:
    return AlertOut(
        id=row.id,
        ref=f"alert:{row.id}",
        station=row.station,
        device=row.device,
        subject=row.subject,
        kind=row.kind,
        severity=row.severity,
        state=row.state,
        raised_at=iso(row.raised_at) or "",
        escalated_at=iso(row.escalated_at),
        acknowledged_by=row.acknowledged_by,
        acknowledged_at=iso(row.acknowledged_at),
        resolved_by=row.resolved_by,
        resolved_at=iso(row.resolved_at),
        waybill=row.waybill,
        details=dict(row.details),
    )


@router.get(
    "/alerts", response_model=Page[AlertOut], responses={422: {"description": "Bad filter"}}
)
def alerts(
    user: Reader,
    services: ServicesDep,
    state: Annotated[list[State] | None, Query(description="repeat for several")] = None,
    station: Annotated[str | None, Query(max_length=64)] = None,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    since: Annotated[datetime | None, Query(description="raised at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="raised before (ISO 8601)")] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page[AlertOut]:
    """Alerts of the stations in the user's scopes, newest first."""
    stations = visible_ids(services, user, station)
    a = t.alerts.c
    where: list[ColumnElement[bool]] = [a.station.in_(stations)]
    if state:
        where.append(a.state.in_(state))
    if kind is not None:
        where.append(a.kind == kind)
    if since is not None:
        where.append(a.raised_at >= aware(since, "since"))
    if until is not None:
        where.append(a.raised_at < aware(until, "until"))
    newest_first = select(a.id).order_by(a.raised_at.desc(), a.id.desc())
    with services.ledger.transaction(write=False) as tx:
        found, total = page_of(tx.connection, newest_first, and_(*where), page, per_page)
        rows = [tx.alert(int(row.id)) for row in found]
    items = [alert_out(row) for row in rows if row is not None]
    return Page[AlertOut](items=items, page=page, per_page=per_page, total=int(total))


def _number(alert_id: str) -> int:
    return int(alert_id.removeprefix("alert:"))


def _act(alert_id: str, user: Principal, services: ServicesDep, action: str) -> AlertOut:
    number = _number(alert_id)
    with services.ledger.transaction(write=False) as tx:
        row = tx.alert(number)
    if row is None:
        raise HTTPException(404, f"no alert:{number}")
    station_in_scope(services, user, row.station)
    now = services.now()
    with services.ledger.transaction() as tx:
        if action == "acknowledge":
            done = tx.acknowledge_alert(number, by=user.name, at=now)
        else:
            done = tx.resolve_alert(number, by=user.name, at=now)
        if not done:
            raise HTTPException(409, f"alert:{number} is {row.state}; cannot {action} it")
        tx.audit(
            user=user.name,
            action=f"alert_{action}",
            target=f"alert:{number}",
            at=now,
            station=row.station,
        )
        changed = tx.alert(number)
    assert changed is not None
    return alert_out(changed)


_ACT_RESPONSES: dict[int | str, dict[str, str]] = {
    403: {"description": "Role may not act on alerts, or outside scopes"},
    404: {"description": "No such alert"},
    409: {"description": "Not in a state that allows it"},
}


@router.post("/alerts/{alert_id}/acknowledge", response_model=AlertOut, responses=_ACT_RESPONSES)
def acknowledge(alert_id: AlertId, user: Actor, services: ServicesDep) -> AlertOut:
    """Someone is on it: open → acknowledged (escalation stops); audited."""
    return _act(alert_id, user, services, "acknowledge")


@router.post("/alerts/{alert_id}/resolve", response_model=AlertOut, responses=_ACT_RESPONSES)
def resolve(alert_id: AlertId, user: Actor, services: ServicesDep) -> AlertOut:
    """Done with it: open or acknowledged → resolved; audited."""
    return _act(alert_id, user, services, "resolve")
