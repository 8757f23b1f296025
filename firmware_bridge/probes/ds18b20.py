"""DS18B20 1-wire temperature sensors, read through the Linux w1-gpio sysfs.

The kernel's ``w1_therm`` driver shows each sensor as ``{base}/28-xxxxxxxxxxxx/w1_slave``;
reading that file makes the sensor convert (about 750 ms at 12 bits) and returns two lines,
the 9-byte scratchpad with the kernel's CRC verdict, then the scratchpad again with the
temperature in millidegrees::

    72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
    72 01 4b 46 7f ff 0e 10 57 t=23125

The file is this driver's frame: :func:`decode_w1_slave` and :func:`encode_w1_slave` are
its pure codec, :func:`w1_fault` says why a well-formed file is still not a reading, and
:class:`Ds18b20` reads one sensor in a thread (the read blocks) and counts what goes
wrong. Values the sensor cannot measure (outside -55..+125 °C), the 85 °C power-on value
and an all-ones scratchpad (sensor disconnected) are faults, never readings.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Self

from contracts import TemperatureBody, validate_id
from firmware_bridge.errors import (
    BridgeError,
    DeviceProtocolError,
    DeviceTimeout,
    DeviceUnavailable,
)
from firmware_bridge.faultlog import UNTIL_RECOVERED, FaultLog

log = logging.getLogger(__name__)

DEFAULT_BASE = Path("/sys/bus/w1/devices")
SENSOR_ID = re.compile(r"28-[0-9a-f]{12}")
"""Family code 0x28 (DS18B20) and the 48-bit serial number, as the kernel names the dir."""
SCRATCHPAD_SIZE = 9
MEASURABLE_C = (-55.0, 125.0)
"""The DS18B20's measuring range: anything outside it did not come from the sensor."""
POWER_ON_MILLI = 85_000
"""The scratchpad's reset value: a sensor read before any conversion (power glitch)."""
DISCONNECTED_MILLI = -127_000
"""What several userland stacks report for an absent sensor; the kernel shows all-ones."""
_MAX_FILE = 4096

_LINE_1 = re.compile(r"((?:[0-9a-f]{2} ){9}): crc=([0-9a-f]{2}) (YES|NO)")
_LINE_2 = re.compile(r"((?:[0-9a-f]{2} ){9})t=(-?\d{1,7})")


class W1Slave(NamedTuple):
    """The content of a ``w1_slave`` file."""

    scratchpad: bytes
    """The 9 bytes: temperature LSB, MSB, TH, TL, config, 3 reserved, CRC."""
    crc_ok: bool
    """The kernel's verdict (``YES``/``NO``) on the scratchpad's CRC."""
    millidegrees: int
    """The kernel's ``t=`` value."""


class W1Fault(NamedTuple):
    """Why a well-formed ``w1_slave`` is not a reading: a counter name and a reason."""

    kind: str
    reason: str


def dallas_crc8(data: bytes) -> int:
    """The Dallas/Maxim 1-wire CRC-8 (x^8 + x^5 + x^4 + 1, reflected, initial 0)."""
    crc = 0
    for byte in data:
        for _ in range(8):
            mix = (crc ^ byte) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
            byte >>= 1
    return crc


def kernel_millidegrees(scratchpad: bytes) -> int:
    """The ``t=`` the kernel computes from a 12-bit DS18B20 scratchpad (C integer division)."""
    raw = int.from_bytes(scratchpad[:2], "little", signed=True)
    magnitude = abs(raw) * 1000 // 16
    return magnitude if raw >= 0 else -magnitude


def decode_w1_slave(text: str) -> W1Slave:
    """Parse the two lines of a ``w1_slave`` file; DeviceProtocolError if they are not that."""
    lines = text.strip().splitlines()
    if len(lines) != 2:
        raise DeviceProtocolError(f"w1_slave has {len(lines)} lines, expected 2")
    first, second = _LINE_1.fullmatch(lines[0].strip()), _LINE_2.fullmatch(lines[1].strip())
    if first is None or second is None:
        which = "first" if first is None else "second"
        raise DeviceProtocolError(f"w1_slave {which} line is malformed")
    scratchpad = bytes.fromhex(first.group(1))
    if bytes.fromhex(second.group(1)) != scratchpad:
        raise DeviceProtocolError("w1_slave lines show two different scratchpads")
    if int(first.group(2), 16) != dallas_crc8(scratchpad[:8]):
        raise DeviceProtocolError("w1_slave crc= is not the CRC of its scratchpad")
    return W1Slave(scratchpad, first.group(3) == "YES", int(second.group(2)))


def encode_w1_slave(slave: W1Slave) -> str:
    """The file as the kernel writes it (``crc=`` is the CRC it computed over 8 bytes)."""
    pad = "".join(f"{byte:02x} " for byte in slave.scratchpad)
    verdict = "YES" if slave.crc_ok else "NO"
    return (
        f"{pad}: crc={dallas_crc8(slave.scratchpad[:8]):02x} {verdict}\n"
        f"{pad}t={slave.millidegrees}\n"
    )


