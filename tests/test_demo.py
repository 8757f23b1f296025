"""``postedge demo`` as a user runs it: readings from all three stations, a clean stop."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gateway.ledger import AlertRow, Ledger
from postedge.localservers import free_port
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def get(url: str, token_file: Path) -> object:
    token = token_file.read_text().strip()
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
        return json.load(response)


def stations_reading(base: str, token_file: Path) -> set[str]:
    try:
        page = get(f"{base}/api/v1/stations", token_file)
    except OSError:
        return set()
    assert isinstance(page, dict)
    return {s["id"] for s in page["items"] if any(d["probes"] for d in s["devices"])}


def medicine_alert(workdir: Path) -> AlertRow | None:
    if not (workdir / "ledger.sqlite").exists():
        return None
    ledger = Ledger(f"sqlite:///{workdir / 'ledger.sqlite'}")
    with ledger, ledger.transaction(write=False) as tx:
        rows = tx.alerts(states=("open", "acknowledged", "resolved"))
    return next((row for row in rows if row.subject == "village-23-medbox/medicine"), None)


def test_demo_serves_all_three_stations_within_20_seconds_and_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    port = free_port()
    started = time.monotonic()
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "postedge.cli",
            "demo",
            "--api-port",
            str(port),
            "--duration",
            "90",
            "--interval",
            "1",
            "--workdir",
            str(tmp_path / "demo"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    token = tmp_path / "demo" / "api-token"
    try:
        wait_until(
            lambda: stations_reading(base, token) == {"county-01", "township-07", "village-23"},
            timeout=20 - (time.monotonic() - started),
            what="readings from all three stations",
        )
        readings = get(
            f"{base}/api/v1/probes/village-23/village-23-medbox/medicine/temperature", token
        )
        assert isinstance(readings, dict)
        assert readings["points"]
        assert readings["profile"]["name"] == "pharma"  # the API knows the demo's profiles
        with urllib.request.urlopen(f"{base}/", timeout=5) as page:  # noqa: S310 - loopback
            assert b"postedge" in page.read()  # the dashboard
        # The medicine probe's simulated excursion (above 8 °C from about 25 s) alarms
        # after the demo's 20 s delay.
        alert = wait_until(
            lambda: medicine_alert(tmp_path / "demo"),
            timeout=60,
            what="the medicine probe's alert",
        )
        assert alert is not None
        assert (alert.kind, alert.station) == ("temperature_high", "village-23")
        demo.send_signal(signal.SIGINT)  # as Ctrl-C in the terminal
        output = demo.communicate(timeout=60)[0]
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
    assert demo.returncode == 0, output
    assert f"{base}/api/v1/stations" in output
    assert f"Dashboard: {base}/" in output
    assert "stopped. Data and logs are kept in" in output
    assert "Traceback" not in output
    for log in (tmp_path / "demo" / "logs").glob("*.log"):
        assert "Traceback" not in log.read_text(), log.name


def test_demo_without_mosquitto_says_how_to_install_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "postedge.cli",
            "demo",
            "--mosquitto",
            str(tmp_path / "absent"),
            "--api-port",
            str(free_port()),
            "--workdir",
            str(tmp_path / "demo"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "mosquitto was not found" in result.stderr
    assert "apt-get install -y mosquitto" in result.stderr
    assert "Traceback" not in result.stderr
