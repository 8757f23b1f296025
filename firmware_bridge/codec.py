"""What every frame codec shares: pure functions from bytes to frames and back.

A codec's ``decode(buffer)`` looks at the start of ``buffer`` and returns a
:class:`Decoded`: the frame found there and how many bytes it used. ``consumed == 0``
means "need more bytes"; ``frame is None`` with ``consumed > 0`` means those bytes were
garbage (noise, a frame with a bad checksum) and are skipped, with ``error`` saying why.
Codecs never raise on input and never do I/O, so they are tested with plain byte strings
split at every boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, NamedTuple, TypeVar

FrameT = TypeVar("FrameT")


class Decoded(NamedTuple, Generic[FrameT]):
    frame: FrameT | None
    consumed: int
    error: str | None = None


NEED_MORE: Decoded[object] = Decoded(None, 0)


class FrameStream(Generic[FrameT]):
    """Accumulates bytes as they arrive and yields whole frames (and skip reasons).

    ``max_buffer`` bounds memory against a device that streams garbage: beyond it, the
    oldest bytes are dropped and reported as skipped.
    """

    def __init__(
        self, decode: Callable[[bytes], Decoded[FrameT]], *, max_buffer: int = 64 * 1024
    ) -> None:
        self._decode = decode
        self._buffer = bytearray()
        self._max = max_buffer

    def feed(self, data: bytes) -> Iterator[Decoded[FrameT]]:
        """Add ``data``; yield each frame or skip that is now complete."""
        self._buffer += data
        if len(self._buffer) > self._max:
            excess = len(self._buffer) - self._max
            del self._buffer[:excess]
            yield Decoded(None, excess, f"{excess} bytes dropped: buffer over {self._max} bytes")
        while self._buffer:
            result = self._decode(bytes(self._buffer))
            if result.consumed <= 0:
                return
            del self._buffer[: result.consumed]
            yield result

    @property
    def pending(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buffer)

    def clear(self) -> None:
        """Forget a partial frame (after a reconnect, its rest will never come)."""
        self._buffer.clear()
