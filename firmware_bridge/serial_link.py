"""A serial port by path that survives the device going away and coming back.

USB serial adapters get unplugged; when one returns, udev gives it the same symlink
(``/dev/serial/by-id/...``) but perhaps another tty. :class:`SerialLink` opens the path,
notices when the port vanishes, and reopens it in the background with capped exponential
backoff, resolving the path again each time. Drivers read and write through it on an
asyncio loop and see only ``firmware_bridge`` errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Self

import serial

from firmware_bridge.errors import DeviceTimeout, DeviceUnavailable

log = logging.getLogger(__name__)

Trace = Callable[[bool, bytes], None]
"""Called as ``trace(sending, data)`` for every chunk written (True) or read (False)."""


class SerialLink:
    """One serial device; use with ``async with``. The constructor does no I/O."""

    def __init__(
        self,
        path: str,
        *,
        baudrate: int = 9600,
        reopen_initial_s: float = 0.1,
        reopen_max_s: float = 5.0,
        write_timeout_s: float = 1.0,
        trace: Trace | None = None,
    ) -> None:
        if reopen_initial_s <= 0 or reopen_max_s < reopen_initial_s:
            raise ValueError("need 0 < reopen_initial_s <= reopen_max_s")
        self.path = path
        self.trace = trace
        self._baudrate = baudrate
        self._reopen_initial = reopen_initial_s
        self._reopen_max = reopen_max_s
        self._write_timeout = write_timeout_s
        self._port: serial.Serial | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._received = bytearray()
        self._data = asyncio.Event()
        self._opened = asyncio.Event()
        self._reopener: asyncio.Task[None] | None = None
        self._absent_logged = False
        self.opens = 0
        self.vanished = 0

    @property
    def is_open(self) -> bool:
        return self._port is not None

    async def start(self) -> None:
        """Open the port now if it is there, else keep trying in the background."""
        self._loop = asyncio.get_running_loop()
        if not self._try_open():
            self._schedule_reopen()

    async def stop(self) -> None:
        if self._reopener is not None:
            self._reopener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reopener
            self._reopener = None
        self._close()
        self._loop = None

    async def wait_open(self, timeout: float) -> bool:
        """Wait until the port is open; False if it is still absent after ``timeout``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._opened.wait(), timeout)
        return self.is_open

    async def read(self, timeout: float) -> bytes:
        """The bytes received so far, waiting up to ``timeout`` for the first one.

        Raises :class:`DeviceTimeout` when nothing came and :class:`DeviceUnavailable`
        when the port is not open or vanishes while waiting.
        """
        if not self._received:
            if not self.is_open:
                raise DeviceUnavailable(f"{self.path} is not connected")
            self._data.clear()
            try:
                await asyncio.wait_for(self._data.wait(), timeout)
            except TimeoutError:
                raise DeviceTimeout(f"{self.path}: nothing received in {timeout:g} s") from None
            if not self._received:
                raise DeviceUnavailable(f"{self.path} vanished")
        data = bytes(self._received)
        self._received.clear()
        return data

    def discard_input(self) -> None:
        """Drop what was received and not read (before a request whose answer matters)."""
        self._received.clear()

    async def write(self, data: bytes) -> None:
        port = self._port
        if port is None:
            raise DeviceUnavailable(f"{self.path} is not connected")
        if self.trace is not None:
            self.trace(True, data)
        try:
            port.write(data)
        except serial.SerialTimeoutException:
            raise DeviceTimeout(
                f"{self.path}: write not taken in {self._write_timeout:g} s"
            ) from None
        except (serial.SerialException, OSError):
            self._lost()
            raise DeviceUnavailable(f"{self.path} vanished") from None

    def _try_open(self) -> bool:
        try:
            port = serial.Serial(
                self.path,
                baudrate=self._baudrate,
                timeout=0,
                write_timeout=self._write_timeout,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            if not self._absent_logged:
                log.warning("%s: cannot open (%s); will keep trying", self.path, _cause(exc))
                self._absent_logged = True
            return False
        assert self._loop is not None
        self._port = port
        self._loop.add_reader(port.fileno(), self._on_readable)
        self.opens += 1
        if self.opens > 1 or self._absent_logged:
            log.info("%s: open again", self.path)
        self._absent_logged = False
        self._opened.set()
        return True

    def _on_readable(self) -> None:
        port = self._port
        if port is None:
            return
        try:
            data = port.read(port.in_waiting or 1)
        except (serial.SerialException, OSError):
            data = b""
        if not data:  # readable but empty: the other end hung up
            self._lost()
            return
        if self.trace is not None:
            self.trace(False, data)
        self._received += data
        self._data.set()

    def _lost(self) -> None:
        if self._port is None:
            return
        self.vanished += 1
        log.error("%s: port vanished (unplugged?); reopening with backoff", self.path)
        self._close()
        self._data.set()  # wake a reader, who finds nothing and reports the loss
        self._schedule_reopen()

    def _close(self) -> None:
        port, self._port = self._port, None
        self._opened.clear()
        if port is None:
            return
        if self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(port.fileno())
        with contextlib.suppress(serial.SerialException, OSError):
            port.close()

    def _schedule_reopen(self) -> None:
        if self._loop is None or (self._reopener is not None and not self._reopener.done()):
            return
        self._reopener = self._loop.create_task(self._reopen())

    async def _reopen(self) -> None:
        delay = self._reopen_initial
        while not self._try_open():
            await asyncio.sleep(delay)  # backoff between attempts to reopen the device
            delay = min(delay * 2, self._reopen_max)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


def _cause(exc: BaseException) -> str:
    errno = getattr(exc, "errno", None)
    if errno == 2:
        return "does not exist"
    if errno == 13:
        return "permission denied"
    if errno == 16 or "exclusively" in str(exc).lower() or "lock" in str(exc).lower():
        return "in use by another process"
    return str(exc) or type(exc).__name__
