"""Modbus RTU temperature/humidity probes on an RS-485 bus.

A probe is described as data (:class:`ModbusProbeSpec`); a bus (:class:`ModbusRtuBus`) owns
one serial line and reads any number of probes on it, one request at a time, because
RS-485 is half-duplex. Everything pymodbus raises is translated here into
:mod:`firmware_bridge.errors`.

The bus counts what goes wrong (:attr:`ModbusRtuBus.stats`) and logs one line when a kind
of fault starts on a probe, not one per read. A value is passed on only if it is one the
contract accepts and not a register at its limit (the sensor-fault marker of many probes);
judging whether an accepted value is plausible for the product (stuck, spiking) is the
gateway's cold-chain engine's job, which sees the whole series.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self, get_args

from pydantic import ValidationError
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerRTU

from contracts import TemperatureBody, validate_id
from firmware_bridge.checks import check_int
from firmware_bridge.errors import (
    BridgeError,
    DeviceProtocolError,
    DeviceTimeout,
    DeviceUnavailable,
    map_exceptions,
)
from firmware_bridge.faultlog import UNTIL_RECOVERED, FaultLog

log = logging.getLogger(__name__)

Table = Literal["holding", "input"]
TABLES: tuple[Table, ...] = get_args(Table)
READ_FUNCTION_CODE: dict[Table, int] = {"holding": 3, "input": 4}

_SIGNIFICANT_DIGITS = 12
"""Enough for any int16 times any sane scale, few enough to turn 4.4999999999 into 4.5."""


@dataclass(frozen=True)
class RegisterSpec:
    """Where one quantity lives: a 16-bit register, and how to turn it into a number."""

    register: int
    table: Table = "holding"
    scale: float = 0.1
    signed: bool = True

    def __post_init__(self) -> None:
        check_int("register", self.register, 0, 0xFFFF)
        if self.table not in TABLES:
            raise ValueError(f"table must be one of {TABLES}, not {self.table!r}")
        if isinstance(self.scale, bool) or not isinstance(self.scale, int | float):
            raise TypeError(f"scale must be a number, not {self.scale!r}")
        if not math.isfinite(self.scale) or self.scale == 0:
            raise ValueError(f"scale must be finite and non-zero, not {self.scale!r}")
        if not isinstance(self.signed, bool):
            raise TypeError(f"signed must be a bool, not {self.signed!r}")


@dataclass(frozen=True)
class ModbusProbeSpec:
    """One probe on a bus: its wire id, its Modbus device id and its register map."""

    probe: str
    unit: int
    temperature: RegisterSpec
    humidity: RegisterSpec | None = None

    def __post_init__(self) -> None:
        validate_id(self.probe, "probe")
        check_int("unit", self.unit, 1, 247)  # 0 is broadcast, 248..255 are reserved
        if not isinstance(self.temperature, RegisterSpec):
            raise TypeError("temperature must be a RegisterSpec")
        if self.humidity is None:
            return
        if not isinstance(self.humidity, RegisterSpec):
            raise TypeError("humidity must be a RegisterSpec or None")
        if (self.humidity.table, self.humidity.register) == (
            self.temperature.table,
            self.temperature.register,
        ):
            raise ValueError("temperature and humidity cannot share a register")


def register_limits(spec: RegisterSpec) -> tuple[int, ...]:
    """Raw values at the end of a register's range: firmware shows these for a failed
    sensor (0x7FFF / 0x8000 signed, 0xFFFF unsigned) or a value it had to saturate."""
    return (0x7FFF, 0x8000) if spec.signed else (0xFFFF,)


def decode_register(raw: int, spec: RegisterSpec) -> float:
    """The physical value of a raw 16-bit register: two's complement if signed, times scale."""
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= 0xFFFF:
        raise ValueError(f"a register holds 0..65535, not {raw!r}")
    if spec.signed and raw >= 0x8000:
        raw -= 0x10000
    return float(f"{raw * spec.scale:.{_SIGNIFICANT_DIGITS}g}")


