"""Parcels: search, trace (every event of a waybill in order, its clearance and the
decisions with their reasons), and the audited real-name reveal."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from sqlalchemy import ColumnElement, Connection, and_, select

from cloud_api.auth import Principal
from cloud_api.context import (
    Reader,
    ServicesDep,
    audit,
    page_of,
    require,
    station_in_scope,
    stations_in_scope,
    visible_ids,
)
from cloud_api.schemas import (
    ClearanceOut,
    DecisionOut,
    Page,
    ParcelOut,
    RealnameOut,
    RevealIn,
    RevealOut,
    TraceEventOut,
    TraceOut,
    iso,
)
from gateway.ledger import schema as t
from gateway.personal import PersonalDataError

router = APIRouter(prefix="/api/v1", tags=["parcels"])

Waybill = Annotated[str, Path(pattern=r"^[A-Za-z0-9-]{1,40}$")]
Revealer = Annotated[Principal, Depends(require("reveal"))]


@router.get("/parcels", response_model=Page[ParcelOut])
def parcels(
    user: Reader,
    services: ServicesDep,
    waybill: Annotated[
        str | None, Query(pattern=r"^[A-Za-z0-9-]{1,40}$", description="prefix")
    ] = None,
    station: Annotated[str | None, Query(max_length=64)] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page[ParcelOut]:
    """Parcels accepted at stations in the user's scopes, newest first."""
    stations = visible_ids(services, user, station)
    p = t.parcels.c
    where: list[ColumnElement[bool]] = [p.station.in_(stations)]
    if waybill is not None:
        where.append(p.waybill.startswith(waybill, autoescape=True))
    newest_first = select(t.parcels).order_by(p.accepted_at.desc(), p.waybill)
    with services.ledger.transaction(write=False) as tx:
        rows, total = page_of(tx.connection, newest_first, and_(*where), page, per_page)
        waybills = [row.waybill for row in rows]
        states = _clearances(tx.connection, waybills)
    items = [
        ParcelOut(
            waybill=row.waybill,
            station=row.station,
            destination=row.destination,
            accepted_at=iso(row.accepted_at) or "",
            cleared=states[row.waybill].cleared,
            hold=states[row.waybill].hold is not None,
        )
        for row in rows
    ]
    return Page[ParcelOut](items=items, page=page, per_page=per_page, total=int(total))


def _clearances(connection: Connection, waybills: list[str]) -> dict[str, ClearanceOut]:
    """Clearance of several waybills in three queries: real-name, latest verdict, hold."""
    if not waybills:
        return {}
    named = set(
        connection.execute(
            select(t.realname_records.c.waybill).where(t.realname_records.c.waybill.in_(waybills))
        ).scalars()
    )
    x = t.xray_verdicts.c
    latest: dict[str, str] = {}
    for row in connection.execute(
        select(x.waybill, x.verdict).where(x.waybill.in_(waybills)).order_by(x.scanned_at, x.id)
    ):
        latest[row.waybill] = row.verdict
    h = t.holds.c
    holds = dict(
        connection.execute(
            select(h.waybill, h.reason).where(h.waybill.in_(waybills), h.released_at.is_(None))
        ).all()
    )
    out = {}
    for waybill in waybills:
        realname, xray, hold = waybill in named, latest.get(waybill), holds.get(waybill)
        out[waybill] = ClearanceOut(
            cleared=realname and xray == "PASS" and hold is None,
            realname=realname,
            xray=xray,
            hold=hold,
        )
    return out


@router.get(
    "/parcels/{waybill}/trace",
    response_model=TraceOut,
    responses={403: {"description": "Outside your scopes"}, 404: {"description": "Unknown"}},
)
def trace(waybill: Waybill, user: Reader, services: ServicesDep) -> TraceOut:
    """Every event of the waybill in time order, its clearance, and every decision with
    its reason and the facts it used."""
    with services.ledger.transaction(write=False) as tx:
        connection = tx.connection
        parcel = connection.execute(select(t.parcels).where(t.parcels.c.waybill == waybill)).first()
        events = _events(connection, waybill)
        decisions = tx.decisions_for(waybill)
        realname = tx.realname(waybill)
        clearance = _clearances(connection, [waybill])[waybill]
    stations = {event.station for event in events if event.station} | {d.station for d in decisions}
    if parcel is not None:
        stations.add(parcel.station)
    if parcel is None and not events and not decisions:
        raise HTTPException(404, f"no parcel {waybill}")
    visible = {ref.id for ref in stations_in_scope(services, user)}
    if not stations & visible:
        raise HTTPException(403, f"parcel {waybill} is outside your scopes")
    return TraceOut(
        waybill=waybill,
        station=parcel.station if parcel else None,
        destination=parcel.destination if parcel else None,
        accepted_at=iso(parcel.accepted_at) if parcel else None,
        clerk=parcel.clerk if parcel else None,
        realname=RealnameOut(
            id_type=realname.id_type,
            masked_number=realname.masked_number,
            masked_name=realname.masked_name,
            masked_phone=realname.masked_phone,
        )
        if realname
        else None,
        clearance=clearance,
        events=events,
        decisions=[
            DecisionOut(
                id=d.id,
                kind=d.kind,
                outcome=d.outcome,
                reason=d.reason,
                facts=dict(d.facts),
                decided_at=iso(d.decided_at) or "",
                station=d.station,
                device=d.device,
            )
            for d in decisions
        ],
    )


