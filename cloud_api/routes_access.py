"""Log in and out, who am I, users and tokens (admin), the audit trail (auditor, admin)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response

from cloud_api.auth import ROLE_PERMISSIONS, SESSION_COOKIE, AuthError, Principal
from cloud_api.context import ServicesDep, audit, principal, require
from cloud_api.schemas import (
    AuditOut,
    LoginIn,
    LoginOut,
    Page,
    TokenIn,
    TokenOut,
    UserIn,
    UserOut,
    iso,
)
from gateway.ledger import TokenRow, UserRow

router = APIRouter(prefix="/api/v1", tags=["access"])

TokenId = Annotated[int, Path(ge=1, le=2**31 - 1)]

Admin = Annotated[Principal, Depends(require("users"))]
Auditing = Annotated[Principal, Depends(require("audit"))]
Anyone = Annotated[Principal, Depends(principal)]


def user_out(user: UserRow | Principal) -> UserOut:
    active = user.active if isinstance(user, UserRow) else True
    return UserOut(
        name=user.name,
        role=user.role,
        scopes=list(user.scopes),
        permissions=sorted(ROLE_PERMISSIONS.get(user.role, frozenset())),
        active=active,
    )


def token_out(row: TokenRow, token: str | None = None) -> TokenOut:
    return TokenOut(
        id=row.id,
        user=row.user,
        kind=row.kind,
        label=row.label,
        created_at=iso(row.created_at) or "",
        expires_at=iso(row.expires_at),
        revoked_at=iso(row.revoked_at),
        last_used_at=iso(row.last_used_at),
        token=token,
    )


@router.post(
    "/login",
    response_model=LoginOut,
    responses={
        401: {"description": "Unknown user or wrong password"},
        429: {"description": "Too many failed logins for this user name"},
    },
)
def login(body: LoginIn, response: Response, services: ServicesDep) -> LoginOut:
    """A session token for the dashboard, also set as an HttpOnly cookie. After five
    failed logins of one user name within 15 minutes, that name is refused (429) until
    the first of them is 15 minutes old."""
    now = services.now()
    wait = services.logins.wait(body.username, now)
    if wait is not None:
        seconds = max(1, int(wait.total_seconds()) + 1)
        raise HTTPException(
            429,
            f"too many failed logins for this user; try again in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )
    try:
        issued, user = services.accounts.login(body.username, body.password, now)
    except AuthError as exc:
        services.logins.failed(body.username, now)
        raise HTTPException(401, str(exc)) from None
    services.logins.succeeded(body.username)
    response.set_cookie(
        SESSION_COOKIE,
        issued.token,
        max_age=int(services.session_ttl_s),
        httponly=True,
        samesite="strict",
        path="/",
    )
    return LoginOut(token=issued.token, expires_at=iso(issued.row.expires_at), user=user_out(user))


@router.post("/logout", status_code=204, responses={401: {"description": "Not logged in"}})
def logout(user: Anyone, response: Response, services: ServicesDep) -> Response:
    """End this session (or revoke this API token)."""
    services.accounts.revoke(user.token_id, services.now())
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/me", response_model=UserOut, responses={401: {"description": "Not logged in"}})
def me(user: Anyone) -> UserOut:
    """The user behind this request: role, scopes and what they may do."""
    return user_out(user)


@router.get("/users", response_model=list[UserOut], responses={403: {"description": "Not admin"}})
def users(user: Admin, services: ServicesDep) -> list[UserOut]:
    with services.ledger.transaction(write=False) as tx:
        return [user_out(row) for row in tx.users()]


@router.put(
    "/users/{name}",
    response_model=UserOut,
    responses={403: {"description": "Not admin"}, 422: {"description": "Bad role or scope"}},
)
def save_user(name: str, body: UserIn, user: Admin, services: ServicesDep) -> UserOut:
    """Create or change a user (the password may be left out to keep it); audited."""
    if body.name != name:
        raise HTTPException(422, "the name in the path and the body differ")
    try:
        created = services.accounts.save_user(
            name,
            role=body.role,
            scopes=body.scopes,
            password=body.password,
            active=body.active,
            now=services.now(),
        )
    except (AuthError, ValueError) as exc:
        raise HTTPException(422, str(exc)) from None
    audit(
        services,
        user,
        "user_created" if created else "user_changed",
        name,
        details={"role": body.role, "scopes": body.scopes, "active": body.active},
    )
    with services.ledger.transaction(write=False) as tx:
        row = tx.user(name)
    assert row is not None
    return user_out(row)


@router.get(
    "/users/{name}/tokens",
    response_model=list[TokenOut],
    responses={403: {"description": "Not admin"}},
)
def list_tokens(name: str, user: Admin, services: ServicesDep) -> list[TokenOut]:
    with services.ledger.transaction(write=False) as tx:
        return [token_out(row) for row in tx.tokens(name)]


@router.post(
    "/users/{name}/tokens",
    response_model=TokenOut,
    status_code=201,
    responses={403: {"description": "Not admin"}, 404: {"description": "No such user"}},
)
def create_token(name: str, body: TokenIn, user: Admin, services: ServicesDep) -> TokenOut:
    """An API token for ``name``; the clear token is in this answer and nowhere else."""
    ttl = timedelta(days=body.expires_days) if body.expires_days is not None else None
    try:
        issued = services.accounts.issue(
            name, kind="api", label=body.label, now=services.now(), ttl=ttl
        )
    except AuthError as exc:
        raise HTTPException(404, str(exc)) from None
    audit(services, user, "token_created", name, details={"token_id": issued.row.id})
    return token_out(issued.row, issued.token)


@router.delete(
    "/tokens/{token_id}",
    status_code=204,
    responses={403: {"description": "Not admin"}, 404: {"description": "No live token"}},
)
def revoke_token(token_id: TokenId, user: Admin, services: ServicesDep) -> Response:
    if not services.accounts.revoke(token_id, services.now()):
        raise HTTPException(404, f"no live token {token_id}")
    audit(services, user, "token_revoked", str(token_id))
    return Response(status_code=204)


@router.get(
    "/audit",
    response_model=Page[AuditOut],
    responses={403: {"description": "Neither auditor nor admin"}},
)
def audit_trail(
    user: Auditing,
    services: ServicesDep,
    action: Annotated[str | None, Query(max_length=32)] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page[AuditOut]:
    """What users did (commands, reveals, alert actions, user changes), newest first."""
    with services.ledger.transaction(write=False) as tx:
        rows, total = tx.audit_records(action=action, offset=(page - 1) * per_page, limit=per_page)
    items = [
        AuditOut(
            id=row.id,
            at=iso(row.at) or "",
            user=row.user,
            action=row.action,
            station=row.station,
            target=row.target,
            details=dict(row.details),
        )
        for row in rows
    ]
    return Page[AuditOut](items=items, page=page, per_page=per_page, total=total)
