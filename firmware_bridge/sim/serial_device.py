"""The base of every simulated serial device: a pty null modem, faults, unplug and replug.

A subclass says what to do with bytes from the driver (:meth:`on_bytes`) and sends its
frames with :meth:`send`, which applies the configured :class:`LineFaults`. The driver
opens :attr:`device_path` (or the ``link``, which survives :meth:`unplug`/:meth:`replug`
as a udev symlink does).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from firmware_bridge.nullmodem import PtyNullModem
from firmware_bridge.sim.faults import NO_FAULTS, FaultInjector, LineFaults, flip_last_bit


class SerialDeviceSim:
    """Lifecycle with ``async with``; the constructor does no I/O."""

    def __init__(
        self,
        *,
        link: Path | None = None,
        faults: LineFaults = NO_FAULTS,
        corrupt: Callable[[bytes], bytes] = flip_last_bit,
    ) -> None:
        self.link = link
        self.faults = FaultInjector(faults, corrupt=corrupt)
        self.modem: PtyNullModem | None = None
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.unplugged = False

    @property
    def device_path(self) -> str:
        """The tty a driver opens now (the link, if there is one, follows replugs)."""
        if self.link is not None:
            return str(self.link)
        if self.modem is None:
            raise RuntimeError("simulator not started")
        return self.modem.device_path

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._plug()

    async def stop(self) -> None:
        await self._unplug()
        self._loop = None

    async def unplug(self) -> None:
        """Pull the cable: the driver's port vanishes (and the link with it)."""
        await self._unplug()
        self.unplugged = True

    async def replug(self) -> None:
        """Plug in again: a new tty, the same link."""
        await self._plug()
        self.unplugged = False

    async def send(self, frame: bytes) -> None:
        """Send one frame towards the driver, with the configured faults."""
        await self.faults.send(frame, self.write_raw)

    async def write_raw(self, data: bytes) -> None:
        """Send bytes as they are, no faults (for garbage and for tests)."""
        if self._fd is None:
            return  # unplugged: bytes go nowhere
        os.write(self._fd, data)

    def on_bytes(self, data: bytes) -> None:
        """Bytes from the driver; subclasses parse requests here. The default ignores them."""

    async def _plug(self) -> None:
        assert self._loop is not None
        modem = PtyNullModem(link=self.link)
        await modem.start()
        self.modem = modem
        fd = os.open(modem.sim_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._fd = fd
        self._loop.add_reader(fd, self._readable)

    async def _unplug(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None and self._loop is not None:
            self._loop.remove_reader(fd)
            os.close(fd)
        modem, self.modem = self.modem, None
        if modem is not None:
            await modem.stop()

    def _readable(self) -> None:
        if self._fd is None:
            return
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            return
        if data:
            self.on_bytes(data)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with contextlib.suppress(OSError):
            await self.stop()
