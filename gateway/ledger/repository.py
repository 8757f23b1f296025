"""What the decision engine reads and writes, bound to one open transaction.

:class:`LedgerTx` wraps a SQLAlchemy Core connection inside a transaction that
:meth:`gateway.ledger.Ledger.transaction` opened; each method is one or two statements
and commits nothing itself. Rows come back as small frozen dataclasses, so callers never
handle SQLAlchemy rows. The parcel side (acceptance, real-name, X-ray, holds) is here;
sort, decisions and locker rows are in :mod:`gateway.ledger.lockers` and
:mod:`gateway.ledger.decisions` mixins, composed into :class:`LedgerTx`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, func, insert, select, update

from gateway.ledger import schema as t
from gateway.ledger.access import AccessRows
from gateway.ledger.coldchain import ColdChainRows
from gateway.ledger.decisions import DecisionRows
from gateway.ledger.lockers import LockerRows
from gateway.personal import ProtectedIdentity

# Statements of the decision path, built once (see gateway.ledger.decisions).
_p, _rn, _x, _h = t.parcels.c, t.realname_records.c, t.xray_verdicts.c, t.holds.c
_PARCEL = select(_p.waybill, _p.station, _p.destination, _p.accepted_at).where(
    _p.waybill == bindparam("waybill")
)
_HAS_REALNAME = select(_rn.waybill).where(_rn.waybill == bindparam("waybill"))
_LATEST_VERDICT = (
    select(_x.verdict)
    .where(_x.waybill == bindparam("waybill"))
    .order_by(_x.scanned_at.desc(), _x.id.desc())
    .limit(1)
)
_OPEN_HOLD = select(_h.id, _h.waybill, _h.reason, _h.since).where(
    and_(_h.waybill == bindparam("waybill"), _h.released_at.is_(None))
)


@dataclass(frozen=True)
class Parcel:
    waybill: str
    station: str
    destination: str
    accepted_at: datetime


@dataclass(frozen=True)
class Hold:
    id: int
    waybill: str
    reason: str
    since: datetime


@dataclass(frozen=True)
class Coverage:
    """One station's acceptances of one day, and how many had a real-name record and an
    inspection (``inspected=True``)."""

    accepted: int
    with_realname: int
    inspected: int


@dataclass(frozen=True)
class RealnameRow:
    """What is stored of a sender's identity: encrypted, keyed-hashed and masked only."""

    id_type: str
    key_id: str
    nonce: bytes
    ciphertext: bytes
    lookup: str
    masked_number: str
    masked_name: str
    masked_phone: str | None

    def protected(self) -> ProtectedIdentity:
        """The record as :meth:`gateway.personal.Keyring.reveal` takes it."""
        fields = ProtectedIdentity.__dataclass_fields__
        return ProtectedIdentity(**{name: getattr(self, name) for name in fields})


