"""The ledger's errors, and the one place where SQLAlchemy and driver errors are translated.

Callers see :class:`LedgerError` (rooted at :class:`gateway.errors.GatewayError`), never a
SQLAlchemy, sqlite3 or psycopg exception. Translated errors are raised ``from None``: a
driver's exception text carries the statement's parameters, and those are ledger data
(waybills, masked identities, code hashes) that have no place in a log line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import exc as sa_exc

from gateway.errors import GatewayError


class LedgerError(GatewayError):
    """The ledger could not do what was asked (a bug, a bad URL, a schema it does not know)."""


class LedgerUnavailable(LedgerError):
    """The database cannot be reached or stayed locked too long; retrying later may work."""


class LedgerConflict(LedgerError):
    """A unique key was taken by a concurrent transaction; retrying the whole transaction
    sees the other one's result."""


_SQLITE_UNAVAILABLE = (
    "database is locked",
    "database table is locked",
    "unable to open database file",
    "disk i/o error",
    "database or disk is full",
)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def translate(error: sa_exc.SQLAlchemyError, where: str) -> LedgerError:
    """The ledger error for ``error``; ``where`` names the database (password hidden)."""
    if isinstance(error, sa_exc.TimeoutError):  # no pooled connection in time
        return LedgerUnavailable(f"ledger {where}: {_first_line(error)}")
    if not isinstance(error, sa_exc.DBAPIError):
        return LedgerError(f"ledger {where}: {type(error).__name__}: {_first_line(error)}")
    original: BaseException = error.orig if error.orig is not None else error
    text = _first_line(original)
    if isinstance(error, sa_exc.IntegrityError) and _unique_violation(original):
        return LedgerConflict(f"ledger {where}: {text}")
    if error.connection_invalidated:
        return LedgerUnavailable(f"ledger {where}: connection lost: {text}")
    if isinstance(error, sa_exc.OperationalError):
        if type(original).__module__.startswith("psycopg"):
            return LedgerUnavailable(f"ledger {where}: {text}")
        if any(marker in text.lower() for marker in _SQLITE_UNAVAILABLE):
            return LedgerUnavailable(f"ledger {where}: {text}")
    return LedgerError(f"ledger {where}: {type(original).__name__}: {text}")


def _unique_violation(original: BaseException) -> bool:
    sqlstate = getattr(original, "sqlstate", None)
    if sqlstate is not None:
        return bool(sqlstate == "23505")
    return "UNIQUE constraint failed" in str(original)


@contextlib.contextmanager
def translated(where: str) -> Iterator[None]:
    """Run a block, turning SQLAlchemy errors into ledger errors."""
    try:
        yield
    except sa_exc.SQLAlchemyError as error:
        raise translate(error, where) from None