def w1_fault(slave: W1Slave) -> W1Fault | None:
    """Why ``slave`` is not a reading, or None if it is one. Pure; checks in order of cause."""
    pad, milli = slave.scratchpad, slave.millidegrees
    if pad == b"\xff" * SCRATCHPAD_SIZE or milli == DISCONNECTED_MILLI:
        return W1Fault("disconnected", "scratchpad all ones: sensor disconnected or not answering")
    if not slave.crc_ok or dallas_crc8(pad[:8]) != pad[8]:
        return W1Fault("bad_crc", "scratchpad CRC check failed (noise on the 1-wire line)")
    if pad[4] & 0x1F != 0x1F:
        # The config register's low five bits always read 1: all zeros means a shorted line.
        return W1Fault("implausible", "scratchpad is not a DS18B20's (data line shorted?)")
    if not pad[4] & 0x80 and milli != kernel_millidegrees(pad):
        return W1Fault("implausible", "t= does not match the scratchpad temperature")
    if milli == POWER_ON_MILLI:
        return W1Fault("power_on", "85 °C power-on value: read before any conversion")
    low, high = MEASURABLE_C
    if not low * 1000 <= milli <= high * 1000:
        return W1Fault("implausible", f"{milli / 1000} °C is outside the DS18B20's {low}..{high}")
    return None


def parse_w1_slave(text: str) -> float:
    """The temperature in a ``w1_slave`` file, in °C.

    DeviceTimeout for a disconnected sensor (it did not answer); DeviceProtocolError for
    anything else that is not a reading, with the reason.
    """
    slave = decode_w1_slave(text)
    fault = w1_fault(slave)
    if fault is None:
        return slave.millidegrees / 1000
    if fault.kind == "disconnected":
        raise DeviceTimeout(fault.reason)
    raise DeviceProtocolError(fault.reason)


def sensor_ids(base: Path = DEFAULT_BASE) -> list[str]:
    """The DS18B20s the kernel lists under ``base``, sorted; DeviceUnavailable without a bus."""
    try:
        return sorted(entry.name for entry in base.iterdir() if SENSOR_ID.fullmatch(entry.name))
    except OSError as exc:
        raise DeviceUnavailable(f"1-wire bus {base}: {exc.strerror}") from None


class Ds18b20:
    """One DS18B20 by id; ``async with`` it and ``await read()`` for a reading.

    ``probe`` is the wire id readings carry (default: the sensor id). ``timeout`` bounds one
    read: the kernel may hold it for seconds on a disturbed bus. :attr:`stats` counts
    ``readings`` and faults by kind: ``unavailable``, ``timeouts``, ``disconnected``,
    ``malformed``, ``bad_crc``, ``power_on``, ``implausible``.
    """

    def __init__(
        self,
        sensor_id: str,
        *,
        probe: str | None = None,
        base: Path = DEFAULT_BASE,
        timeout: float = 3.0,
    ) -> None:
        if not isinstance(sensor_id, str) or not SENSOR_ID.fullmatch(sensor_id):
            raise ValueError(f"sensor_id must look like 28-0123456789ab, not {sensor_id!r}")
        self.sensor_id = sensor_id
        self.probe = validate_id(sensor_id if probe is None else probe, "probe")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self.path = Path(base) / sensor_id / "w1_slave"
        self._timeout = timeout
        self._faults = FaultLog(log, self._source, note=UNTIL_RECOVERED)
        self.stats = self._faults.counts

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    async def read(self) -> TemperatureBody:
        """One reading, or a BridgeError saying why there is none (counted, logged once)."""
        try:
            celsius = await self._read_celsius()
        except _Fault as fault:
            self._faults.fault(fault.kind, str(fault.error))
            raise fault.error from None
        self.stats["readings"] += 1
        if ended := self._faults.good():
            log.info("%s: working again after %s", self._source, ", ".join(ended))
        return TemperatureBody(probe=self.probe, celsius=celsius)

    @property
    def _source(self) -> str:
        return f"DS18B20 {self.sensor_id}"

    async def _read_celsius(self) -> float:
        try:
            text = await asyncio.wait_for(asyncio.to_thread(self._read_file), self._timeout)
        except TimeoutError:
            raise _Fault("timeouts", DeviceTimeout(f"no answer within {self._timeout} s")) from None
        try:
            slave = decode_w1_slave(text)
        except DeviceProtocolError as exc:
            raise _Fault("malformed", exc) from None
        fault = w1_fault(slave)
        if fault is None:
            return slave.millidegrees / 1000
        error_type = DeviceTimeout if fault.kind == "disconnected" else DeviceProtocolError
        raise _Fault(fault.kind, error_type(fault.reason))

    def _read_file(self) -> str:
        """Runs in a worker thread: on real hardware this blocks for the conversion."""
        try:
            with self.path.open("rb") as file:
                data = file.read(_MAX_FILE)
        except OSError as exc:
            raise _Fault(*_os_error(exc, self.path)) from None
        return data.decode("ascii", errors="replace")


class _Fault(Exception):
    """Internal: a failed read with its counter name; :meth:`Ds18b20.read` unwraps it."""

    def __init__(self, kind: str, error: BridgeError) -> None:
        super().__init__(kind)
        self.kind = kind
        self.error = error


def _os_error(exc: OSError, path: Path) -> tuple[str, BridgeError]:
    if exc.errno == errno.EIO:
        return "timeouts", DeviceTimeout(f"{path}: I/O error (sensor not answering)")
    if isinstance(exc, FileNotFoundError | NotADirectoryError) or exc.errno in (
        errno.ENODEV,
        errno.ENXIO,
    ):
        return "unavailable", DeviceUnavailable(f"{path} is missing: sensor not on the bus")
    return "unavailable", DeviceUnavailable(f"{path}: {exc.strerror}")
