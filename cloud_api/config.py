"""The API configuration: where to listen and which telemetry store to read.

Example::

    [api]
    host = "127.0.0.1"
    port = 8000

    [store]
    kind = "sqlite"
    path = "telemetry.sqlite"
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from contracts.configfile import load_toml_model, resolve
from gateway.telemetry.config import SqliteStoreConfig, StoreConfig

_STRICT = ConfigDict(extra="forbid", frozen=True)


class ListenConfig(BaseModel):
    model_config = _STRICT

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)


class ApiConfig(BaseModel):
    model_config = _STRICT

    api: ListenConfig = ListenConfig()
    store: StoreConfig = SqliteStoreConfig(kind="sqlite", path=Path("telemetry.sqlite"))


def load_api_config(path: Path) -> ApiConfig:
    """Read and validate an API file; raise ``ConfigFileError`` naming file and key."""
    config = load_toml_model(path, ApiConfig)
    if isinstance(config.store, SqliteStoreConfig):
        store = config.store.model_copy(update={"path": resolve(path.parent, config.store.path)})
        config = config.model_copy(update={"store": store})
    return config