class LedgerTx(DecisionRows, LockerRows, ColdChainRows, AccessRows):
    """The ledger inside one transaction; ``connection`` is there for queries not yet
    wrapped here (other issues' reports)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested transaction: what the block wrote is undone if it raises, the rest of
        the transaction stays (one message of a group commit refused alone).

        Plain SQL rather than ``Connection.begin_nested()``, which costs as much as the
        statements of a whole sort decision; a database error inside is not caught here
        but ends the whole transaction anyway.
        """
        self.connection.exec_driver_sql("SAVEPOINT postedge_message")
        try:
            yield
        except BaseException:
            self.connection.exec_driver_sql("ROLLBACK TO SAVEPOINT postedge_message")
            self.connection.exec_driver_sql("RELEASE SAVEPOINT postedge_message")
            raise
        self.connection.exec_driver_sql("RELEASE SAVEPOINT postedge_message")

    # -- parcels -------------------------------------------------------------------

    def parcel(self, waybill: str) -> Parcel | None:
        row = self.connection.execute(_PARCEL, {"waybill": waybill}).first()
        if row is None:
            return None
        return Parcel(row.waybill, row.station, row.destination, row.accepted_at)

    def add_parcel(
        self,
        *,
        waybill: str,
        station: str,
        device: str,
        destination: str,
        accepted_at: datetime,
        clerk: str,
        request: str,
    ) -> None:
        self.connection.execute(
            insert(t.parcels).values(
                waybill=waybill,
                station=station,
                device=device,
                destination=destination,
                accepted_at=accepted_at,
                clerk=clerk,
                request=request,
            )
        )

    def add_realname(self, waybill: str, record: RealnameRow) -> None:
        self.connection.execute(
            insert(t.realname_records).values(
                waybill=waybill,
                id_type=record.id_type,
                key_id=record.key_id,
                nonce=record.nonce,
                ciphertext=record.ciphertext,
                lookup=record.lookup,
                masked_number=record.masked_number,
                masked_name=record.masked_name,
                masked_phone=record.masked_phone,
            )
        )

    def realname(self, waybill: str) -> RealnameRow | None:
        r = t.realname_records.c
        row = self.connection.execute(
            select(
                r.id_type,
                r.key_id,
                r.nonce,
                r.ciphertext,
                r.lookup,
                r.masked_number,
                r.masked_name,
                r.masked_phone,
            ).where(r.waybill == waybill)
        ).first()
        if row is None:
            return None
        return RealnameRow(
            row.id_type,
            row.key_id,
            bytes(row.nonce),
            bytes(row.ciphertext),
            row.lookup,
            row.masked_number,
            row.masked_name,
            row.masked_phone,
        )

    def has_realname(self, waybill: str) -> bool:
        found = self.connection.execute(_HAS_REALNAME, {"waybill": waybill}).first()
        return found is not None

    def add_inspection(
        self, waybill: str, *, inspected: bool, declared_contents: str, refused_items: list[str]
    ) -> None:
        self.connection.execute(
            insert(t.inspections).values(
                waybill=waybill,
                inspected=inspected,
                declared_contents=declared_contents,
                refused_items=list(refused_items),
            )
        )

    # -- X-ray and holds -----------------------------------------------------------

    def add_xray(
        self,
        *,
        waybill: str,
        verdict: str,
        operator: str,
        image: str,
        scanned_at: datetime,
        station: str,
        device: str,
        request: str,
    ) -> None:
        self.connection.execute(
            insert(t.xray_verdicts).values(
                waybill=waybill,
                verdict=verdict,
                operator=operator,
                image=image,
                scanned_at=scanned_at,
                station=station,
                device=device,
                request=request,
            )
        )

    def latest_verdict(self, waybill: str) -> str | None:
        """The verdict of the waybill's latest scan (by scan time, then arrival)."""
        verdict = self.connection.execute(_LATEST_VERDICT, {"waybill": waybill}).scalar()
        return None if verdict is None else str(verdict)

    def open_hold(self, waybill: str) -> Hold | None:
        row = self.connection.execute(_OPEN_HOLD, {"waybill": waybill}).first()
        return None if row is None else Hold(row.id, row.waybill, row.reason, row.since)

    def add_hold(self, waybill: str, reason: str, since: datetime) -> int:
        result = self.connection.execute(
            insert(t.holds).values(waybill=waybill, reason=reason, since=since)
        )
        return _new_id(result.inserted_primary_key)

    def release_hold(self, hold_id: int, *, by: str, at: datetime) -> bool:
        """Release an open hold (a supervisor's act); False if it was not open."""
        h = t.holds.c
        result = self.connection.execute(
            update(t.holds)
            .where(and_(h.id == hold_id, h.released_at.is_(None)))
            .values(released_at=at, released_by=by)
        )
        return result.rowcount == 1

    def add_alert(
        self,
        *,
        station: str,
        kind: str,
        waybill: str | None,
        severity: str,
        details: Mapping[str, Any],
        raised_at: datetime,
        subject: str | None = None,
        device: str | None = None,
    ) -> int:
        """Raise an alert (state ``open``). ``details`` must hold no personal data;
        ``subject`` is what the alert is about (the waybill when not given)."""
        result = self.connection.execute(
            insert(t.alerts).values(
                station=station,
                kind=kind,
                waybill=waybill,
                subject=subject if subject is not None else waybill,
                device=device,
                severity=severity,
                details=dict(details),
                raised_at=raised_at,
                state="open",
            )
        )
        return _new_id(result.inserted_primary_key)

    # -- reports -------------------------------------------------------------------

    def coverage(self, station: str, day: date, tz: tzinfo = UTC) -> Coverage:
        """Acceptances at ``station`` on ``day`` (midnight to midnight in ``tz``), with
        how many have a real-name record and how many were inspected."""
        start = datetime.combine(day, time(), tzinfo=tz)
        end = datetime.combine(day + timedelta(days=1), time(), tzinfo=tz)
        p, r, i = t.parcels.c, t.realname_records.c, t.inspections.c
        row = self.connection.execute(
            select(
                func.count(p.waybill),
                func.count(r.waybill),
                func.count(i.waybill).filter(i.inspected.is_(True)),
            )
            .select_from(
                t.parcels.outerjoin(t.realname_records, r.waybill == p.waybill).outerjoin(
                    t.inspections, i.waybill == p.waybill
                )
            )
            .where(and_(p.station == station, p.accepted_at >= start, p.accepted_at < end))
        ).one()
        return Coverage(accepted=int(row[0]), with_realname=int(row[1]), inspected=int(row[2]))


def _new_id(key: Row[Any] | None) -> int:
    if key is None or key[0] is None:
        raise AssertionError("the database returned no id for a new row")
    return int(key[0])
