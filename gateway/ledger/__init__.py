"""The parcel ledger: SQLAlchemy 2 Core over SQLite (default) or PostgreSQL.

- :mod:`.engine` — :class:`Ledger`: connection rules, transactions, open/close.
- :mod:`.schema` — the tables, version by version (the docstring lists them).
- :mod:`.migrations` — versioned migrations, one transaction each, under a lock.
- :mod:`.repository` (with :mod:`.decisions` and :mod:`.lockers`) — :class:`LedgerTx`,
  what the decision engine reads and writes inside one transaction.
- :mod:`.access` — the supervisor API's users, hashed tokens and audit trail.
- :mod:`.coldchain` — alert lifecycles, probe and door states, parcels in cold
  compartments.
- :mod:`.sync` — the device registry copied into the ledger.
- :mod:`.errors` — :class:`LedgerError` and the translation of database errors.
"""

from gateway.ledger.access import AuditRow, TokenRow, UserRow
from gateway.ledger.coldchain import AlertRow, Lease, ProbeRow, StayRow
from gateway.ledger.decisions import DecisionRow, InductionRow, Processed, SortFacts
from gateway.ledger.engine import Ledger
from gateway.ledger.errors import LedgerConflict, LedgerError, LedgerUnavailable
from gateway.ledger.lockers import Location, StoredCode
from gateway.ledger.migrations import MIGRATIONS, Migration
from gateway.ledger.repository import Coverage, Hold, LedgerTx, Parcel, RealnameRow

__all__ = [
    "MIGRATIONS",
    "AlertRow",
    "AuditRow",
    "Coverage",
    "DecisionRow",
    "Hold",
    "InductionRow",
    "Lease",
    "Ledger",
    "LedgerConflict",
    "LedgerError",
    "LedgerTx",
    "LedgerUnavailable",
    "Location",
    "Migration",
    "Parcel",
    "ProbeRow",
    "Processed",
    "RealnameRow",
    "SortFacts",
    "StayRow",
    "StoredCode",
    "TokenRow",
    "UserRow",
]
