"""Copy the device registry into the ledger: stations, devices, sorter routes.

The registry file is the truth; the ledger keeps a copy so that decisions can refer to
stations and devices by foreign key and a sorter's routes are read in the same
transaction as the parcel. A station or device gone from the registry is marked inactive,
never deleted: old decisions still refer to it. Sorter routes are replaced wholesale.
Two gateway processes syncing at once take turns on a lock (see
:func:`gateway.ledger.migrations.lock`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table, delete, insert, update
from sqlalchemy.dialects import postgresql, sqlite

from gateway.ledger import schema as t
from gateway.ledger.migrations import lock
from gateway.registry import Registry

REGISTRY_LOCK_KEY = 0x706F73746564_02
"""The PostgreSQL advisory lock key of registry syncs."""


def sync_registry(connection: Connection, registry: Registry) -> None:
    """Make the ledger's stations, devices and routes those of ``registry``."""
    lock(connection, REGISTRY_LOCK_KEY)
    station_rows = [
        {"id": s.id, "name": s.name, "division": s.division, "tier": s.tier, "active": True}
        for s in registry.stations
    ]
    _upsert(connection, t.stations, station_rows)
    _deactivate_others(connection, t.stations, [s.id for s in registry.stations])
    device_rows = [
        {
            "id": d.id,
            "station": d.station,
            "role": d.role,
            "exception_chute": None if d.routing is None else d.routing.exception_chute,
            "active": True,
        }
        for d in registry.devices
    ]
    _upsert(connection, t.devices, device_rows)
    _deactivate_others(connection, t.devices, [d.id for d in registry.devices])
    connection.execute(delete(t.routes))
    route_rows = [
        {"sorter": d.id, "prefix": prefix, "chute": chute}
        for d in registry.devices
        if d.routing is not None
        for prefix, chute in sorted(d.routing.routes.items())
    ]
    if route_rows:
        connection.execute(insert(t.routes), route_rows)


def _upsert(connection: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table)
    changes = {name: statement.excluded[name] for name in rows[0] if name != "id"}
    connection.execute(
        statement.on_conflict_do_update(index_elements=[table.c.id], set_=changes), rows
    )


def _deactivate_others(connection: Connection, table: Table, keep: Sequence[str]) -> None:
    connection.execute(update(table).where(table.c.id.not_in(list(keep))).values(active=False))
