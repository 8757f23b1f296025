"""Who may do what: users, roles, scopes, hashed passwords and tokens.

Roles and what they permit (:data:`ROLE_PERMISSIONS`):

==========  ==================================================================
supervisor  read; acknowledge and resolve alerts
operator    read; acknowledge and resolve alerts; send commands to devices
auditor     read; reveal a real-name record (every reveal is audited); read the audit
admin       read; alerts; commands; users and tokens; read the audit
==========  ==================================================================

A user's scopes say which stations they see: ``*`` (all), ``station:ID``, or
``division:PREFIX`` (stations whose 12-digit administrative division code starts with the
prefix, e.g. ``division:4211`` for one prefecture). A station outside the scopes is
answered 403 (named routes) or left out (lists).

Secrets at rest: passwords as salted scrypt hashes, tokens as SHA-256 of 256 random bits
(a token is not guessable, so a fast hash is enough and lookups stay one indexed read).
The clear token is shown once, when it is made.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, get_args

from gateway.ledger import Ledger, TokenRow, UserRow

Role = Literal["supervisor", "operator", "auditor", "admin"]
Permission = Literal["read", "alerts", "commands", "reveal", "users", "audit"]

ROLES: tuple[str, ...] = get_args(Role)
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "supervisor": frozenset({"read", "alerts"}),
    "operator": frozenset({"read", "alerts", "commands"}),
    "auditor": frozenset({"read", "reveal", "audit"}),
    "admin": frozenset({"read", "alerts", "commands", "users", "audit"}),
}

TOKEN_PREFIX = "pe_"  # noqa: S105 (a prefix, not a secret)
SESSION_COOKIE = "postedge_session"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
TOUCH_EVERY = timedelta(minutes=1)
"""``last_used_at`` is written at most this often per token (not on every request)."""


class AuthError(Exception):
    """Bad credentials or a bad user definition; the message is safe to show."""


# -- secrets ---------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64), for :func:`password_matches`."""
    if len(password) < 8:
        raise AuthError("a password needs at least 8 characters")
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    parts = (str(_SCRYPT["n"]), str(_SCRYPT["r"]), str(_SCRYPT["p"]), _b64(salt), _b64(digest))
    return "scrypt$" + "$".join(parts)


def password_matches(stored: str, password: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p)
        )
    except ValueError:
        return False
    return hmac.compare_digest(expected, actual)


_DUMMY_HASH = hash_password("not a password", salt=b"\0" * 16)
"""Checked against when the user does not exist, so a wrong name costs as long as a
wrong password."""


def new_token() -> tuple[str, str]:
    """A fresh token and the hash to store."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# -- scopes ----------------------------------------------------------------------------


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Validate scope strings; raise :class:`AuthError` naming the bad one."""
    checked = []
    for scope in scopes:
        kind, _, value = scope.partition(":")
        ok = (
            scope == "*"
            or (kind == "station" and value != "")
            or (kind == "division" and value.isdigit() and 1 <= len(value) <= 12)
        )
        if not ok:
            raise AuthError(
                f"scope {scope!r}: use '*', 'station:ID' or 'division:PREFIX' (1-12 digits)"
            )
        checked.append(scope)
    if not checked:
        raise AuthError("a user needs at least one scope ('*' for every station)")
    return tuple(checked)


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AuthError(f"role {role!r}: one of {', '.join(ROLES)}")
    return role


@dataclass(frozen=True)
class Principal:
    """The user behind a request."""

    name: str
    role: str
    scopes: tuple[str, ...]
    token_id: int
    token_kind: str

    @property
    def permissions(self) -> frozenset[str]:
        return ROLE_PERMISSIONS.get(self.role, frozenset())

    def may(self, permission: str) -> bool:
        return permission in self.permissions

    @property
    def sees_all(self) -> bool:
        return "*" in self.scopes

    def sees(self, station: str, division: str) -> bool:
        """Whether ``station`` (with its division code) is inside this user's scopes."""
        for scope in self.scopes:
            kind, _, value = scope.partition(":")
            if scope == "*" or (kind == "station" and value == station):
                return True
            if kind == "division" and division.startswith(value):
                return True
        return False


# -- failed logins ---------------------------------------------------------------------


