"""The gateway configuration: a TOML file validated by pydantic at start-up.

Example::

    [broker]
    host = "127.0.0.1"
    port = 1883
    username = "gateway"
    password = "..."

    [store]
    kind = "influxdb"          # or "sqlite" with path = "telemetry.sqlite"
    url = "http://127.0.0.1:8086"
    database = "postedge"

    [ingest]
    workers = 2

    registry = "registry.toml"   # top-level key (before the first [section] in the file):
                                 # stations, devices, roles, routing tables

    [ledger]                     # the parcel ledger and the decision path
    url = "sqlite:///ledger.sqlite"   # or "postgresql+psycopg://gateway@db/postedge"
    keys_file = "personal.keys"  # or the POSTEDGE_PERSONAL_KEYS variable
    own_process = false          # true: decisions in a process of their own (PERFORMANCE.md)

    [metrics]
    port = 9108                  # GET /metrics; worker i on port + i

    [coldchain]                  # the cold-chain engine (needs [ledger]); see
    timezone = "Asia/Shanghai"   # gateway/coldchain/config.py for profiles and probes

    [notify]                     # webhooks for alerts; see docs/notifications.md
    [[notify.webhooks]]
    name = "qa-robot"
    url = "https://oapi.dingtalk.com/robot/send?access_token=..."
    format = "dingtalk"
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from contracts.configfile import load_toml_model, resolve, resolve_sqlite_url
from contracts.ids import Identifier
from gateway.coldchain.config import ColdChainConfig
from gateway.notify import NotifyConfig
from gateway.telemetry.config import SqliteStoreConfig, StoreConfig

_STRICT = ConfigDict(extra="forbid", frozen=True)


class BrokerConfig(BaseModel):
    model_config = _STRICT

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    client_id: Identifier = "gateway"
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    session_expiry_s: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        description="how long the broker keeps the gateway's queue while it is away",
    )
    reconnect_min_s: int = Field(default=1, ge=1)
    reconnect_max_s: int = Field(default=30, ge=1)


class IngestConfig(BaseModel):
    model_config = _STRICT

    workers: int = Field(default=1, ge=1, le=64, description="processes on the shared subscription")
    batch_max: int = Field(default=5000, ge=1, le=100_000)
    batch_wait_ms: int = Field(default=50, ge=0, le=10_000)
    receive_maximum: int = Field(
        default=20_000,
        ge=1,
        le=65_535,
        description="unacknowledged messages the broker may send at once (back-pressure)",
    )
    recent_ids: int = Field(
        default=200_000,
        ge=1,
        le=10_000_000,
        description="stored message ids a worker remembers, to receipt resends without rewriting",
    )
    retry_initial_s: float = Field(default=0.2, gt=0)
    retry_max_s: float = Field(default=10.0, gt=0)
    stats_interval_s: float = Field(default=60.0, gt=0)


class LedgerConfig(BaseModel):
    """The parcel ledger and the decision path (off unless this section is present)."""

    model_config = _STRICT

    url: str = Field(
        default="sqlite:///ledger.sqlite",
        description="SQLAlchemy URL: sqlite:///relative/or/absolute.sqlite or "
        "postgresql+psycopg://user@host/db",
    )
    keys_file: Path | None = Field(
        default=None,
        description="personal-data keys; without it, the POSTEDGE_PERSONAL_KEYS variable",
    )
    receive_maximum: int = Field(default=1000, ge=1, le=65_535)
    own_process: bool = Field(
        default=False,
        description="run the decision path and the cold-chain engine in a process of their "
        "own, beside the ingest workers, so telemetry ingest never delays a decision",
    )


class MetricsConfig(BaseModel):
    """``GET /metrics`` for Prometheus; worker i listens on ``port + i``."""

    model_config = _STRICT

    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535, description="None: no endpoint")


class GatewayConfig(BaseModel):
    model_config = _STRICT

    broker: BrokerConfig = BrokerConfig()
    store: StoreConfig = SqliteStoreConfig(kind="sqlite", path=Path("telemetry.sqlite"))
    ingest: IngestConfig = IngestConfig()
    registry: Path | None = Field(
        default=None,
        description="the device registry (TOML): with it, every message is checked against "
        "its device's registered station and role",
    )
    ledger: LedgerConfig | None = None
    metrics: MetricsConfig = MetricsConfig()
    coldchain: ColdChainConfig | None = None
    notify: NotifyConfig | None = None

    @model_validator(mode="after")
    def _ledger_needs_registry(self) -> Self:
        if self.ledger is not None and self.registry is None:
            raise ValueError("the [ledger] section needs a registry file (registry = ...)")
        if self.coldchain is not None and self.ledger is None:
            raise ValueError("the [coldchain] section needs a [ledger] (alerts are kept there)")
        if self.notify is not None and self.ledger is None:
            raise ValueError("the [notify] section needs a [ledger] (it sends the ledger's alerts)")
        return self


def load_gateway_config(path: Path) -> GatewayConfig:
    """Read and validate a gateway file; raise ``ConfigFileError`` naming file and key."""
    config = load_toml_model(path, GatewayConfig)
    base = path.parent
    if isinstance(config.store, SqliteStoreConfig):
        store = config.store.model_copy(update={"path": resolve(base, config.store.path)})
        config = config.model_copy(update={"store": store})
    if config.registry is not None:
        config = config.model_copy(update={"registry": resolve(base, config.registry)})
    if config.ledger is not None:
        ledger = config.ledger
        update: dict[str, object] = {}
        if ledger.keys_file is not None:
            update["keys_file"] = resolve(base, ledger.keys_file)
        update["url"] = resolve_sqlite_url(base, ledger.url)
        config = config.model_copy(update={"ledger": ledger.model_copy(update=update)})
    if config.notify is not None:
        notify = config.notify.model_copy(
            update={"queue_path": resolve(base, config.notify.queue_path)}
        )
        config = config.model_copy(update={"notify": notify})
    return config
