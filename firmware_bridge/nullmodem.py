"""An in-process null modem made of two pty pairs, with fault injection.

Drivers and simulators open real tty paths, so the code under test is the same pyserial
and pymodbus code that runs against a USB RS-485 adapter. Between the two ptys, bytes pass
through this process, where a test can watch them (``trace``) or drop, corrupt and rewrite
them (``set_manipulator``, after pymodbus' ``NullModem.set_manipulator``)::

    driver ── device_path ══ pty ══ relay ══ pty ══ sim_path ── simulator

Pyserial flushes its input when it opens a port: bytes relayed towards an end that is not
open yet are lost, as on a real line with nobody listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)

_CHUNK = 4096
_MAX_PENDING = 64 * 1024
"""Bytes held for an end whose tty buffer is full; more are dropped, like a line nobody reads."""


class Direction(enum.Enum):
    """Which way bytes travel through the modem."""

    TO_DEVICE = "to_device"
    """From the simulator towards the driver (answers)."""
    TO_SIM = "to_sim"
    """From the driver towards the simulator (requests)."""


Manipulator = Callable[[Direction, bytes], bytes]
"""Gets each chunk as read and returns what to deliver instead (``b""`` drops it)."""
Trace = Callable[[Direction, bytes], None]


@dataclass
class _Pty:
    """One pty pair: we relay through ``master`` and keep ``slave`` open ourselves.

    Holding the slave open means the master never sees a hang-up when the driver closes
    and reopens its port, and the raw termios settings survive between openings.
    """

    master: int
    slave: int
    path: str
    pending: bytearray = field(default_factory=bytearray)

    @classmethod
    def open(cls) -> _Pty:
        master, slave = os.openpty()
        # Raw: no echo, no CR/LF mapping, no ^C or XON/XOFF handling of binary frames.
        tty.setraw(slave)
        os.set_blocking(master, False)
        return cls(master=master, slave=slave, path=os.ttyname(slave))

    def close(self) -> None:
        # Master first: whoever still holds the slave sees the hang-up (the port vanished).
        os.close(self.master)
        os.close(self.slave)


class PtyNullModem:
    """Two real tty paths joined by an asyncio relay; use with ``async with``.

    ``link`` names a symlink to :attr:`device_path`, a stable name for configs and CLIs.
    ``trace`` sees every chunk as delivered, after the manipulator. The constructor does
    no I/O: the ptys exist between :meth:`start` and :meth:`stop`.
    """

    def __init__(self, *, link: Path | None = None, trace: Trace | None = None) -> None:
        self.link = link
        self.trace = trace
        self._manipulator: Manipulator | None = None
        self._device: _Pty | None = None
        self._sim: _Pty | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def device_path(self) -> str:
        """The tty a driver opens."""
        return self._started()[0].path

    @property
    def sim_path(self) -> str:
        """The tty a simulator opens."""
        return self._started()[1].path

    def set_manipulator(self, manipulator: Manipulator | None) -> None:
        """Install (or with ``None`` remove) a function that may drop, corrupt or rewrite bytes.

        It sees chunks as read from the pty: each frame a side writes at once usually
        arrives as one chunk, but nothing guarantees frame boundaries.
        """
        self._manipulator = manipulator

    async def start(self) -> None:
        """Open both pty pairs, start relaying, and create the link if one was asked for."""
        if self._loop is not None:
            raise RuntimeError("null modem already started")
        loop = asyncio.get_running_loop()
        device, sim = _Pty.open(), _Pty.open()
        self._loop, self._device, self._sim = loop, device, sim
        loop.add_reader(device.master, self._relay, device, sim, Direction.TO_SIM)
        loop.add_reader(sim.master, self._relay, sim, device, Direction.TO_DEVICE)
        if self.link is not None:
            try:
                _make_link(self.link, device.path)
            except OSError:
                await self.stop()
                raise

    async def stop(self) -> None:
        """Stop relaying and close the ptys; drivers still holding the port see it vanish."""
        if self._loop is None or self._device is None or self._sim is None:
            return
        for pty in (self._device, self._sim):
            self._loop.remove_reader(pty.master)
            self._loop.remove_writer(pty.master)
        if self.link is not None:
            _remove_link(self.link, self._device.path)
        self._device.close()
        self._sim.close()
        self._loop = self._device = self._sim = None

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

    def _started(self) -> tuple[_Pty, _Pty]:
        if self._device is None or self._sim is None:
            raise RuntimeError("null modem not started: use 'async with' or start()")
        return self._device, self._sim

    def _relay(self, source: _Pty, target: _Pty, direction: Direction) -> None:
        try:
            data = os.read(source.master, _CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            # Cannot happen while we hold the slave open; if it does, stop rather than spin.
            log.error("null modem: %s side failed: %s; relaying stopped", direction.value, exc)
            if self._loop is not None:
                self._loop.remove_reader(source.master)
            return
        data = self._manipulate(direction, data)
        if not data:
            return
        if self.trace is not None:
            self.trace(direction, data)
        self._write(target, data)

    def _manipulate(self, direction: Direction, data: bytes) -> bytes:
        if self._manipulator is None:
            return data
        try:
            return self._manipulator(direction, data)
        except Exception:
            # A broken manipulator is a test bug: say so loudly, and treat it as a lost chunk
            # rather than killing the relay for every later test step.
            log.exception("null modem manipulator failed; chunk dropped")
            return b""

    def _write(self, target: _Pty, data: bytes) -> None:
        if not target.pending:
            try:
                written = os.write(target.master, data)
            except (BlockingIOError, InterruptedError):
                written = 0
            data = data[written:]
            if not data:
                return
            assert self._loop is not None
            self._loop.add_writer(target.master, self._flush, target)
        room = _MAX_PENDING - len(target.pending)
        target.pending += data[:room]

    def _flush(self, target: _Pty) -> None:
        try:
            written = os.write(target.master, target.pending)
        except (BlockingIOError, InterruptedError):
            return
        del target.pending[:written]
        if not target.pending and self._loop is not None:
            self._loop.remove_writer(target.master)


def _make_link(link: Path, target: str) -> None:
    """Point ``link`` at ``target``, replacing a stale symlink but never a real file."""
    if os.path.lexists(link) and not link.is_symlink():
        raise FileExistsError(f"{link} exists and is not a symlink")
    temporary = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    temporary.symlink_to(target)
    temporary.replace(link)


def _remove_link(link: Path, target: str) -> None:
    """Remove ``link`` if it still points at our pty (another modem may have taken the name)."""
    with contextlib.suppress(OSError):
        if link.is_symlink() and os.readlink(link) == target:
            link.unlink()