class LoginThrottle:
    """Failed logins per user name: after ``limit`` failures within ``window``, that name
    is refused until the oldest of them is ``window`` old. In memory, per API process: it
    slows password guessing, a proxy's rate limit stops floods.
    """

    def __init__(self, *, limit: int = 5, window: timedelta = timedelta(minutes=15)) -> None:
        self._limit = limit
        self._window = window
        self._failures: dict[str, list[datetime]] = {}
        self._lock = threading.Lock()

    def wait(self, name: str, now: datetime) -> timedelta | None:
        """How long ``name`` must wait before trying again; None if it may try now."""
        with self._lock:
            recent = [at for at in self._failures.get(name, []) if now - at < self._window]
            if recent:
                self._failures[name] = recent
            else:
                self._failures.pop(name, None)
            if len(recent) < self._limit:
                return None
            return recent[0] + self._window - now

    def failed(self, name: str, now: datetime) -> None:
        with self._lock:
            self._failures.setdefault(name, []).append(now)
            if len(self._failures) > 10_000:  # bound the memory a flood of names can take
                self._failures.pop(next(iter(self._failures)))

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name, None)


# -- the ledger's side -----------------------------------------------------------------


@dataclass(frozen=True)
class IssuedToken:
    token: str
    """The clear token: shown once, never stored."""
    row: TokenRow


class Accounts:
    """Users and tokens in the ledger."""

    def __init__(self, ledger: Ledger, *, session_ttl: timedelta) -> None:
        self._ledger = ledger
        self._session_ttl = session_ttl

    def save_user(
        self,
        name: str,
        *,
        role: str,
        scopes: Sequence[str],
        password: str | None,
        active: bool = True,
        now: datetime,
    ) -> bool:
        """Create or change a user (a None password keeps the old one); True if new.
        Deactivating a user revokes their tokens."""
        check_role(role)
        checked = check_scopes(scopes)
        hashed = hash_password(password) if password is not None else None
        with self._ledger.transaction() as tx:
            return tx.save_user(
                name=name,
                password_hash=hashed,
                role=role,
                scopes=checked,
                active=active,
                at=now,
            )

    def login(self, name: str, password: str, now: datetime) -> tuple[IssuedToken, UserRow]:
        """A session token for a user whose password matches; :class:`AuthError` if not."""
        with self._ledger.transaction(write=False) as tx:
            user = tx.user(name)
        stored = user.password_hash if user is not None else _DUMMY_HASH
        if not password_matches(stored, password) or user is None or not user.active:
            raise AuthError("unknown user or wrong password")
        issued = self.issue(user.name, kind="session", label="dashboard login", now=now)
        return issued, user

    def issue(
        self,
        user: str,
        *,
        kind: Literal["session", "api"],
        label: str,
        now: datetime,
        ttl: timedelta | None = None,
    ) -> IssuedToken:
        """A new token for ``user``; sessions expire after the configured time."""
        if kind == "session" and ttl is None:
            ttl = self._session_ttl
        token, hashed = new_token()
        expires = now + ttl if ttl is not None else None
        with self._ledger.transaction() as tx:
            if tx.user(user) is None:
                raise AuthError(f"no user {user!r}")
            token_id = tx.add_token(
                token_hash=hashed, user=user, kind=kind, label=label, at=now, expires_at=expires
            )
        row = TokenRow(
            id=token_id,
            user=user,
            kind=kind,
            label=label,
            created_at=now,
            expires_at=expires,
            revoked_at=None,
            last_used_at=None,
        )
        return IssuedToken(token, row)

    def authenticate(self, token: str, now: datetime) -> Principal | None:
        """The principal of a live token; None for anything else."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        with self._ledger.transaction(write=False) as tx:
            found = tx.live_token(token_hash(token), now)
        if found is None:
            return None
        row, user = found
        if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY:
            with self._ledger.transaction() as tx:
                tx.touch_token(row.id, now)
        return Principal(
            name=user.name, role=user.role, scopes=user.scopes, token_id=row.id, token_kind=row.kind
        )

    def revoke(self, token_id: int, now: datetime) -> bool:
        with self._ledger.transaction() as tx:
            return tx.revoke_token(token_id, at=now)
