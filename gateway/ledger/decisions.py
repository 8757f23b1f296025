"""Ledger rows of the decision path: processed messages, decisions, routing, inductions.

A mixin of :class:`gateway.ledger.repository.LedgerTx`; see there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, insert, select, update

from gateway.ledger import schema as t
from gateway.registry import Routing


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


class DecisionRows:
    connection: Connection

    def processed(self, request: str) -> Processed | None:
        m = t.processed_messages.c
        row = self.connection.execute(
            select(m.request, m.kind, m.decision_id).where(m.request == request)
        ).first()
        return None if row is None else Processed(row.request, row.kind, row.decision_id)

    def mark_processed(
        self, request: str, kind: str, handled_at: datetime, decision_id: str | None
    ) -> None:
        """Record that ``request`` was applied; a concurrent duplicate raises a conflict."""
        self.connection.execute(
            insert(t.processed_messages).values(
                request=request, kind=kind, handled_at=handled_at, decision_id=decision_id
            )
        )

    def add_decision(self, decision: DecisionRow) -> None:
        self.connection.execute(
            insert(t.decisions).values(
                id=decision.id,
                station=decision.station,
                device=decision.device,
                request=decision.request,
                waybill=decision.waybill,
                kind=decision.kind,
                outcome=decision.outcome,
                reason=decision.reason,
                facts=dict(decision.facts),
                body=None if decision.body is None else dict(decision.body),
                decided_at=decision.decided_at,
            )
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
        dv, r = t.devices.c, t.routes.c
        chute = self.connection.execute(
            select(dv.exception_chute).where(
                and_(dv.id == sorter, dv.role == "sorter", dv.active.is_(True))
            )
        ).scalar()
        if chute is None:
            return None
        rows = self.connection.execute(select(r.prefix, r.chute).where(r.sorter == sorter))
        return Routing.model_construct(
            exception_chute=int(chute), routes={row.prefix: int(row.chute) for row in rows}
        )

    def routed_before(self, sorter: str, waybill: str, request: str) -> bool:
        """Whether another message already routed ``waybill`` on ``sorter``."""
        i = t.inductions.c
        found = self.connection.execute(
            select(i.request).where(
                and_(
                    i.sorter == sorter,
                    i.waybill == waybill,
                    i.routed.is_(True),
                    i.request != request,
                )
            )
        ).first()
        return found is not None

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
            insert(t.inductions).values(
                request=request,
                sorter=sorter,
                waybill=waybill,
                transaction_no=transaction_no,
                chute=chute,
                routed=routed,
                inducted_at=inducted_at,
            )
        )
