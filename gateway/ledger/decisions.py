"""Ledger rows of the decision path: processed messages, decisions, routing, inductions.

A mixin of :class:`gateway.ledger.repository.LedgerTx`; see there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, and_, bindparam, exists, insert, select, update

from gateway.ledger import schema as t
from gateway.registry import Routing

# The decision path's statements, built once: SQLAlchemy then only looks up their
# compiled form on each call instead of building and caching a new statement object
# (about three times cheaper per statement; see docs/PERFORMANCE.md).
_m, _dv, _r, _i = t.processed_messages.c, t.devices.c, t.routes.c, t.inductions.c
_PROCESSED = select(_m.request, _m.kind, _m.decision_id).where(_m.request == bindparam("request"))
_MARK_PROCESSED = insert(t.processed_messages)
_ADD_DECISION = insert(t.decisions)
_ADD_INDUCTION = insert(t.inductions)
_SORTER_CHUTE = select(_dv.exception_chute).where(
    and_(_dv.id == bindparam("sorter"), _dv.role == "sorter", _dv.active.is_(True))
)
_SORTER_ROUTES = select(_r.prefix, _r.chute).where(_r.sorter == bindparam("sorter"))
_INDUCTION_OF_TRANSACTION = (
    select(_i.request, _i.chute, _i.routed)
    .where(and_(_i.sorter == bindparam("sorter"), _i.transaction_no == bindparam("transaction")))
    .order_by(_i.inducted_at.desc())
    .limit(1)
)


def _sort_facts_statement() -> Select[Any]:
    """Everything a sort decision looks up about a waybill, in one round trip."""
    waybill: Any = bindparam("waybill")
    p, rn, h, x = t.parcels.c, t.realname_records.c, t.holds.c, t.xray_verdicts.c
    open_hold = and_(h.waybill == waybill, h.released_at.is_(None))
    routed_by_another = and_(
        _i.sorter == bindparam("sorter"),
        _i.waybill == waybill,
        _i.routed.is_(True),
        _i.request != bindparam("request"),
    )
    return select(
        exists().where(routed_by_another).label("routed_before"),
        select(p.destination).where(p.waybill == waybill).scalar_subquery().label("destination"),
        exists().where(rn.waybill == waybill).label("realname"),
        select(h.id).where(open_hold).limit(1).scalar_subquery().label("hold_id"),
        select(h.reason).where(open_hold).limit(1).scalar_subquery().label("hold_reason"),
        select(x.verdict)
        .where(x.waybill == waybill)
        .order_by(x.scanned_at.desc(), x.id.desc())
        .limit(1)
        .scalar_subquery()
        .label("verdict"),
    )


_SORT_FACTS = _sort_facts_statement()


@dataclass(frozen=True)
class Processed:
    """An event applied before: its kind and the decision it led to, if any."""

    request: str
    kind: str
    decision_id: str | None


@dataclass(frozen=True)
class DecisionRow:
    """A decision as stored: why (``reason``), from what (``facts``), and the published
    ``body`` (None when nothing was published)."""

    id: str
    station: str
    device: str
    request: str | None
    waybill: str | None
    kind: str
    outcome: str
    reason: str | None
    facts: Mapping[str, Any]
    body: Mapping[str, Any] | None
    decided_at: datetime


@dataclass(frozen=True)
class InductionRow:
    request: str
    chute: int
    """The chute decided for it."""
    routed: bool


@dataclass(frozen=True)
class SortFacts:
    """What a sort decision depends on, read at once (see :meth:`DecisionRows.sort_facts`)."""

    routed_before: bool
    destination: str | None
    """The parcel's destination; None when the ledger holds no parcel of that waybill."""
    realname: bool
    hold: tuple[int, str] | None
    """The open hold's (id, reason), if any."""
    verdict: str | None
    """The latest X-ray verdict (as :meth:`LedgerTx.latest_verdict`)."""


