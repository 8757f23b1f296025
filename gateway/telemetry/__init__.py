"""The telemetry store: one contract (:mod:`.model`), two implementations.

- :class:`~gateway.telemetry.influx.InfluxTelemetryStore`: InfluxDB, the production store.
- :class:`~gateway.telemetry.sqlite.SqliteTelemetryStore`: an embedded SQLite file, the
  default for the demo and a single station.

Callers see only this package's errors: :class:`StoreUnavailable` (retry later),
:class:`StoreRejected` (bad data: split the batch, dead-letter what is still refused)
and their root :class:`StoreError` (misconfiguration, refused credentials, ...).
:class:`InvalidQuery`, bad query arguments, is a :class:`StoreError` and a ``ValueError``.
"""

from __future__ import annotations

from gateway.telemetry.config import InfluxStoreConfig, SqliteStoreConfig, StoreConfig
from gateway.telemetry.model import (
    Bucket,
    FieldValue,
    InvalidQuery,
    LastValue,
    SeriesValue,
    StoreError,
    StoreRejected,
    StoreUnavailable,
    TelemetryPoint,
    TelemetryStore,
)

__all__ = [
    "Bucket",
    "FieldValue",
    "InfluxStoreConfig",
    "InvalidQuery",
    "LastValue",
    "SeriesValue",
    "SqliteStoreConfig",
    "StoreConfig",
    "StoreError",
    "StoreRejected",
    "StoreUnavailable",
    "TelemetryPoint",
    "TelemetryStore",
    "open_store",
]


def open_store(config: SqliteStoreConfig | InfluxStoreConfig) -> TelemetryStore:
    """The store ``config`` describes, not opened yet: the caller calls ``open()``.

    Implementations are imported here, so that a SQLite-only process never loads the
    InfluxDB client.
    """
    if isinstance(config, SqliteStoreConfig):
        from gateway.telemetry.sqlite import SqliteTelemetryStore

        return SqliteTelemetryStore(config.path)
    from gateway.telemetry.influx import InfluxTelemetryStore

    return InfluxTelemetryStore(config)