def _events(connection: Connection, waybill: str) -> list[TraceEventOut]:
    """The waybill's facts from every table, oldest first (no personal data)."""
    found: list[tuple[Any, int, TraceEventOut]] = []

    def add(at: Any, kind: str, station: str | None, device: str | None, summary: str,
            **details: Any) -> None:  # fmt: skip
        event = TraceEventOut(
            at=iso(at) or "",
            kind=kind,
            station=station,
            device=device,
            summary=summary,
            details=details,
        )
        found.append((at, len(found), event))

    p = connection.execute(select(t.parcels).where(t.parcels.c.waybill == waybill)).first()
    if p is not None:
        inspection = connection.execute(
            select(t.inspections).where(t.inspections.c.waybill == waybill)
        ).first()
        add(p.accepted_at, "acceptance", p.station, p.device,
            f"accepted by {p.clerk} for {p.destination}",
            destination=p.destination, clerk=p.clerk,
            inspected=bool(inspection.inspected) if inspection else None)  # fmt: skip
    x = t.xray_verdicts.c
    for row in connection.execute(select(t.xray_verdicts).where(x.waybill == waybill)):
        add(row.scanned_at, "xray", row.station, row.device, f"X-ray {row.verdict}",
            verdict=row.verdict, operator=row.operator)  # fmt: skip
    for row in connection.execute(select(t.holds).where(t.holds.c.waybill == waybill)):
        add(row.since, "hold", None, None, f"held: {row.reason}", reason=row.reason)
        if row.released_at is not None:
            add(row.released_at, "hold_released", None, None,
                f"hold released by {row.released_by}", released_by=row.released_by)  # fmt: skip
    i = t.inductions.c
    for row in connection.execute(
        select(t.inductions, t.devices.c.station)
        .join(t.devices, t.devices.c.id == i.sorter)
        .where(i.waybill == waybill)
    ):
        add(row.inducted_at, "induction", row.station, row.sorter,
            f"inducted on {row.sorter}, chute {row.chute}",
            chute=row.chute, routed=row.routed, transaction=row.transaction_no)  # fmt: skip
    c = t.pickup_codes.c
    for row in connection.execute(select(t.pickup_codes).where(c.waybill == waybill)):
        add(row.issued_at, "deposit", row.station, row.device,
            f"in locker {row.device} board {row.board} lock {row.lock}, pickup code issued",
            board=row.board, lock=row.lock)  # fmt: skip
        if row.used_at is not None:
            kind = "pickup" if row.closed == "pickup" else "code_closed"
            add(row.used_at, kind, row.station, row.device, f"code closed: {row.closed}",
                closed=row.closed)  # fmt: skip
    s = t.coldchain_stays.c
    for row in connection.execute(select(t.coldchain_stays).where(s.waybill == waybill)):
        add(row.since, "cold_stay", row.station, row.device,
            f"in cold compartment {row.board}/{row.lock}",
            probe=f"{row.probe_device}/{row.probe}",
            until=iso(row.until))  # fmt: skip
    a = t.alerts.c
    for row in connection.execute(select(t.alerts).where(a.waybill == waybill)):
        add(row.raised_at, "alert", row.station, row.device,
            f"alert:{row.id} {row.kind} ({row.severity}), {row.state}",
            alert=f"alert:{row.id}", state=row.state)  # fmt: skip
    found.sort(key=lambda item: (item[0], item[1]))
    return [event for _, _, event in found]


@router.post(
    "/parcels/{waybill}/realname/reveal",
    response_model=RevealOut,
    responses={
        403: {"description": "Not an auditor, or outside scopes"},
        404: {"description": "No real-name record"},
        503: {"description": "No personal-data keys configured"},
    },
)
def reveal(waybill: Waybill, body: RevealIn, user: Revealer, services: ServicesDep) -> RevealOut:
    """The sender's name and document number in clear, for an auditor; every reveal is
    written to the audit trail (who, when, which waybill, why) before it is answered."""
    keyring = services.keyring
    with services.ledger.transaction(write=False) as tx:
        parcel = tx.parcel(waybill)
        record = tx.realname(waybill)
    if parcel is None or record is None:
        raise HTTPException(404, f"no real-name record for {waybill}")
    station_in_scope(services, user, parcel.station)
    if keyring is None:
        raise HTTPException(503, "no personal-data keys configured for the API")
    audit(services, user, "realname_reveal", waybill, station=parcel.station,
          details={"reason": body.reason})  # fmt: skip
    try:
        name, number = keyring.reveal(record.protected())
    except PersonalDataError as exc:
        raise HTTPException(503, str(exc)) from None
    return RevealOut(id_type=record.id_type, number=number, name=name)
