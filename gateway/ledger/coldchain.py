"""Ledger rows of the cold-chain engine and of every alert's lifecycle.

A mixin of :class:`gateway.ledger.repository.LedgerTx`; see there. Probe and door states
are the state machines' own dataclasses as JSON (``gateway.coldchain.machine``), written
in the same transaction as the alerts they raise, so after a restart the engine resumes
exactly where its last commit left it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, delete, insert, select, update

from gateway.ledger import schema as t


@dataclass(frozen=True)
class AlertRow:
    id: int
    station: str
    kind: str
    subject: str | None
    device: str | None
    waybill: str | None
    severity: str
    details: Mapping[str, Any]
    raised_at: datetime
    state: str
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_by: str | None
    resolved_at: datetime | None
    escalated_at: datetime | None


@dataclass(frozen=True)
class ProbeRow:
    station: str
    device: str
    probe: str
    profile: str | None
    low_c: float | None
    high_c: float | None
    state: Mapping[str, Any]
    reported_day: str | None


@dataclass(frozen=True)
class StayRow:
    id: int
    station: str
    device: str
    board: int
    lock: int
    waybill: str
    probe_device: str
    probe: str
    since: datetime
    until: datetime | None


def _alert(row: Any) -> AlertRow:
    return AlertRow(**{name: getattr(row, name) for name in AlertRow.__dataclass_fields__})


def _open_stay(device: str, board: int, lock: int, waybill: str) -> ColumnElement[bool]:
    """The stay of ``waybill`` in that slot that has not ended yet."""
    table = t.coldchain_stays
    return and_(
        table.c.device == device,
        table.c.board == board,
        table.c.lock == lock,
        table.c.waybill == waybill,
        table.c.until.is_(None),
    )


@dataclass(frozen=True)
class Lease:
    """Who holds a one-per-ledger engine's lease, and until when."""

    holder: str
    expires_at: datetime


