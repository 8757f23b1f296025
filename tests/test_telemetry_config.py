"""The ``[store]`` configuration: a union chosen by ``kind``, strict, secrets kept out of sight."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from gateway.telemetry import open_store
from gateway.telemetry.config import InfluxStoreConfig, SqliteStoreConfig, StoreConfig
from gateway.telemetry.influx import InfluxTelemetryStore
from gateway.telemetry.sqlite import SqliteTelemetryStore

STORE: TypeAdapter[Any] = TypeAdapter(StoreConfig)


def influx(**values: Any) -> InfluxStoreConfig:
    config = STORE.validate_python({"kind": "influxdb", **values})
    assert isinstance(config, InfluxStoreConfig)
    return config


def test_kind_chooses_the_model_and_the_store_without_io(tmp_path: Path) -> None:
    sqlite = STORE.validate_python({"kind": "sqlite", "path": str(tmp_path / "t.sqlite")})
    assert sqlite == SqliteStoreConfig(kind="sqlite", path=tmp_path / "t.sqlite")
    assert isinstance(open_store(sqlite), SqliteTelemetryStore)
    assert not (tmp_path / "t.sqlite").exists()  # constructors do no I/O
    assert isinstance(open_store(influx()), InfluxTelemetryStore)


def test_influx_defaults() -> None:
    config = influx()
    assert config.url == "http://127.0.0.1:8086"
    assert (config.api, config.database, config.org) == ("v1", "postedge", "-")
    assert config.retention_policy is None
    assert config.username is None
    assert (config.token, config.password) == (None, None)
    assert config.timeout_s == 10.0


@pytest.mark.parametrize(
    ("values", "bucket"),
    [
        ({}, "postedge"),
        ({"retention_policy": "week"}, "postedge/week"),
        ({"bucket": "cold", "retention_policy": "week"}, "cold"),
    ],
)
def test_the_v2_bucket_defaults_to_database_and_retention_policy(
    values: dict[str, str], bucket: str
) -> None:
    """InfluxDB 1.8 maps ``db/rp`` to a bucket; 2.x and 3.x take the name as given."""
    assert influx(api="v2", **values).write_bucket == bucket


@pytest.mark.parametrize(
    "values",
    [
        {"kind": "mongodb"},
        {"path": "t.sqlite"},
        {"kind": "sqlite"},
        {"kind": "sqlite", "path": "t.sqlite", "synchronous": "OFF"},
        {"kind": "influxdb", "databse": "typo"},
        {"kind": "influxdb", "api": "v3"},
        {"kind": "influxdb", "timeout_s": 0},
        {"kind": "influxdb", "database": ""},
        {"kind": "influxdb", "url": "ftp://host"},
        {"kind": "influxdb", "url": "localhost:8086"},
        {"kind": "influxdb", "url": "http://user:pw@host:8086"},
        {"kind": "influxdb", "url": "http://host:8086/?db=x"},
        {"kind": "influxdb", "username": "gw"},
        {"kind": "influxdb", "password": "pw"},
        {"kind": "influxdb", "token": "t", "username": "gw", "password": "pw"},
        {"kind": "influxdb", "bucket": "b"},
    ],
)
def test_invalid_store_configs_are_rejected(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        STORE.validate_python(values)


def test_unknown_keys_are_errors_that_name_the_key() -> None:
    with pytest.raises(ValidationError, match="databse"):
        influx(databse="postedge")


def test_the_url_loses_a_trailing_slash() -> None:
    assert influx(url="https://influx.example:8086/").url == "https://influx.example:8086"


def test_secrets_stay_out_of_repr_dumps_and_errors() -> None:
    config = influx(username="gw", password="hunter2", api="v2")
    token = influx(token="tok-secret")
    for text in (repr(config), str(config), config.model_dump_json(), repr(token), str(token)):
        assert "hunter2" not in text
        assert "tok-secret" not in text
    assert config.password is not None
    assert config.password.get_secret_value() == "hunter2"
    with pytest.raises(ValidationError) as caught:  # errors of the model itself hide the input
        InfluxStoreConfig(kind="influxdb", token="tok-secret", username="gw", password="hunter2")
    assert "hunter2" not in str(caught.value)
    assert "tok-secret" not in str(caught.value)


def test_configs_are_frozen() -> None:
    with pytest.raises(ValidationError):
        influx().database = "other"
