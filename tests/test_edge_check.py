"""``postedge edge check``: one OK/FAIL line per item, against real files, real simulators on
ptys and the real command line."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.check import CheckItem, check_devices, check_files, check_station
from edge.config import load_station_config
from edge.sequence import SequenceStore
from firmware_bridge.nullmodem import PtyNullModem
from firmware_bridge.sim.ds18b20 import Ds18b20Simulator, SimulatedDs18b20
from firmware_bridge.sim.lockboard import LockboardScenario, LockboardSim, SimBoard
from firmware_bridge.sim.probe import ProbeSimulator, Scenario, SimulatedProbe
from tests.certs import make_ca
from tests.helpers import run_async

SENSOR = "28-0123456789ab"
CLI = (sys.executable, "-m", "postedge.cli")


@dataclass(frozen=True)
class Station:
    """Paths of a running set of simulated devices, to write a config against."""

    probe_port: str
    lock_port: str
    scanner_port: str
    w1_base: Path


@contextlib.asynccontextmanager
async def simulated_station() -> AsyncIterator[Station]:
    """A probe bus with units 1 and 2, lock boards 1 and 2, a scanner port and a DS18B20."""
    probes = [
        SimulatedProbe(1, 0, 1, Scenario.steady(4.2), humidity=Scenario.steady(60.0)),
        SimulatedProbe(2, 0, None, Scenario.steady(-18.5)),
    ]
    boards = LockboardScenario((SimBoard(1, open_doors=frozenset({3})), SimBoard(2)))
    sensors = [SimulatedDs18b20(SENSOR, Scenario.steady(6.5))]
    async with (
        ProbeSimulator(probes) as probe_sim,
        LockboardSim(boards) as lock_sim,
        PtyNullModem() as scanner,
        Ds18b20Simulator(sensors, refresh_s=None) as w1,
    ):
        yield Station(probe_sim.device_path, lock_sim.device_path, scanner.device_path, w1.base)


def write_config(
    directory: Path,
    station: Station,
    *,
    probe_port: str | None = None,
    units: tuple[int, ...] = (1, 2),
    boards: tuple[int, ...] = (1, 2),
    sensor: str = SENSOR,
) -> Path:
    probes = "".join(
        f"""
[[devices.modbus.probes]]
id = "probe-{unit}"
unit = {unit}
temperature = {{ register = 0 }}
{"humidity = { register = 1 }" if unit == 1 else ""}
"""
        for unit in units
    )
    (directory / "locker.secret").write_text("pw-locker\n")
    config = directory / "station.toml"
    config.write_text(
        f"""
station = "village-1"
data_dir = "data"

[[devices]]
id = "cold-1"
password = "pw-cold"

[[devices.modbus]]
port = "{probe_port or station.probe_port}"
timeout_s = 0.3
{probes}

[[devices]]
id = "locker-1"
password_file = "locker.secret"
scanner = {{ port = "{station.scanner_port}", reader = "counter" }}
lockboard = {{ port = "{station.lock_port}", boards = {list(boards)} }}
ds18b20 = [{{ sensor = "{sensor}", probe = "box", base = "{station.w1_base}" }}]
"""
    )
    return config


def by_what(items: list[CheckItem]) -> dict[str, CheckItem]:
    return {item.what: item for item in items}


# --- files -----------------------------------------------------------------------------------


def test_files_secrets_certificates_and_data_dir_are_checked(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki", "station")
    device = ca.client("cold-1")
    other = ca.client("other")
    (tmp_path / "cold.secret").write_text("pw\n")
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    (tmp_path / "plain-file").write_text("")
    config = tmp_path / "station.toml"
    config.write_text(
        f"""
station = "s1"
data_dir = "plain-file/data"
broker = {{ tls = {{ ca_file = "garbage.pem" }} }}

[[devices]]
id = "cold-1"
password_file = "cold.secret"
tls_cert_file = "{device.cert}"
tls_key_file = "{device.key}"

