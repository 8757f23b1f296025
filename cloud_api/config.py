"""The API configuration: where to listen, the ledger (users, alerts, parcels), the
telemetry store, and the broker commands go out on.

Example::

    [api]
    host = "127.0.0.1"
    port = 8000
    timezone = "Asia/Shanghai"     # days and months of the compliance reports
    session_hours = 12             # how long a dashboard login lasts

    [ledger]
    url = "sqlite:///ledger.sqlite"  # the gateway's ledger
    keys_file = "personal.keys"      # for the audited real-name reveal; or POSTEDGE_PERSONAL_KEYS

    [store]
    kind = "sqlite"
    path = "telemetry.sqlite"

    [coldchain]                    # optional: the gateway's section, for the limits
    default_profile = "chilled"    # drawn on temperature charts (same rules as the engine)

    [broker]                       # optional: without it, commands answer 503
    host = "127.0.0.1"
    port = 1883
    username = "gateway"
    password = "..."
    client_id = "api"
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from contracts.configfile import TimeZoneName, load_toml_model, resolve, resolve_sqlite_url
from contracts.ids import Identifier
from gateway.coldchain.config import ColdChainConfig
from gateway.config import BrokerConfig
from gateway.telemetry.config import SqliteStoreConfig, StoreConfig

_STRICT = ConfigDict(extra="forbid", frozen=True)


class ListenConfig(BaseModel):
    model_config = _STRICT

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    timezone: TimeZoneName = Field(
        default="Asia/Shanghai", description="the local time of report days and months"
    )
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="the largest request body accepted; a larger one is answered 413",
    )


class ApiLedgerConfig(BaseModel):
    model_config = _STRICT

    url: str = Field(
        default="sqlite:///ledger.sqlite",
        description="the gateway's ledger: sqlite:///path or postgresql+psycopg://user@host/db",
    )
    keys_file: Path | None = Field(
        default=None,
        description="personal-data keys for the real-name reveal; without it, the "
        "POSTEDGE_PERSONAL_KEYS variable (no keys: reveal answers 503)",
    )


class ApiBrokerConfig(BrokerConfig):
    client_id: Identifier = "api"


class ApiConfig(BaseModel):
    model_config = _STRICT

    api: ListenConfig = ListenConfig()
    ledger: ApiLedgerConfig = ApiLedgerConfig()
    store: StoreConfig = SqliteStoreConfig(kind="sqlite", path=Path("telemetry.sqlite"))
    broker: ApiBrokerConfig | None = None
    coldchain: ColdChainConfig | None = None


def load_api_config(path: Path) -> ApiConfig:
    """Read and validate an API file; raise ``ConfigFileError`` naming file and key.
    Relative paths (SQLite files, the keys file) are relative to the file's directory."""
    config = load_toml_model(path, ApiConfig)
    base = path.parent
    if isinstance(config.store, SqliteStoreConfig):
        store = config.store.model_copy(update={"path": resolve(base, config.store.path)})
        config = config.model_copy(update={"store": store})
    ledger = config.ledger
    update: dict[str, object] = {}
    if ledger.keys_file is not None:
        update["keys_file"] = resolve(base, ledger.keys_file)
    update["url"] = resolve_sqlite_url(base, ledger.url)
    return config.model_copy(update={"ledger": ledger.model_copy(update=update)})