class ColdChainRows:
    connection: Connection

    # -- leases ------------------------------------------------------------------------

    def take_lease(self, name: str, holder: str, now: datetime, ttl: timedelta) -> Lease | None:
        """Take or renew lease ``name`` for ``holder`` until ``now + ttl``. Returns None
        when ``holder`` has it now, else the lease of the holder that still has it."""
        table = t.leases
        query = select(table).where(table.c.name == name).with_for_update()
        row = self.connection.execute(query).first()
        values = {"holder": holder, "renewed_at": now, "expires_at": now + ttl}
        if row is None:
            self.connection.execute(insert(table).values(name=name, **values))
        elif row.holder == holder or row.expires_at <= now:
            self.connection.execute(update(table).where(table.c.name == name).values(**values))
        else:
            return Lease(row.holder, row.expires_at)
        return None

    def release_lease(self, name: str, holder: str) -> None:
        """Give lease ``name`` up, if ``holder`` has it."""
        table = t.leases
        self.connection.execute(delete(table).where(table.c.name == name, table.c.holder == holder))

    # -- points for the telemetry store ----------------------------------------------

    def keep_points(self, points: Sequence[Mapping[str, Any]], at: datetime) -> None:
        """Keep telemetry points (JSON objects) in this transaction, until
        :meth:`drop_kept_points` says the store has them."""
        if points:
            self.connection.execute(
                insert(t.store_outbox), [{"created_at": at, "point": dict(p)} for p in points]
            )

    def kept_points(self, limit: int) -> list[tuple[int, Mapping[str, Any]]]:
        """The oldest ``limit`` kept points, with their ids."""
        table = t.store_outbox
        query = select(table.c.id, table.c.point).order_by(table.c.id).limit(limit)
        return [(row.id, row.point) for row in self.connection.execute(query)]

    def drop_kept_points(self, ids: Sequence[int]) -> None:
        if ids:
            table = t.store_outbox
            self.connection.execute(delete(table).where(table.c.id.in_(list(ids))))

    # -- alerts ------------------------------------------------------------------------

    def alert(self, alert_id: int) -> AlertRow | None:
        row = self.connection.execute(select(t.alerts).where(t.alerts.c.id == alert_id)).first()
        return _alert(row) if row is not None else None

    def alerts(
        self,
        *,
        states: Sequence[str] = ("open", "acknowledged"),
        station: str | None = None,
        ids: Sequence[int] | None = None,
        limit: int = 1000,
    ) -> list[AlertRow]:
        """Alerts in ``states``, newest first."""
        query = select(t.alerts).where(t.alerts.c.state.in_(list(states)))
        if station is not None:
            query = query.where(t.alerts.c.station == station)
        if ids is not None:
            query = query.where(t.alerts.c.id.in_(list(ids)))
        query = query.order_by(t.alerts.c.raised_at.desc(), t.alerts.c.id.desc()).limit(limit)
        return [_alert(row) for row in self.connection.execute(query)]

    def acknowledge_alert(self, alert_id: int, *, by: str, at: datetime) -> bool:
        """Mark an open alert acknowledged; False if it is not open."""
        result = self.connection.execute(
            update(t.alerts)
            .where(and_(t.alerts.c.id == alert_id, t.alerts.c.state == "open"))
            .values(
                state="acknowledged",
                state_by=by,
                state_at=at,
                acknowledged_by=by,
                acknowledged_at=at,
            )
        )
        return result.rowcount == 1

    def resolve_alert(self, alert_id: int, *, by: str, at: datetime) -> bool:
        """Mark an alert resolved; False if it already was."""
        result = self.connection.execute(
            update(t.alerts)
            .where(and_(t.alerts.c.id == alert_id, t.alerts.c.state != "resolved"))
            .values(state="resolved", state_by=by, state_at=at, resolved_by=by, resolved_at=at)
        )
        return result.rowcount == 1

    def escalate_alert(self, alert_id: int, *, severity: str, at: datetime | None) -> None:
        """Raise an alert's severity; ``at`` marks an escalation (None: a severity update)."""
        values: dict[str, Any] = {"severity": severity}
        if at is not None:
            values["escalated_at"] = at
        self.connection.execute(update(t.alerts).where(t.alerts.c.id == alert_id).values(values))

    # -- probes and doors -----------------------------------------------------------------

    def probe_rows(self) -> list[ProbeRow]:
        rows = self.connection.execute(select(t.coldchain_probes))
        return [
            ProbeRow(
                row.station,
                row.device,
                row.probe,
                row.profile,
                row.low_c,
                row.high_c,
                row.state,
                row.reported_day,
            )
            for row in rows
        ]

    def save_probe(self, station: str, device: str, probe: str, **values: Any) -> None:
        """Insert or update one probe's row with ``values`` (state, profile, ...)."""
        table = t.coldchain_probes
        key = and_(table.c.station == station, table.c.device == device, table.c.probe == probe)
        if self.connection.execute(update(table).where(key).values(values)).rowcount == 0:
            values.setdefault("state", {})
            self.connection.execute(
                insert(table).values(station=station, device=device, probe=probe, **values)
            )

    def door_rows(self) -> list[tuple[str, str, int, int, Mapping[str, Any]]]:
        rows = self.connection.execute(select(t.coldchain_doors))
        return [(row.station, row.device, row.board, row.lock, row.state) for row in rows]

    def save_door(
        self, station: str, device: str, board: int, lock: int, state: dict[str, Any]
    ) -> None:
        table = t.coldchain_doors
        key = and_(
            table.c.station == station,
            table.c.device == device,
            table.c.board == board,
            table.c.lock == lock,
        )
        if self.connection.execute(update(table).where(key).values(state=state)).rowcount == 0:
            self.connection.execute(
                insert(table).values(
                    station=station, device=device, board=board, lock=lock, state=state
                )
            )

    # -- parcels in cold compartments ------------------------------------------------------

    def add_stay(self, **values: Any) -> int:
        result = self.connection.execute(insert(t.coldchain_stays).values(values))
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def has_open_stay(self, device: str, board: int, lock: int, waybill: str) -> bool:
        table = t.coldchain_stays
        row = self.connection.execute(
            select(table.c.id).where(_open_stay(device, board, lock, waybill))
        ).first()
        return row is not None

    def end_stay(self, device: str, board: int, lock: int, waybill: str, until: datetime) -> bool:
        table = t.coldchain_stays
        result = self.connection.execute(
            update(table).where(_open_stay(device, board, lock, waybill)).values(until=until)
        )
        return result.rowcount > 0

    def stays_to_report(self, ended_before: datetime) -> list[StayRow]:
        table = t.coldchain_stays
        rows = self.connection.execute(
            select(table).where(
                and_(
                    table.c.until.is_not(None),
                    table.c.until <= ended_before,
                    table.c.reported_at.is_(None),
                )
            )
        )
        return [
            StayRow(
                row.id,
                row.station,
                row.device,
                row.board,
                row.lock,
                row.waybill,
                row.probe_device,
                row.probe,
                row.since,
                row.until,
            )
            for row in rows
        ]

    def stay_reported(self, stay_id: int, at: datetime) -> None:
        table = t.coldchain_stays
        self.connection.execute(update(table).where(table.c.id == stay_id).values(reported_at=at))
