"""``postedge edge check``: is this station ready to run, without running it?

An installer wiring a station box wants to know, before leaving the village, that the
config file is valid, the secrets and certificates are in place, the data directory is
writable and every device named in the file answers. This module checks each of these
once and reports one line per item. It publishes nothing and takes none of the agent's
locks (sequence numbers, outbox), so it can run beside a running agent, though the
agent's serial ports will then be busy and fail here.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from contracts.configfile import ConfigFileError
from edge.config import (
    DeviceConfig,
    Ds18b20Config,
    LockBoardConfig,
    ModbusBusConfig,
    ScannerConfig,
    StationConfig,
    load_station_config,
)
from edge.probes import probe_spec
from firmware_bridge.errors import BridgeError, DeviceUnavailable
from firmware_bridge.lockboard import LockBus
from firmware_bridge.probes.ds18b20 import Ds18b20
from firmware_bridge.probes.modbus import ModbusRtuBus
from firmware_bridge.serial_link import SerialLink


@dataclass(frozen=True)
class CheckItem:
    """One thing checked: what, whether it passed, and what was found."""

    what: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'} {self.what}: {self.detail}"


@dataclass(frozen=True)
class CheckReport:
    config: Path
    items: tuple[CheckItem, ...]

    @property
    def ok(self) -> bool:
        return all(item.ok for item in self.items)

    @property
    def failures(self) -> list[CheckItem]:
        return [item for item in self.items if not item.ok]

    def lines(self) -> list[str]:
        return [item.line() for item in self.items]

    def summary(self) -> str:
        failed = len(self.failures)
        verdict = "all OK" if not failed else f"{failed} FAILED"
        return f"{self.config}: {len(self.items)} checks, {verdict}"


def check_station(path: Path, *, devices: bool = True, timeout_s: float = 2.0) -> CheckReport:
    """Validate the station file at ``path`` and what it names; raise
    :class:`ConfigFileError` if the file itself is invalid. ``devices=False`` skips the
    device reads; ``timeout_s`` bounds each device's answer. Runs its own event loop:
    code already in one calls :func:`check_files` and :func:`check_devices`."""
    config = load_station_config(path)
    items = check_files(config)
    if devices:
        items += asyncio.run(check_devices(config, timeout_s=timeout_s))
    return CheckReport(path, tuple(items))


# --- files -----------------------------------------------------------------------------------


def check_files(config: StationConfig) -> list[CheckItem]:
    """Secrets, certificates and the data directory."""
    items: list[CheckItem] = []
    tls = config.broker.tls
    if tls is not None:
        items.append(_check_ca(tls.ca_file))
        if tls.cert_file is not None and tls.key_file is not None:
            items.append(_check_cert("broker TLS client certificate", tls.cert_file, tls.key_file))
    for device in config.devices:
        if device.password_file is not None:
            items.append(_check_password(device))
        if device.tls_cert_file is not None and device.tls_key_file is not None:
            what = f"device {device.id} TLS client certificate"
            items.append(_check_cert(what, device.tls_cert_file, device.tls_key_file))
    items.append(_check_data_dir(config.data_dir))
    return items


def _check_password(device: DeviceConfig) -> CheckItem:
    what = f"device {device.id} password_file {device.password_file}"
    try:
        secret = device.secret()
    except ConfigFileError as exc:
        return CheckItem(what, False, str(exc))
    if not secret:
        return CheckItem(what, False, "is empty")
    return CheckItem(what, True, "readable")


def _check_ca(ca_file: Path) -> CheckItem:
    what = f"broker TLS ca_file {ca_file}"
    try:
        ssl.create_default_context(cafile=str(ca_file))
    except ssl.SSLError as exc:  # before OSError, its base class
        return CheckItem(what, False, f"not a usable CA certificate: {exc.reason or exc}")
    except OSError as exc:
        return CheckItem(what, False, f"cannot read: {exc.strerror}")
    return CheckItem(what, True, "loaded")


def _check_cert(what: str, cert_file: Path, key_file: Path) -> CheckItem:
    what = f"{what} {cert_file} with key {key_file}"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except ssl.SSLError as exc:  # before OSError, its base class
        return CheckItem(what, False, f"not a usable certificate and key: {exc.reason or exc}")
    except OSError as exc:
        return CheckItem(what, False, f"cannot read: {exc.strerror}")
    return CheckItem(what, True, "loaded")


def _check_data_dir(data_dir: Path) -> CheckItem:
    """Writable, or creatable: tried with a file that is removed at once, nothing kept."""
    what = f"data_dir {data_dir}"
    existing = data_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return CheckItem(what, False, f"{existing} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".postedge-check-"):
            pass
    except OSError as exc:
        return CheckItem(what, False, f"{existing} is not writable: {exc.strerror}")
    if existing == data_dir:
        return CheckItem(what, True, "writable")
    return CheckItem(what, True, f"does not exist yet; can be created in {existing}")


# --- devices ---------------------------------------------------------------------------------


Job = Callable[[], Awaitable[list[CheckItem]]]


async def check_devices(config: StationConfig, *, timeout_s: float = 2.0) -> list[CheckItem]:
    """Read every device once. Ports are checked side by side, the devices on one port one
    after another (a bus serves one request at a time); lines come in config order."""
    if not timeout_s > 0:
        raise ValueError("timeout_s must be positive")
    jobs: list[tuple[str, Job]] = []
    for device in config.devices:
        jobs += _device_jobs(device, timeout_s)
    by_port: dict[str, list[int]] = {}
    for index, (port, _) in enumerate(jobs):
        by_port.setdefault(port, []).append(index)
    results: list[list[CheckItem]] = [[] for _ in jobs]

    async def run_port(indexes: list[int]) -> None:
        for index in indexes:
            results[index] = await jobs[index][1]()

    await asyncio.gather(*(run_port(indexes) for indexes in by_port.values()))
    return [item for result in results for item in result]


def _device_jobs(device: DeviceConfig, timeout_s: float) -> list[tuple[str, Job]]:
    jobs: list[tuple[str, Job]] = []
    for bus in device.modbus:
        jobs.append((bus.port, functools.partial(_check_modbus, device.id, bus, timeout_s)))
    for sensor in device.ds18b20:
        key = str(sensor.base / sensor.sensor)
        jobs.append((key, functools.partial(_check_ds18b20, device.id, sensor, timeout_s)))
    if (scanner := device.scanner) is not None:
        jobs.append((scanner.port, functools.partial(_check_scanner, device.id, scanner)))
    if (lockboard := device.lockboard) is not None:
        job = functools.partial(_check_lockboard, device.id, lockboard, timeout_s)
        jobs.append((lockboard.port, job))
    return jobs


async def _check_modbus(device: str, config: ModbusBusConfig, timeout_s: float) -> list[CheckItem]:
    """The port, then each probe; once the port is known dead, its probes are not tried."""
    port = CheckItem(f"device {device} modbus port {config.port}", True, "opened")
    probes: list[CheckItem] = []
    bus = ModbusRtuBus(
        config.port, baudrate=config.baudrate, timeout=min(config.timeout_s, timeout_s), retries=0
    )
    try:
        for probe in config.probes:
            what = f"device {device} probe {probe.id} (unit {probe.unit} on {config.port})"
            if not port.ok:
                probes.append(CheckItem(what, False, "not read: the port did not open"))
                continue
            try:
                reading = await bus.read(probe_spec(probe))
            except DeviceUnavailable as exc:
                if not probes:  # the first read opens the port
                    port = CheckItem(port.what, False, str(exc))
                probes.append(CheckItem(what, False, f"no reading: {exc}"))
                continue
            except BridgeError as exc:
                probes.append(CheckItem(what, False, f"no reading: {exc}"))
                continue
            humidity = "" if reading.humidity is None else f", {reading.humidity} %RH"
            probes.append(CheckItem(what, True, f"answered {reading.celsius} °C{humidity}"))
    finally:
        await bus.close()
    return [port, *probes]


async def _check_ds18b20(device: str, config: Ds18b20Config, timeout_s: float) -> list[CheckItem]:
    what = f"device {device} DS18B20 probe {config.probe} ({config.sensor})"
    sensor = Ds18b20(
        config.sensor,
        probe=config.probe,
        base=config.base,
        timeout=min(config.timeout_s, timeout_s),
    )
    try:
        reading = await sensor.read()
    except BridgeError as exc:
        return [CheckItem(what, False, f"no reading: {exc}")]
    return [CheckItem(what, True, f"answered {reading.celsius} °C")]


async def _check_scanner(device: str, config: ScannerConfig) -> list[CheckItem]:
    what = f"device {device} scanner {config.reader} port {config.port}"
    link = SerialLink(config.port, baudrate=config.baudrate)
    try:
        await link.start()
        opened = link.is_open
    finally:
        await link.stop()
    if not opened:
        return [CheckItem(what, False, _why_not_open(config.port))]
    return [CheckItem(what, True, "opened")]


async def _check_lockboard(
    device: str, config: LockBoardConfig, timeout_s: float
) -> list[CheckItem]:
    port = CheckItem(f"device {device} lock board port {config.port}", True, "opened")
    boards: list[CheckItem] = []
    retries = 2
    async with SerialLink(config.port, baudrate=config.baudrate) as link:
        if not link.is_open:
            reason = _why_not_open(config.port)
            port = CheckItem(port.what, False, reason)
            for board in config.boards:
                what = f"device {device} lock board {board} on {config.port}"
                boards.append(CheckItem(what, False, "not asked: the port did not open"))
            return [port, *boards]
        async with LockBus(
            link,
            boards=config.boards,
            locks_per_board=config.locks_per_board,
            item_sensors=config.item_sensors,
            answer_timeout_s=timeout_s / (1 + retries),
            retries=retries,
            poll_interval_s=None,
        ) as bus:
            for board in config.boards:
                boards.append(await _check_board(device, config.port, bus, board))
    return [port, *boards]


async def _check_board(device: str, port: str, bus: LockBus, board: int) -> CheckItem:
    what = f"device {device} lock board {board} on {port}"
    try:
        slots = await bus.all_status(board)
    except BridgeError as exc:
        return CheckItem(what, False, f"no answer to a door query: {exc}")
    opened = sum(slot.door == "open" for slot in slots)
    return CheckItem(what, True, f"answered: {opened} of {len(slots)} doors open")


def _why_not_open(port: str) -> str:
    """A best guess at why a serial port did not open (SerialLink logs, but does not say)."""
    if "://" not in port and not os.path.exists(port):
        return "cannot open: does not exist (adapter unplugged?)"
    if "://" not in port and not os.access(port, os.R_OK | os.W_OK):
        return "cannot open: not readable and writable by this user"
    return "cannot open: in use by another program, or not a serial port"
