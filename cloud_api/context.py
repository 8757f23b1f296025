"""What every route needs: the services (ledger, store, accounts, ...) and who is asking.

Routes declare ``services: ServicesDep`` and a principal with the permission they need,
``user: Annotated[Principal, Depends(require("alerts"))]``; station-named routes call
:func:`station_in_scope` so a station outside the user's scopes is a 403.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import ColumnElement, Connection, Row, Select, func, select

from cloud_api.auth import SESSION_COOKIE, Accounts, LoginThrottle, Principal
from cloud_api.commands import CommandSender
from gateway.coldchain.config import ColdChainConfig
from gateway.ledger import Ledger
from gateway.ledger import schema as t
from gateway.personal import Keyring
from gateway.telemetry import TelemetryStore


@dataclass
class Services:
    ledger: Ledger
    store: TelemetryStore
    accounts: Accounts
    tz: ZoneInfo
    keyring: Keyring | None
    commands: CommandSender | None
    session_ttl_s: float
    coldchain: ColdChainConfig | None = None
    poll_s: float = 1.0
    """How often live event streams look for changes."""
    logins: LoginThrottle = field(default_factory=LoginThrottle)

    def now(self) -> datetime:
        return datetime.now(UTC)


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]

_bearer = HTTPBearer(auto_error=False, description="an API token (`pe_...`)")
_cookie = APIKeyCookie(
    name=SESSION_COOKIE, auto_error=False, description="the dashboard's login session"
)

UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="postedge"'}


def principal(
    found: ServicesDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> Principal:
    """The user of a live token (Authorization: Bearer, or the session cookie); 401 if none."""
    token = bearer.credentials if bearer is not None else cookie
    if not token:
        raise HTTPException(401, "Not authenticated", headers=UNAUTHORIZED)
    user = found.accounts.authenticate(token, found.now())
    if user is None:
        raise HTTPException(401, "Token unknown, expired or revoked", headers=UNAUTHORIZED)
    return user


def require(permission: str) -> Callable[..., Principal]:
    """A dependency: the principal, if their role has ``permission``; else 403."""

    def check(user: Annotated[Principal, Depends(principal)]) -> Principal:
        if not user.may(permission):
            raise HTTPException(403, f"role {user.role} may not do this ({permission})")
        return user

    check.__name__ = f"require_{permission}"
    return check


Reader = Annotated[Principal, Depends(require("read"))]


@dataclass(frozen=True)
class StationRef:
    id: str
    name: str
    division: str
    tier: str


def station_in_scope(found: Services, user: Principal, station: str) -> StationRef:
    """The station, if it exists (404) and ``user`` may see it (403)."""
    with found.ledger.transaction(write=False) as tx:
        row = tx.connection.execute(select(t.stations).where(t.stations.c.id == station)).first()
    if row is None:
        raise HTTPException(404, f"no station {station}")
    ref = StationRef(row.id, row.name, row.division, row.tier)
    if not user.sees(ref.id, ref.division):
        raise HTTPException(403, f"station {station} is outside your scopes")
    return ref


def stations_in_scope(found: Services, user: Principal) -> list[StationRef]:
    """Every station ``user`` may see, by id."""
    with found.ledger.transaction(write=False) as tx:
        rows = tx.connection.execute(select(t.stations).order_by(t.stations.c.id)).all()
    refs = [StationRef(row.id, row.name, row.division, row.tier) for row in rows]
    return [ref for ref in refs if user.sees(ref.id, ref.division)]


def visible_ids(found: Services, user: Principal, station: str | None) -> list[str]:
    """The ids a list may show: ``station`` if named (404/403 as for any named station),
    else every station in the user's scopes."""
    if station is not None:
        return [station_in_scope(found, user, station).id]
    return [ref.id for ref in stations_in_scope(found, user)]


def page_of(
    connection: Connection,
    query: Select[Any],
    condition: ColumnElement[bool],
    page: int,
    per_page: int,
) -> tuple[list[Row[Any]], int]:
    """One page of ``query`` filtered by ``condition`` (whose FROM it must carry), and
    how many rows match in all."""
    total = connection.execute(
        select(func.count()).select_from(query.where(condition).order_by(None).subquery())
    ).scalar_one()
    rows = connection.execute(
        query.where(condition).offset((page - 1) * per_page).limit(per_page)
    ).all()
    return list(rows), int(total)


def audit(
    found: Services,
    user: Principal,
    action: str,
    target: str,
    *,
    station: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Record what ``user`` did, in a transaction of its own."""
    with found.ledger.transaction() as tx:
        tx.audit(
            user=user.name,
            action=action,
            target=target,
            at=found.now(),
            station=station,
            details=details,
        )
