"""Which telemetry store to use and how to reach it: a ``[store]`` table, chosen by ``kind``.

Examples::

    [store]
    kind = "sqlite"
    path = "telemetry.sqlite"

    [store]
    kind = "influxdb"
    url = "http://127.0.0.1:8086"
    database = "postedge"        # InfluxDB 1.x database (also used by InfluxQL queries)
    username = "gateway"         # or: token = "..."
    password = "..."

    [store]
    kind = "influxdb"
    api = "v2"                   # writes to /api/v2/write (InfluxDB 1.8+, 2.x, 3.x)
    url = "https://influx.example:8086"
    database = "postedge"        # queries go to the InfluxQL /query endpoint in every version
    bucket = "postedge"          # default: database, or "database/retention_policy"
    org = "postal"
    token = "..."
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

# Validation errors never echo the input: it may hold a password or token.
_STRICT = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class SqliteStoreConfig(BaseModel):
    """The embedded store: one SQLite file, shared by the gateway's workers and the API."""

    model_config = _STRICT

    kind: Literal["sqlite"]
    path: Path


class InfluxStoreConfig(BaseModel):
    """An InfluxDB server, 1.x (``api = "v1"``) or 1.8+/2.x/3.x (``api = "v2"``).

    ``api`` only chooses the write endpoint; queries are InfluxQL over ``/query``, which
    every version serves (2.x through its 1.x compatibility API and a DBRP mapping of
    ``database``/``retention_policy`` to the bucket). Credentials are either a ``token``
    or ``username`` and ``password``; they are never shown in ``repr`` or errors.
    """

    model_config = _STRICT

    kind: Literal["influxdb"]
    url: str = "http://127.0.0.1:8086"
    api: Literal["v1", "v2"] = "v1"
    database: str = Field(default="postedge", min_length=1, max_length=255)
    retention_policy: str | None = Field(default=None, min_length=1, max_length=255)
    bucket: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description='v2 only; default: database, or "database/retention_policy"',
    )
    org: str = Field(default="-", min_length=1)
    token: SecretStr | None = None
    username: str | None = Field(default=None, min_length=1)
    password: SecretStr | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not hold credentials: use username/password or token")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return url.rstrip("/")

    @model_validator(mode="after")
    def _check_credentials(self) -> InfluxStoreConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together: give both or neither")
        if self.token is not None and self.username is not None:
            raise ValueError("give either a token or username/password, not both")
        if self.api == "v1" and self.bucket is not None:
            raise ValueError('bucket is for api = "v2"; api = "v1" writes to database')
        return self

    @property
    def write_bucket(self) -> str:
        """The v2 bucket: as given, else the database and retention policy, 1.8-style."""
        if self.bucket is not None:
            return self.bucket
        if self.retention_policy is None:
            return self.database
        return f"{self.database}/{self.retention_policy}"


StoreConfig = Annotated[SqliteStoreConfig | InfluxStoreConfig, Field(discriminator="kind")]
