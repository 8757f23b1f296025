"""The line-reading side of the edge's terminals (the clerk's and the locker panel's).

Input comes as lines from a console, a pipe or a file; a wait for a line may be cancelled
(when a scan wins the race) without losing the line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import AsyncIterator
from typing import Final, TextIO


async def read_lines(stream: TextIO) -> AsyncIterator[str]:
    """The lines of ``stream`` without line ends: through the event loop for a terminal
    or a pipe (the loop never blocks on the clerk), else in a worker thread (a regular
    file or ``StringIO``, which never block for long)."""
    if not _is_pipe_like(stream):
        while line := await asyncio.to_thread(stream.readline):
            yield line.rstrip("\r\n")
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), stream
    )
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        while raw := await reader.readline():
            yield raw.decode(encoding, errors="replace").rstrip("\r\n")
    finally:
        transport.close()


def _is_pipe_like(stream: TextIO) -> bool:
    """Whether the event loop can watch ``stream``: a pipe, a terminal or a socket."""
    try:
        mode = os.fstat(stream.fileno()).st_mode
    except (OSError, ValueError):  # no file descriptor (StringIO), or closed
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


class Quit(Exception):
    pass


class Cancel(Exception):
    pass


class EndOfInput(Exception):
    pass


class LineQueue:
    """Lines read ahead into a queue, so a wait for a line can be cancelled without
    losing one (cancelling an async generator mid-read would end it)."""

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self._lines = lines
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None

    async def get(self) -> str:
        if self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._read())
        line = await self._queue.get()
        if line is None:
            self._queue.put_nowait(None)  # every later read sees the end too
            raise EndOfInput
        return line

    async def _read(self) -> None:
        try:
            async for line in self._lines:
                self._queue.put_nowait(line)
        finally:
            self._queue.put_nowait(None)

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump


QUIT_WORDS: Final = frozenset({"q", "quit", "退出"})
CANCEL_WORDS: Final = frozenset({"c", "cancel", "取消"})


class Prompt:
    """A line prompt on ``lines`` writing to ``out``: :meth:`ask` shows a prompt and
    returns the stripped answer, raising :class:`Quit` or :class:`Cancel` for those words
    (``q``, ``c`` and their long and Chinese forms) at any prompt."""

    def __init__(self, lines: LineQueue, out: TextIO) -> None:
        self.lines = lines
        self.out = out

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    async def ask(self, prompt: str) -> str:
        self.say(prompt)
        return self.command(await self.lines.get())

    def command(self, line: str) -> str:
        """``line`` stripped, or :class:`Quit` / :class:`Cancel` for those words."""
        word = line.strip().lower()
        if word in QUIT_WORDS:
            raise Quit
        if word in CANCEL_WORDS:
            raise Cancel
        return line.strip()
