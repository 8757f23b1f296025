"""Every command has useful --help, and errors are reported without tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from postedge.cli import main

COMMANDS = [
    ([], ["edge", "gateway", "api", "sim", "demo"]),
    (["edge"], ["run"]),
    (["edge", "run"], ["STATION.toml", "SIGTERM"]),
    (["gateway"], ["run"]),
    (["gateway", "run"], ["GATEWAY.toml", "--workers", "_deadletter"]),
    (["api"], ["--config", "--port", "/api/v1/", "users", "tokens"]),
    (["sim"], ["probe", "ds18b20", "scanner", "lockboard", "idcard", "sorter", "xray"]),
    (["sim", "probe"], ["--scenario", "excursion"]),
    (["demo"], ["--api-port", "--duration", "--workdir"]),
]


@pytest.mark.parametrize(("command", "mentions"), COMMANDS, ids=lambda c: " ".join(c) or "postedge")
def test_help_describes_the_command(
    command: list[str], mentions: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for word in mentions:
        assert word in text


def test_config_errors_exit_2_with_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "station.toml"
    config.write_text('station = "s"\n[broker]\nprot = 1\n')
    result = subprocess.run(
        [sys.executable, "-m", "postedge.cli", "edge", "run", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"{config}: broker.prot: Extra inputs are not permitted" in result.stderr
    assert "Traceback" not in result.stderr


def test_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "postedge.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.startswith("postedge ")
