"""Ledger rows of the lockers: pickup codes (hashed), code-list versions, locations.

A mixin of :class:`gateway.ledger.repository.LedgerTx`; see there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, delete, insert, or_, select, update

from gateway.ledger import schema as t


@dataclass(frozen=True)
class StoredCode:
    """A pickup code as stored and sent to the locker: salt and hash, never the code."""

    waybill: str
    board: int
    lock: int
    salt: str
    code_hash: str
    expires_at: datetime | None


@dataclass(frozen=True)
class Location:
    station: str
    device: str
    board: int
    lock: int
    purpose: str
    since: datetime


class LockerRows:
    connection: Connection

    def add_pickup_code(
        self,
        *,
        waybill: str,
        station: str,
        device: str,
        board: int,
        lock: int,
        salt: str,
        code_hash: str,
        issued_at: datetime,
        expires_at: datetime | None,
    ) -> None:
        self.connection.execute(
            insert(t.pickup_codes).values(
                waybill=waybill,
                station=station,
                device=device,
                board=board,
                lock=lock,
                salt=salt,
                code_hash=code_hash,
                issued_at=issued_at,
                expires_at=expires_at,
            )
        )

    def close_codes(self, *, device: str, waybill: str, at: datetime, closed: str) -> int:
        """Close the waybill's open codes on one locker; return how many."""
        c = t.pickup_codes.c
        result = self.connection.execute(
            update(t.pickup_codes)
            .where(and_(c.device == device, c.waybill == waybill, c.used_at.is_(None)))
            .values(used_at=at, closed=closed)
        )
        return int(result.rowcount)

    def close_slot_codes(
        self, *, device: str, board: int, lock: int, at: datetime, closed: str
    ) -> int:
        """Close the open codes of one locker slot (a new parcel went in); return how many."""
        c = t.pickup_codes.c
        result = self.connection.execute(
            update(t.pickup_codes)
            .where(and_(c.device == device, c.board == board, c.lock == lock, c.used_at.is_(None)))
            .values(used_at=at, closed=closed)
        )
        return int(result.rowcount)

    def open_codes(self, device: str, now: datetime, limit: int = 1000) -> list[StoredCode]:
        """A locker's unused, unexpired codes, oldest first; the newest ``limit`` if more."""
        c = t.pickup_codes.c
        rows = self.connection.execute(
            select(c.waybill, c.board, c.lock, c.salt, c.code_hash, c.expires_at)
            .where(
                and_(
                    c.device == device,
                    c.used_at.is_(None),
                    or_(c.expires_at.is_(None), c.expires_at > now),
                )
            )
            .order_by(c.issued_at.desc(), c.id.desc())
            .limit(limit)
        )
        newest_first = [
            StoredCode(row.waybill, row.board, row.lock, row.salt, row.code_hash, row.expires_at)
            for row in rows
        ]
        return newest_first[::-1]

    def next_code_list_version(self, device: str) -> int:
        """Count one more version of the locker's code list and return it (1, 2, ...)."""
        v = t.locker_code_lists.c
        result = self.connection.execute(
            update(t.locker_code_lists)
            .where(v.device == device)
            .values(version=v.version + 1)
            .returning(v.version)
        ).scalar()
        if result is not None:
            return int(result)
        self.connection.execute(insert(t.locker_code_lists).values(device=device, version=1))
        return 1

    def code_list_version(self, device: str) -> int | None:
        v = t.locker_code_lists.c
        version = self.connection.execute(select(v.version).where(v.device == device)).scalar()
        return None if version is None else int(version)

    def set_location(
        self,
        *,
        waybill: str,
        station: str,
        device: str,
        board: int,
        lock: int,
        purpose: str,
        since: datetime,
    ) -> None:
        """Where the parcel lies now (replacing where it lay before)."""
        self.connection.execute(delete(t.locations).where(t.locations.c.waybill == waybill))
        self.connection.execute(
            insert(t.locations).values(
                waybill=waybill,
                station=station,
                device=device,
                board=board,
                lock=lock,
                purpose=purpose,
                since=since,
            )
        )

    def location(self, waybill: str) -> Location | None:
        lo = t.locations.c
        row = self.connection.execute(
            select(lo.station, lo.device, lo.board, lo.lock, lo.purpose, lo.since).where(
                lo.waybill == waybill
            )
        ).first()
        if row is None:
            return None
        return Location(row.station, row.device, row.board, row.lock, row.purpose, row.since)

    def clear_location(self, waybill: str, device: str) -> bool:
        """The parcel left ``device``; False if the ledger did not have it there."""
        lo = t.locations.c
        result = self.connection.execute(
            delete(t.locations).where(and_(lo.waybill == waybill, lo.device == device))
        )
        return result.rowcount == 1
