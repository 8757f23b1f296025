"""The systemd unit for station boxes and its install note agree with each other and the code.

No systemd runs here: the unit is read with configparser, and checked by
``systemd-analyze verify`` where that is installed (Debian's systemd package has it).
"""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import load_station_config
from postedge.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "systemd" / "postedge-edge.service"
INSTALL = ROOT / "docs" / "edge-install.md"


def read_unit(path: Path) -> configparser.RawConfigParser:
    """The unit as sections of keys; systemd allows a key twice, the last one wins here."""
    unit = configparser.RawConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read_string(path.read_text(encoding="utf-8"), source=str(path))
    return unit


def exec_start() -> list[str]:
    return shlex.split(read_unit(UNIT)["Service"]["ExecStart"])


def doc_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", INSTALL.read_text(encoding="utf-8"), re.S)


def test_unit_runs_the_edge_agent_with_json_logs() -> None:
    program, *args = exec_start()
    assert program == "/opt/postedge/venv/bin/postedge"
    assert args[-3:] == ["edge", "run", "/etc/postedge/station.toml"]
    parsed = build_parser().parse_args(args)
    assert parsed.log_format == "json"
    assert (parsed.command, parsed.edge_command) == ("edge", "run")


def test_unit_restarts_and_stops_with_sigterm() -> None:
    service = read_unit(UNIT)["Service"]
    assert service["Restart"] == "always"
    assert 0 < float(service["RestartSec"]) <= 30
    assert service["KillSignal"] == "SIGTERM"
    # A clean stop waits up to 5 s per device for the offline status; leave room for it.
    assert int(service["TimeoutStopSec"]) >= 15
    assert service["StandardOutput"] == "journal"
    assert service["User"] == "postedge"
    assert "dialout" in service["SupplementaryGroups"].split()


def test_unit_sandbox_leaves_serial_ports_open() -> None:
    """Hardened, but no option that would close the device policy on the serial ports."""
    service = read_unit(UNIT)["Service"]
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ProtectHome"] == "yes"
    assert service["PrivateTmp"] == "yes"
    for closes_devices in ("PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock"):
        assert closes_devices not in service


def test_state_directory_is_the_data_dir_of_the_documented_config() -> None:
    service = read_unit(UNIT)["Service"]
    state_dir = Path("/var/lib") / service["StateDirectory"]
    (toml,) = doc_blocks("toml")
    assert f'data_dir = "{state_dir}"' in toml


def test_documented_station_config_is_valid(tmp_path: Path) -> None:
    (toml,) = doc_blocks("toml")
    path = tmp_path / "station.toml"
    path.write_text(toml, encoding="utf-8")
    config = load_station_config(path)
    assert config.data_dir == Path("/var/lib/postedge")
    assert all(device.password_file is not None for device in config.devices)


def test_install_note_creates_what_the_unit_uses() -> None:
    commands = "\n".join(doc_blocks("sh"))
    program, *_ = exec_start()
    venv = Path(program).parent.parent
    assert f"python3 -m venv {venv}" in commands
    assert f"{venv}/bin/pip install" in commands
    assert re.search(r"useradd .*--groups dialout.* postedge$", commands.replace("\\\n", ""), re.M)
    assert "install -d -m 0750 -o root -g postedge /etc/postedge" in commands
    assert f"postedge edge check {exec_start()[-1]}" in commands
    assert build_parser().parse_args(["edge", "check", exec_start()[-1]]).edge_command == "check"
    assert "chmod 0600 /etc/postedge/" in commands
    assert f"install -m 0644 deploy/systemd/{UNIT.name} /etc/systemd/system/" in commands
    assert f"systemctl enable --now {UNIT.stem}" in commands
    assert f"journalctl -u {UNIT.stem} -f -o cat | jq" in commands
    assert "dtoverlay=w1-gpio" in INSTALL.read_text(encoding="utf-8")


def test_readme_links_the_install_note() -> None:
    assert "(docs/edge-install.md)" in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    """Verify needs ExecStart to exist, so the copy points at this venv's postedge."""
    installed = Path(sys.executable).parent / "postedge"
    assert installed.exists()
    text = UNIT.read_text(encoding="utf-8")
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace("/opt/postedge/venv/bin/postedge", str(installed)))
    verify = shutil.which("systemd-analyze")
    assert verify is not None
    result = subprocess.run(
        [verify, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
