"""Configuration files: strict keys, errors that name the file and the key, path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_api.config import load_api_config
from contracts.configfile import ConfigFileError
from edge.config import load_station_config
from gateway.config import load_gateway_config

STATION = """
station = "village-23"
data_dir = "data"

[broker]
host = "127.0.0.1"
port = 1883

[[devices]]
id = "medbox"
password = "s3cret-value"

[[devices.modbus]]
port = "/dev/ttyUSB0"

[[devices.modbus.probes]]
id = "medicine"
unit = 1
temperature = { register = 0 }
"""


def write(tmp_path: Path, text: str, name: str = "station.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_station_config_loads_with_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = load_station_config(write(tmp_path, STATION))
    assert config.station == "village-23"
    assert config.data_dir == tmp_path / "data"
    probe = config.devices[0].modbus[0].probes[0]
    assert (probe.temperature.table, probe.temperature.scale, probe.temperature.signed) == (
        "holding",
        0.1,
        True,
    )
    assert config.devices[0].secret() == "s3cret-value"
    assert "s3cret-value" not in repr(config)


def test_unknown_key_is_named_with_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, STATION.replace("port = 1883", 'port = 1883\nhots = "x"'))
    with pytest.raises(ConfigFileError) as caught:
        load_station_config(path)
    assert str(caught.value) == f"{path}: broker.hots: Extra inputs are not permitted"


def test_wrong_type_is_named_without_quoting_the_value(tmp_path: Path) -> None:
    path = write(tmp_path, STATION.replace('id = "medbox"', 'id = "bad id"'))
    with pytest.raises(ConfigFileError) as caught:
        load_station_config(path)
    assert "devices.0.id" in str(caught.value)
    assert "bad id" not in str(caught.value)


def test_duplicate_units_on_a_bus_are_refused(tmp_path: Path) -> None:
    text = (
        STATION
        + '\n[[devices.modbus.probes]]\nid = "other"\nunit = 1\ntemperature = { register = 2 }\n'
    )
    with pytest.raises(ConfigFileError, match="share a Modbus unit id"):
        load_station_config(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "message"),
    [("station = ", "not valid TOML"), ("", "station: Field required")],
)
def test_broken_files_get_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigFileError, match=message):
        load_station_config(write(tmp_path, text))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot read"):
        load_station_config(tmp_path / "absent.toml")


def test_password_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "medbox.pw").write_text("from-file\n")
    path = write(
        tmp_path, STATION.replace('password = "s3cret-value"', 'password_file = "medbox.pw"')
    )
    assert load_station_config(path).devices[0].secret() == "from-file"


def test_gateway_and_api_configs_resolve_the_sqlite_path(tmp_path: Path) -> None:
    store = '[store]\nkind = "sqlite"\npath = "t.sqlite"\n'
    gateway = load_gateway_config(
        write(tmp_path, "[ingest]\nworkers = 2\n" + store, "gateway.toml")
    )
    assert gateway.ingest.workers == 2
    assert gateway.store.path == tmp_path / "t.sqlite"  # type: ignore[union-attr]
    api = load_api_config(write(tmp_path, "[api]\nport = 8123\n" + store, "api.toml"))
    assert api.api.port == 8123
    assert api.store.path == tmp_path / "t.sqlite"  # type: ignore[union-attr]


def test_gateway_store_kind_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="store"):
        load_gateway_config(write(tmp_path, '[store]\nkind = "mongodb"\n', "gateway.toml"))


FULL_STATION = """
station = "village-23"

[broker]
port = 8883
tls = { ca_file = "tls/ca.pem", cert_file = "tls/box.crt", key_file = "tls/box.key" }

[limits]
outbox_max_mb = 64
inflight = 2000

[health]
interval_s = 30
device = "locker"

[[devices]]
id = "locker"
tls_cert_file = "tls/locker.crt"
tls_key_file = "tls/locker.key"
scanner = { port = "/dev/ttyACM0", reader = "locker-scanner" }
lockboard = { port = "/dev/ttyUSB1", boards = [1, 2] }

[[devices]]
id = "box"
ds18b20 = [{ sensor = "28-0123456789ab", probe = "box", base = "w1" }]
"""


def test_every_driver_tls_limits_and_health_load_with_paths_resolved(tmp_path: Path) -> None:
    config = load_station_config(write(tmp_path, FULL_STATION))
    assert config.broker.tls is not None
    assert config.broker.tls.ca_file == tmp_path / "tls/ca.pem"
    assert config.broker.tls.key_file == tmp_path / "tls/box.key"
    locker, box = config.devices
    assert locker.tls_cert_file == tmp_path / "tls/locker.crt"
    assert locker.scanner is not None
    assert locker.scanner.suffix == "CR"
    assert locker.lockboard is not None
    assert locker.lockboard.boards == [1, 2]
    assert box.ds18b20[0].base == tmp_path / "w1"
    assert box.probe_ids() == ["box"]
    assert config.limits.inflight == 2000
    assert config.health_device == "locker"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('device = "locker"', 'device = "nobody"'), "health.device 'nobody'"),
        (('tls_key_file = "tls/locker.key"\n', ""), "tls_cert_file and tls_key_file together"),
        (("boards = [1, 2]", "boards = [1, 1]"), "listed twice"),
        (("inflight = 2000", "inflight = 70000"), "limits.inflight"),
        (('sensor = "28-0123456789ab"', 'sensor = "10-x"'), "devices.1.ds18b20.0.sensor"),
    ],
)
def test_inconsistent_station_files_are_refused_by_name(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    text = FULL_STATION.replace(*change)
    assert text != FULL_STATION
    with pytest.raises(ConfigFileError) as caught:
        load_station_config(write(tmp_path, text))
    assert message in str(caught.value)
    assert str(caught.value).startswith(str(tmp_path / "station.toml"))


def test_the_health_device_defaults_to_the_first_device(tmp_path: Path) -> None:
    config = load_station_config(write(tmp_path, STATION))
    assert config.health_device == "medbox"


def test_gateway_ledger_paths_resolve_and_a_ledger_needs_a_registry(tmp_path: Path) -> None:
    text = (
        'registry = "reg/registry.toml"\n\n[ledger]\nurl = "sqlite:///data/ledger.sqlite"\n'
        'keys_file = "keys/personal.keys"\n\n[metrics]\nport = 9108\n'
    )
    config = load_gateway_config(write(tmp_path, text, "gateway.toml"))
    assert config.registry == tmp_path / "reg/registry.toml"
    assert config.ledger is not None
    assert config.ledger.url == f"sqlite:///{tmp_path / 'data/ledger.sqlite'}"
    assert config.ledger.keys_file == tmp_path / "keys/personal.keys"
    assert config.metrics.port == 9108
    with pytest.raises(ConfigFileError, match="needs a registry"):
        load_gateway_config(write(tmp_path, text.split("\n", 2)[2], "gateway.toml"))
