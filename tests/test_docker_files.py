"""The deployment files stay valid and in step with the code (no Docker engine runs here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from cloud_api.config import load_api_config
from gateway.config import load_gateway_config
from gateway.mosquitto import AclRule, acl_text, device_acl

DOCKER = Path(__file__).resolve().parent.parent / "docker"


def test_compose_file_validates() -> None:
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is installed by 'make test' (Debian package docker-compose)"
    result = subprocess.run(
        [compose, "-f", str(DOCKER / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_service_configs_load() -> None:
    gateway = load_gateway_config(DOCKER / "gateway.toml")
    assert gateway.store.kind == "influxdb"
    assert gateway.broker.host == "mosquitto"
    api = load_api_config(DOCKER / "api.toml")
    assert api.api.host == "0.0.0.0"
    assert api.ledger.url == "sqlite:////var/lib/postedge/data/ledger.sqlite"  # the shared volume
    assert api.broker is not None
    assert api.broker.host == "mosquitto"


def test_broker_acl_is_the_one_the_code_writes() -> None:
    expected = acl_text({"gateway": [AclRule("readwrite", "#")]}, patterns=device_acl())
    assert (DOCKER / "mosquitto" / "acl").read_text() == expected
