"""Boot counter and sequence numbers that stay unique across reboots and power cuts.

Message ids are ``{device}:{boot}:{seq}``. The boot counter is incremented and made
durable at every start. Sequence numbers rise monotonically across boots: the file
records a *reservation* (the highest seq that may be handed out before the file is
written again), made durable before any number from it is used, so a power cut can skip
numbers but never repeat one, at the cost of one fsync per block instead of per message.

An exclusive lock on the file stops two agents from using one identity at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from pathlib import Path
from typing import IO

from edge.errors import EdgeError

BLOCK = 1000


class SequenceStore:
    """Hands out ``(boot, seq)`` pairs for one device; thread-safe."""

    def __init__(self, path: Path, *, block: int = BLOCK) -> None:
        self.path = Path(path)
        self._block = block
        self._lock = threading.Lock()
        self._lock_file: IO[str] | None = None
        self.boot = 0
        self._next = 0
        self._reserved = 0

    def open(self) -> None:
        """Take the lock, count this boot and reserve the first block of numbers."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_file = (self.path.parent / f"{self.path.name}.lock").open("a")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise EdgeError(
                f"{self.path} is in use by another process: "
                "two agents may not share a device identity"
            ) from None
        try:
            boot, reserved = self._read()
            self._write(boot + 1, reserved + self._block)
        except BaseException:
            lock_file.close()
            raise
        self._lock_file = lock_file
        self.boot = boot + 1
        self._next = reserved + 1
        self._reserved = reserved + self._block

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def next(self) -> tuple[int, int]:
        """The next ``(boot, seq)``; durable before it is returned."""
        with self._lock:
            if self._lock_file is None:
                raise EdgeError("sequence store is not open")
            if self._next > self._reserved:
                self._reserved += self._block
                self._write(self.boot, self._reserved)
            seq = self._next
            self._next += 1
            return self.boot, seq

    def _read(self) -> tuple[int, int]:
        try:
            state = json.loads(self.path.read_text())
            return int(state["boot"]), int(state["reserved"])
        except FileNotFoundError:
            return 0, 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EdgeError(
                f"{self.path} is damaged ({exc}); refusing to reuse message ids. "
                "Move it aside only if this device's messages may be counted twice."
            ) from None

    def _write(self, boot: int, reserved: int) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w") as handle:
            json.dump({"boot": boot, "reserved": reserved}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def __enter__(self) -> SequenceStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.close()