def encode_register(value: float, spec: RegisterSpec) -> int:
    """The raw register a device shows for ``value``; saturates at the range, as firmware does.

    The inverse of :func:`decode_register` up to the scale's resolution.
    """
    if not math.isfinite(value):
        raise ValueError(f"cannot encode {value!r}")
    low, high = (-0x8000, 0x7FFF) if spec.signed else (0, 0xFFFF)
    counts = min(high, max(low, round(value / spec.scale)))
    return counts & 0xFFFF


class ModbusRtuBus:
    """One serial line with Modbus RTU probes on it; open it with ``async with``.

    A port that cannot be opened, or that vanishes, is not fatal: every :meth:`read`
    first reopens a closed port and raises :class:`DeviceUnavailable` if it cannot, so a
    caller polling on a schedule recovers by itself once the adapter is back.
    ``timeout`` bounds each try; a request is tried ``1 + retries`` times.

    :attr:`stats` counts ``readings``, and faults by kind: ``unavailable``, ``timeouts``,
    ``bad_answers`` (garbled frames, exception responses), ``implausible`` (values the
    contract rejects, registers at their limit), ``late_answers`` (bytes with no request
    outstanding), ``stray_bytes`` (noise or repeats around an answer); ``reconnects``
    counts reopenings of a port that had been lost.
    """

    def __init__(
        self, port: str, *, baudrate: int = 9600, timeout: float = 1.0, retries: int = 1
    ) -> None:
        if not isinstance(port, str) or not port:
            raise ValueError("port must be a non-empty path")
        check_int("baudrate", baudrate, 1, 10_000_000)
        check_int("retries", retries, 0, 10)
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self._port = port
        self._baudrate = baudrate
        self._timeout = timeout
        self._retries = retries
        self._lock = asyncio.Lock()
        self._client: AsyncModbusSerialClient | None = None
        self._heard = False  # bytes came back since the last request was sent
        self._expect: int | None = None  # the unit whose answer is awaited
        self._last_heard = 0.0  # loop time bytes last arrived
        self._failed_at: float | None = None  # loop time the last request went unanswered
        self._was_open = False
        self._faults = FaultLog(log, note=UNTIL_RECOVERED)
        self.stats = self._faults.counts

    @property
    def port(self) -> str:
        return self._port

    async def __aenter__(self) -> Self:
        try:
            await self._open()
        except DeviceUnavailable as exc:
            # An adapter unplugged at start-up must not stop the caller's other buses.
            log.warning("%s; retrying on the next read", exc)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the port; a later :meth:`read` opens it again."""
        async with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    async def read(self, spec: ModbusProbeSpec) -> TemperatureBody:
        """Read one probe's temperature (and humidity, if it has one) as a validated body.

        Raises a :class:`~firmware_bridge.errors.BridgeError`, never a library exception.
        """
        source = self._where(spec.unit)
        async with self._lock:
            try:
                client = await self._open()
                raw_t, raw_h = await self._read_raw(client, spec)
            except BridgeError as exc:
                where = self._port if isinstance(exc, DeviceUnavailable) else source
                self._faults.fault(_fault_kind(exc), str(exc), source=where)
                raise
        try:
            body = self._reading(spec, raw_t, raw_h)
        except DeviceProtocolError as exc:
            self._faults.fault("implausible", str(exc), source=source)
            raise
        self.stats["readings"] += 1
        _working_again(self._faults, log, self._port)
        _working_again(self._faults, log, source)
        return body

    def _reading(self, spec: ModbusProbeSpec, raw_t: int, raw_h: int | None) -> TemperatureBody:
        """The body for raw registers, or DeviceProtocolError for values that are not readings."""
        for name, where, raw in (
            ("temperature", spec.temperature, raw_t),
            ("humidity", spec.humidity, raw_h),
        ):
            if where is not None and raw in register_limits(where):
                raise DeviceProtocolError(
                    f"{self._where(spec.unit)}: {name} register {where.register} holds "
                    f"0x{raw:04X}, the end of its range: a sensor fault marker, not a reading"
                )
        celsius = decode_register(raw_t, spec.temperature)
        humidity = None
        if spec.humidity is not None and raw_h is not None:
            humidity = decode_register(raw_h, spec.humidity)
        try:
            return TemperatureBody(probe=spec.probe, celsius=celsius, humidity=humidity)
        except ValidationError:
            raise DeviceProtocolError(
                f"{self._where(spec.unit)}: implausible reading "
                f"{celsius} °C / {humidity} %RH: check the register map"
            ) from None

    async def _open(self) -> AsyncModbusSerialClient:
        # Built on first use: pymodbus objects need a running event loop.
        if self._client is None:
            self._client = AsyncModbusSerialClient(
                self._port,
                framer=FramerType.RTU,
                baudrate=self._baudrate,
                timeout=self._timeout,
                retries=self._retries,
                reconnect_delay=0,  # reconnecting is ours to do, on the caller's schedule
                trace_packet=self._on_packet,
                name=f"modbus {self._port}",
            )
        if not self._client.connected:
            if not await self._client.connect():
                raise DeviceUnavailable(f"serial port {self._port} {_why_unopenable(self._port)}")
            if self._was_open:
                self.stats["reconnects"] += 1
            self._was_open = True
        return self._client

    def _on_packet(self, sending: bool, data: bytes) -> bytes:
        """pymodbus' packet hook: hand its framer only the answer we wait for.

        pymodbus gets the whole receive buffer here; its own hunt drops everything at the
        first bad CRC, so noise before an answer would cost the answer.
        """
        if sending or not data:
            return data
        self._heard = True
        self._last_heard = asyncio.get_running_loop().time()
        if self._expect is None:
            self._faults.fault(
                "late_answers",
                f"serial port {self._port}: bytes with no request outstanding "
                "(an answer after its timeout, or repeated): ignored",
                source=self._port,
            )
            return b""
        found = find_answer(data, self._expect)
        if found is None:
            return b""  # incomplete or damaged: wait for more, or for the timeout
        start, size = found
        if start or start + size < len(data):
            where = self._where(self._expect)
            self._faults.fault(
                "stray_bytes",
                f"{where}: bytes around the answer (noise, or a repeated frame) skipped",
                source=where,
            )
        return data[start : start + size]

    async def _settle(self) -> None:
        """After an unanswered request, wait for the line to stay quiet for one timeout.

        RTU answers carry no transaction id: a late answer to the failed request, arriving
        while the next one waits, would be taken for its answer (the temperature read as
        humidity, say). Bounded, so a chattering line cannot hold reads for ever.
        """
        if self._failed_at is None:
            return
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 10 * self._timeout
        while (now := loop.time()) < give_up:
            quiet = now - max(self._last_heard, self._failed_at)
            if quiet >= self._timeout:
                break
            await asyncio.sleep(self._timeout - quiet)  # the guard time itself
        self._failed_at = None

    async def _read_raw(
        self, client: AsyncModbusSerialClient, spec: ModbusProbeSpec
    ) -> tuple[int, int | None]:
        """The raw temperature and humidity registers, in as few requests as the map allows."""
        temperature, humidity = spec.temperature, spec.humidity
        if humidity is None:
            return (await self._read_registers(client, spec.unit, temperature, 1))[0], None
        first = min(temperature.register, humidity.register)
        if (
            humidity.table == temperature.table
            and abs(humidity.register - temperature.register) == 1
        ):
            # The usual layout: both in one request halves the time the bus is busy.
            raw = await self._read_registers(
                client, spec.unit, RegisterSpec(first, temperature.table), 2
            )
            return raw[temperature.register - first], raw[humidity.register - first]
        raw_t = (await self._read_registers(client, spec.unit, temperature, 1))[0]
        raw_h = (await self._read_registers(client, spec.unit, humidity, 1))[0]
        return raw_t, raw_h

    async def _read_registers(
        self, client: AsyncModbusSerialClient, unit: int, where: RegisterSpec, count: int
    ) -> list[int]:
        read = (
            client.read_holding_registers
            if where.table == "holding"
            else client.read_input_registers
        )
        await self._settle()
        self._heard = False
        self._expect = unit
        with map_exceptions(
            {ConnectionException: DeviceUnavailable, ModbusException: DeviceProtocolError}
        ):
            try:
                response = await read(where.register, count=count, device_id=unit)
            except ModbusIOException:
                # pymodbus reports silence and garbage alike as "no response".
                self._failed_at = asyncio.get_running_loop().time()
                raise self._no_answer(client, unit) from None
            finally:
                self._expect = None
        if response.isError():
            code = _exception_name(response.exception_code)
            raise DeviceProtocolError(
                f"{self._where(unit)}: exception response {code} "
                f"reading {where.table} register {where.register}"
            )
        if response.function_code != READ_FUNCTION_CODE[where.table]:
            raise DeviceProtocolError(
                f"{self._where(unit)}: answered function {response.function_code} "
                f"to a read of {where.table} registers"
            )
        registers = list(response.registers)
        if len(registers) != count:
            raise DeviceProtocolError(
                f"{self._where(unit)}: asked for {count} registers, got {len(registers)}"
            )
        return registers

    def _no_answer(self, client: AsyncModbusSerialClient, unit: int) -> BridgeError:
        if not client.connected:
            return DeviceUnavailable(f"serial port {self._port} vanished")
        tries = 1 + self._retries
        if self._heard:
            return DeviceProtocolError(
                f"{self._where(unit)}: no valid frame in {tries} tries (bad CRC or garbled answer)"
            )
        return DeviceTimeout(
            f"{self._where(unit)}: no answer within {self._timeout} s ({tries} tries)"
        )

    def _where(self, unit: int) -> str:
        return f"{self._port} unit {unit}"


def find_answer(buffer: bytes, unit: int) -> tuple[int, int] | None:
    """Where in ``buffer`` the first whole answer of ``unit`` to a register read is.

    ``(start, size)`` of the first frame from ``unit`` with a valid CRC that answers a
    read of holding or input registers (function 3 or 4, or an exception response);
    None if there is none yet. Pure: bytes in, position out. Which function and how many
    registers are checked later, so a wrong answer is named rather than waited out.
    """
    for start in range(len(buffer) - 4):
        if buffer[start] != unit:
            continue
        function = buffer[start + 1]
        if function & 0x80:
            size = 5  # unit, function | 0x80, exception code, CRC
        elif function in _READ_FUNCTIONS:
            size = 5 + buffer[start + 2]  # unit, function, byte count, data, CRC
        else:
            continue
        frame = buffer[start : start + size]
        if len(frame) == size and FramerRTU.compute_CRC(frame[:-2]) == int.from_bytes(
            frame[-2:], "big"
        ):
            return start, size
    return None


_READ_FUNCTIONS = frozenset(READ_FUNCTION_CODE.values())


def _working_again(faults: FaultLog, logger: logging.Logger, source: str) -> None:
    """``source`` worked: re-arm its faults, and say so once if it had been failing."""
    if ended := faults.good(source=source):
        logger.info("%s: working again after %s", source, ", ".join(ended))


def _fault_kind(exc: BridgeError) -> str:
    if isinstance(exc, DeviceUnavailable):
        return "unavailable"
    if isinstance(exc, DeviceTimeout):
        return "timeouts"
    return "bad_answers"


def _why_unopenable(port: str) -> str:
    """A best guess at why opening failed: pymodbus only logs the reason, and returns False."""
    if "://" in port:  # a pyserial URL (socket://, rfc2217://): nothing local to inspect
        return "cannot be opened"
    if not os.path.exists(port):
        return "does not exist (adapter unplugged?)"
    if not os.access(port, os.R_OK | os.W_OK):
        return "is not readable and writable by this user"
    return "cannot be opened (in use by another program, or not a serial port?)"


def _exception_name(code: int) -> str:
    try:
        return f"{code} ({ExcCodes(code).name.lower().replace('_', ' ')})"
    except ValueError:
        return str(code)