[[devices]]
id = "cold-2"
password_file = "missing.secret"
tls_cert_file = "{device.cert}"
tls_key_file = "{other.key}"
"""
    )
    items = by_what(check_files(load_station_config(config)))

    assert items[f"device cold-1 password_file {tmp_path / 'cold.secret'}"].ok
    missing = items[f"device cold-2 password_file {tmp_path / 'missing.secret'}"]
    assert not missing.ok
    assert "No such file" in missing.detail
    assert not items[f"broker TLS ca_file {tmp_path / 'garbage.pem'}"].ok
    assert items[f"device cold-1 TLS client certificate {device.cert} with key {device.key}"].ok
    mismatched = items[f"device cold-2 TLS client certificate {device.cert} with key {other.key}"]
    assert not mismatched.ok
    assert "not a usable certificate and key: KEY_VALUES_MISMATCH" in mismatched.detail
    data_dir = items[f"data_dir {tmp_path / 'plain-file' / 'data'}"]
    assert not data_dir.ok
    assert "is not a directory" in data_dir.detail


def test_a_good_ca_passes_and_a_missing_data_dir_is_not_created(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki", "station")
    config = tmp_path / "station.toml"
    config.write_text(
        f"""
station = "s1"
data_dir = "not/yet"
broker = {{ tls = {{ ca_file = "{ca.cert}" }} }}
[[devices]]
id = "cold-1"
"""
    )
    report = check_station(config, devices=False)
    assert report.ok, report.lines()
    assert report.lines() == [
        f"OK   broker TLS ca_file {ca.cert}: loaded",
        f"OK   data_dir {tmp_path / 'not/yet'}: does not exist yet; can be created in {tmp_path}",
    ]
    assert not (tmp_path / "not").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["pki", "station.toml"]


# --- devices against the simulators ------------------------------------------------------------


@pytest.mark.hil
def test_every_simulated_device_answers(tmp_path: Path) -> None:
    async def body() -> tuple[Station, list[CheckItem]]:
        async with simulated_station() as station:
            config = load_station_config(write_config(tmp_path, station))
            # An agent holding the device's sequence lock does not stop the check.
            with SequenceStore(config.data_dir / "cold-1.seq.json"):
                return station, await check_devices(config, timeout_s=1.0)

    station, items = run_async(body())
    probes, locks = station.probe_port, station.lock_port
    assert [item.line() for item in items] == [
        f"OK   device cold-1 modbus port {probes}: opened",
        f"OK   device cold-1 probe probe-1 (unit 1 on {probes}): answered 4.2 °C, 60.0 %RH",
        f"OK   device cold-1 probe probe-2 (unit 2 on {probes}): answered -18.5 °C",
        f"OK   device locker-1 DS18B20 probe box ({SENSOR}): answered 6.5 °C",
        f"OK   device locker-1 scanner counter port {station.scanner_port}: opened",
        f"OK   device locker-1 lock board port {locks}: opened",
        f"OK   device locker-1 lock board 1 on {locks}: answered: 1 of 24 doors open",
        f"OK   device locker-1 lock board 2 on {locks}: answered: 0 of 24 doors open",
    ]


@pytest.mark.hil
def test_absent_devices_fail_by_name(tmp_path: Path) -> None:
    async def body() -> list[CheckItem]:
        async with simulated_station() as station:
            config = write_config(
                tmp_path, station, units=(1, 5), boards=(1, 3), sensor="28-00000000beef"
            )
            return await check_devices(load_station_config(config), timeout_s=0.3)

    items = run_async(body())
    failed = {
        item.what.split(" (")[0].split(" on ")[0]: item.detail for item in items if not item.ok
    }
    assert set(failed) == {
        "device cold-1 probe probe-5",
        "device locker-1 lock board 3",
        "device locker-1 DS18B20 probe box",
    }
    assert "no answer" in failed["device cold-1 probe probe-5"]
    assert "no answer to a door query" in failed["device locker-1 lock board 3"]
    assert "sensor not on the bus" in failed["device locker-1 DS18B20 probe box"]


@pytest.mark.hil
def test_a_dead_port_fails_and_its_probes_are_not_tried(tmp_path: Path) -> None:
    dead = str(tmp_path / "ttyUSB9")

    async def body() -> list[CheckItem]:
        async with simulated_station() as station:
            config = load_station_config(write_config(tmp_path, station, probe_port=dead))
            config = config.model_copy(
                update={
                    "devices": [
                        config.devices[0],
                        config.devices[1].model_copy(
                            update={
                                "lockboard": config.devices[1].lockboard.model_copy(  # type: ignore[union-attr]
                                    update={"port": dead + "-lock"}
                                ),
                                "scanner": config.devices[1].scanner.model_copy(  # type: ignore[union-attr]
                                    update={"port": dead + "-scan"}
                                ),
                            }
                        ),
                    ]
                }
            )
            return await check_devices(config, timeout_s=0.3)

    lines = [item.line() for item in run_async(body()) if not item.ok]
    assert lines == [
        f"FAIL device cold-1 modbus port {dead}: serial port {dead} does not exist "
        "(adapter unplugged?)",
        f"FAIL device cold-1 probe probe-1 (unit 1 on {dead}): no reading: serial port {dead} "
        "does not exist (adapter unplugged?)",
        f"FAIL device cold-1 probe probe-2 (unit 2 on {dead}): not read: the port did not open",
        f"FAIL device locker-1 scanner counter port {dead}-scan: cannot open: does not exist "
        "(adapter unplugged?)",
        f"FAIL device locker-1 lock board port {dead}-lock: cannot open: does not exist "
        "(adapter unplugged?)",
        f"FAIL device locker-1 lock board 1 on {dead}-lock: not asked: the port did not open",
        f"FAIL device locker-1 lock board 2 on {dead}-lock: not asked: the port did not open",
    ]


# --- the command line ------------------------------------------------------------------------


async def run_cli(*args: str | Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.mark.hil
def test_cli_exits_0_with_ok_lines_for_a_good_station(tmp_path: Path) -> None:
    async def body() -> tuple[int, str, str]:
        async with simulated_station() as station:
            return await run_cli("edge", "check", write_config(tmp_path, station))

    code, out, err = run_async(body(), timeout=60)
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[-1] == f"{tmp_path / 'station.toml'}: 10 checks, all OK"
    assert all(line.startswith("OK   ") for line in lines[:-1])
    assert any("device cold-1 probe probe-1" in line and "4.2 °C" in line for line in lines)
    assert "Traceback" not in err


@pytest.mark.hil
def test_cli_exits_1_naming_the_absent_probe_and_skips_devices_on_request(
    tmp_path: Path,
) -> None:
    async def body() -> tuple[tuple[int, str, str], tuple[int, str, str]]:
        async with simulated_station() as station:
            config = write_config(tmp_path, station, units=(1, 7))
            checked = await run_cli("edge", "check", config, "--timeout", "0.3")
            files_only = await run_cli("edge", "check", config, "--no-devices")
            return checked, files_only

    (code, out, err), (files_code, files_out, _) = run_async(body(), timeout=60)
    assert code == 1, out + err
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 1
    assert fails[0].startswith("FAIL device cold-1 probe probe-7 (unit 7 on ")
    assert out.splitlines()[-1].endswith("10 checks, 1 FAILED")
    assert files_code == 0
    assert "probe" not in files_out
    assert files_out.splitlines()[-1].endswith("2 checks, all OK")


def test_cli_exits_2_on_an_unknown_key_naming_key_and_file(tmp_path: Path) -> None:
    config = tmp_path / "station.toml"
    config.write_text('station = "s"\n[[devices]]\nid = "d1"\nintervall_s = 5\n')
    code, out, err = run_async(run_cli("edge", "check", config), timeout=60)
    assert code == 2
    assert f"{config}: devices.0.intervall_s: Extra inputs are not permitted" in err
    assert out == ""
    assert "Traceback" not in err
