"""Live updates as Server-Sent Events: alerts and station status, pushed to the browser.

The API reads what the gateway wrote (the ledger and the telemetry store), so it polls
them: every ``poll_s`` it compares what the user may see with what it last sent, and
sends what changed. That keeps the API stateless beside the gateway (several API
processes, restarts, PostgreSQL or SQLite alike) at the cost of up to ``poll_s`` delay.

Events::

    event: hello     data: {"user": ..., "poll_s": ...}        once, at connection
    event: alert     data: an Alert (as GET /api/v1/alerts)     new or changed alerts
    event: station   data: {"id", "online", "open_alerts"}      changed station status
    : keep-alive                                                 a comment every 15 s
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import or_, select

from cloud_api.auth import Principal
from cloud_api.context import Reader, Services, ServicesDep, stations_in_scope
from cloud_api.routes_alerts import alert_out
from cloud_api.routes_stations import describe
from gateway.ledger import schema as t

router = APIRouter(prefix="/api/v1", tags=["live"])

KEEPALIVE_S = 15.0
STATION_EVERY = 2
"""Station status (which reads the telemetry store) is checked every this many polls."""


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "An event stream"}},
)
async def events(request: Request, user: Reader, services: ServicesDep) -> StreamingResponse:
    """Alerts and station status as they change (Server-Sent Events; EventSource with
    the session cookie, or a Bearer token)."""
    return StreamingResponse(
        _stream(request, user, services),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def _stream(request: Request, user: Principal, services: Services) -> AsyncIterator[bytes]:
    watcher = _Watcher(services, user, services.now())
    await run_in_threadpool(watcher.alerts)  # the baseline: only changes are sent
    await run_in_threadpool(watcher.stations)
    yield _event("hello", {"user": user.name, "poll_s": services.poll_s})
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    polls = 0
    while not await request.is_disconnected():
        await asyncio.sleep(services.poll_s)
        polls += 1
        sent = False
        for alert in await run_in_threadpool(watcher.alerts):
            yield _event("alert", alert)
            sent = True
        if polls % STATION_EVERY == 0:
            for station in await run_in_threadpool(watcher.stations):
                yield _event("station", station)
                sent = True
        if sent:
            quiet_since = loop.time()
        elif loop.time() - quiet_since >= KEEPALIVE_S:
            yield b": keep-alive\n\n"
            quiet_since = loop.time()


class _Watcher:
    """What one connection has sent, to send only changes."""

    def __init__(self, services: Services, user: Principal, since: datetime) -> None:
        self._services = services
        self._user = user
        self._since = since
        self._alerts: dict[int, tuple[Any, ...]] = {}
        self._stations: dict[str, tuple[int, int]] = {}

    def alerts(self) -> list[dict[str, Any]]:
        visible = [ref.id for ref in stations_in_scope(self._services, self._user)]
        a = t.alerts.c
        with self._services.ledger.transaction(write=False) as tx:
            ids = tx.connection.execute(
                select(a.id).where(
                    a.station.in_(visible),
                    or_(a.state != "resolved", a.resolved_at >= self._since),
                )
            ).scalars()
            rows = tx.alerts(states=("open", "acknowledged", "resolved"), ids=list(ids))
        changed = []
        for row in rows:
            signature = (row.state, row.severity, row.escalated_at, row.acknowledged_at)
            if self._alerts.get(row.id) != signature:
                self._alerts[row.id] = signature
                changed.append(alert_out(row).model_dump())
        return changed

    def stations(self) -> list[dict[str, Any]]:
        refs = stations_in_scope(self._services, self._user)
        changed = []
        for station in describe(self._services, refs):
            status = (station.online, station.open_alerts)
            if self._stations.get(station.id) != status:
                self._stations[station.id] = status
                changed.append(
                    {"id": station.id, "online": station.online, "open_alerts": station.open_alerts}
                )
        return changed
