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
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from contracts.configfile import load_toml_model, resolve
from contracts.ids import Identifier
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


class GatewayConfig(BaseModel):
    model_config = _STRICT

    broker: BrokerConfig = BrokerConfig()
    store: StoreConfig = SqliteStoreConfig(kind="sqlite", path=Path("telemetry.sqlite"))
    ingest: IngestConfig = IngestConfig()


def load_gateway_config(path: Path) -> GatewayConfig:
    """Read and validate a gateway file; raise ``ConfigFileError`` naming file and key."""
    config = load_toml_model(path, GatewayConfig)
    if isinstance(config.store, SqliteStoreConfig):
        store = config.store.model_copy(update={"path": resolve(path.parent, config.store.path)})
        config = config.model_copy(update={"store": store})
    return config
