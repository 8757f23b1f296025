"""The supervisor API's users, tokens and audit trail in the ledger (schema v4).

Only hashes of passwords and tokens are stored; what hashes them is the API's business
(:mod:`cloud_api.auth`). Audit records name users, actions and targets (a waybill, an
alert, a device), never personal data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, update

from gateway.ledger import schema as t


@dataclass(frozen=True)
class UserRow:
    name: str
    password_hash: str
    role: str
    scopes: tuple[str, ...]
    active: bool
    created_at: datetime


@dataclass(frozen=True)
class TokenRow:
    id: int
    user: str
    kind: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    user: str
    action: str
    station: str | None
    target: str
    details: Mapping[str, Any]


def _user(row: Any) -> UserRow:
    return UserRow(
        name=row.name,
        password_hash=row.password_hash,
        role=row.role,
        scopes=tuple(row.scopes),
        active=row.active,
        created_at=row.created_at,
    )


def _token(row: Any) -> TokenRow:
    return TokenRow(**{name: getattr(row, name) for name in TokenRow.__dataclass_fields__})


class AccessRows:
    connection: Connection

    # -- users -------------------------------------------------------------------------

    def user(self, name: str) -> UserRow | None:
        row = self.connection.execute(select(t.api_users).where(t.api_users.c.name == name)).first()
        return _user(row) if row is not None else None

    def users(self) -> list[UserRow]:
        rows = self.connection.execute(select(t.api_users).order_by(t.api_users.c.name))
        return [_user(row) for row in rows]

    def save_user(
        self,
        *,
        name: str,
        password_hash: str | None,
        role: str,
        scopes: Sequence[str],
        active: bool,
        at: datetime,
    ) -> bool:
        """Create or update a user; a None ``password_hash`` keeps the old one. True if new."""
        values: dict[str, Any] = {"role": role, "scopes": list(scopes), "active": active}
        if password_hash is not None:
            values["password_hash"] = password_hash
        if self.user(name) is None:
            if password_hash is None:
                raise ValueError(f"a new user {name!r} needs a password")
            self.connection.execute(t.api_users.insert().values(name=name, created_at=at, **values))
            return True
        self.connection.execute(
            update(t.api_users).where(t.api_users.c.name == name).values(values)
        )
        if not active:
            self.revoke_tokens(name, at=at)
        return False

    # -- tokens ------------------------------------------------------------------------

    def add_token(
        self,
        *,
        token_hash: str,
        user: str,
        kind: str,
        label: str,
        at: datetime,
        expires_at: datetime | None,
    ) -> int:
        result = self.connection.execute(
            t.api_tokens.insert().values(
                token_hash=token_hash,
                user=user,
                kind=kind,
                label=label,
                created_at=at,
                expires_at=expires_at,
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def live_token(self, token_hash: str, now: datetime) -> tuple[TokenRow, UserRow] | None:
        """The token with this hash and its user, if neither is revoked, expired or inactive."""
        tokens = t.api_tokens.c
        row = self.connection.execute(
            select(t.api_tokens).where(
                tokens.token_hash == token_hash,
                tokens.revoked_at.is_(None),
                or_(tokens.expires_at.is_(None), tokens.expires_at > now),
            )
        ).first()
        user = self.user(row.user) if row is not None else None
        if row is None or user is None or not user.active:
            return None
        return _token(row), user

    def tokens(self, user: str | None = None) -> list[TokenRow]:
        query = select(t.api_tokens).order_by(t.api_tokens.c.id)
        if user is not None:
            query = query.where(t.api_tokens.c.user == user)
        return [_token(row) for row in self.connection.execute(query)]

    def touch_token(self, token_id: int, at: datetime) -> None:
        self.connection.execute(
            update(t.api_tokens).where(t.api_tokens.c.id == token_id).values(last_used_at=at)
        )

    def revoke_token(self, token_id: int, *, at: datetime) -> bool:
        result = self.connection.execute(
            update(t.api_tokens)
            .where(and_(t.api_tokens.c.id == token_id, t.api_tokens.c.revoked_at.is_(None)))
            .values(revoked_at=at)
        )
        return result.rowcount == 1

    def revoke_tokens(self, user: str, *, at: datetime) -> int:
        result = self.connection.execute(
            update(t.api_tokens)
            .where(and_(t.api_tokens.c.user == user, t.api_tokens.c.revoked_at.is_(None)))
            .values(revoked_at=at)
        )
        return result.rowcount

    # -- audit -------------------------------------------------------------------------

    def audit(
        self,
        *,
        user: str,
        action: str,
        target: str,
        at: datetime,
        station: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> int:
        result = self.connection.execute(
            t.api_audit.insert().values(
                at=at,
                user=user,
                action=action,
                station=station,
                target=target,
                details=dict(details or {}),
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def audit_records(
        self, *, action: str | None = None, offset: int = 0, limit: int = 100
    ) -> tuple[list[AuditRow], int]:
        """Audit records newest first, and how many there are in all."""
        where = t.api_audit.c.action == action if action is not None else and_(True)
        total = self.connection.execute(
            select(func.count()).select_from(t.api_audit).where(where)
        ).scalar_one()
        rows = self.connection.execute(
            select(t.api_audit)
            .where(where)
            .order_by(t.api_audit.c.id.desc())
            .offset(offset)
            .limit(limit)
        )
        records = [
            AuditRow(**{name: getattr(row, name) for name in AuditRow.__dataclass_fields__})
            for row in rows
        ]
        return records, int(total)