class DecisionRows:
    connection: Connection

    def processed(self, request: str) -> Processed | None:
        row = self.connection.execute(_PROCESSED, {"request": request}).first()
        return None if row is None else Processed(row.request, row.kind, row.decision_id)

    def mark_processed(
        self, request: str, kind: str, handled_at: datetime, decision_id: str | None
    ) -> None:
        """Record that ``request`` was applied; a concurrent duplicate raises a conflict."""
        self.connection.execute(
            _MARK_PROCESSED,
            {"request": request, "kind": kind, "handled_at": handled_at,
             "decision_id": decision_id},
        )  # fmt: skip

    def add_decision(self, decision: DecisionRow) -> None:
        self.connection.execute(
            _ADD_DECISION,
            {
                "id": decision.id,
                "station": decision.station,
                "device": decision.device,
                "request": decision.request,
                "waybill": decision.waybill,
                "kind": decision.kind,
                "outcome": decision.outcome,
                "reason": decision.reason,
                "facts": dict(decision.facts),
                "body": None if decision.body is None else dict(decision.body),
                "decided_at": decision.decided_at,
            },
        )

    def decision(self, decision_id: str) -> DecisionRow | None:
        d = t.decisions.c
        row = self.connection.execute(select(t.decisions).where(d.id == decision_id)).first()
        if row is None:
            return None
        return DecisionRow(
            id=row.id,
            station=row.station,
            device=row.device,
            request=row.request,
            waybill=row.waybill,
            kind=row.kind,
            outcome=row.outcome,
            reason=row.reason,
            facts=row.facts,
            body=row.body,
            decided_at=row.decided_at,
        )

    def decisions_for(self, waybill: str) -> list[DecisionRow]:
        """Every decision about ``waybill``, oldest first (a supervisor's "why")."""
        d = t.decisions.c
        ids = self.connection.execute(
            select(d.id).where(d.waybill == waybill).order_by(d.decided_at, d.id)
        ).scalars()
        return [row for row in map(self.decision, list(ids)) if row is not None]

    # -- sorting -------------------------------------------------------------------

    def sorter_routing(self, sorter: str) -> Routing | None:
        """The routing of an active sorter, or None if the ledger knows no such sorter.

        Built without validation: it was validated as part of the registry it was synced from.
        """
        chute = self.connection.execute(_SORTER_CHUTE, {"sorter": sorter}).scalar()
        if chute is None:
            return None
        rows = self.connection.execute(_SORTER_ROUTES, {"sorter": sorter})
        return Routing.model_construct(
            exception_chute=int(chute), routes={row.prefix: int(row.chute) for row in rows}
        )

    def sort_facts(self, sorter: str, waybill: str, request: str) -> SortFacts:
        """Whether another message already routed ``waybill`` on ``sorter``, the parcel's
        destination, whether it has a real-name record, its open hold and latest verdict:
        one statement instead of five."""
        row = self.connection.execute(
            _SORT_FACTS, {"sorter": sorter, "waybill": waybill, "request": request}
        ).one()
        hold = None if row.hold_id is None else (int(row.hold_id), str(row.hold_reason))
        return SortFacts(
            routed_before=bool(row.routed_before),
            destination=row.destination,
            realname=bool(row.realname),
            hold=hold,
            verdict=None if row.verdict is None else str(row.verdict),
        )

    def induction_of_transaction(self, sorter: str, transaction: int) -> InductionRow | None:
        """The latest induction on ``sorter`` with the PLC's ``transaction`` number (the
        numbers wrap, so an older one may share it)."""
        row = self.connection.execute(
            _INDUCTION_OF_TRANSACTION, {"sorter": sorter, "transaction": transaction}
        ).first()
        return None if row is None else InductionRow(row.request, int(row.chute), bool(row.routed))

    def unroute_induction(self, request: str, *, sorter: str) -> bool:
        """Mark induction ``request`` on ``sorter`` as not routed (it went to the exception
        chute after all); whether there was such a routed induction."""
        i = t.inductions.c
        result = self.connection.execute(
            update(t.inductions)
            .where(and_(i.request == request, i.sorter == sorter, i.routed.is_(True)))
            .values(routed=False)
        )
        return bool(result.rowcount)

    def add_induction(
        self,
        *,
        request: str,
        sorter: str,
        waybill: str | None,
        transaction_no: int,
        chute: int,
        routed: bool,
        inducted_at: datetime,
    ) -> None:
        self.connection.execute(
            _ADD_INDUCTION,
            {
                "request": request,
                "sorter": sorter,
                "waybill": waybill,
                "transaction_no": transaction_no,
                "chute": chute,
                "routed": routed,
                "inducted_at": inducted_at,
            },
        )
