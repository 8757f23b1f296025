"""A camera as a scanner: frames in, one :class:`contracts.ScanBody` per label shown.

:class:`CameraReader` implements :class:`edge.workflows.ScanSource`, so any workflow
that takes a serial scanner takes a camera. A camera sees the same label in many frames;
a code seen again before it has been out of sight for ``dedup_window_s`` is the same
scan, so a parcel held under the camera for ten seconds is one event, and the same
waybill shown again after a pause is a new one (a clerk scanning it twice on purpose).

Frames are read and decoded in worker threads, so the event loop never waits on
OpenCV. A live source that fails is reopened with a growing pause (doubling up to
``reconnect_max_s``), and each kind of failure is logged once until frames flow again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from contracts import ScanBody, validate_id
from edge.camera.config import CameraConfig
from edge.camera.decode import BarcodeDecoder, Read
from edge.camera.sources import CameraError, Frame, FrameSource, SourceLost, open_source
from firmware_bridge.faultlog import FaultLog

log = logging.getLogger(__name__)

Effort = Literal["quick", "full"]
QUICK_VARIANTS = 3
"""The ``quick`` ladder: the frame as it is, with more contrast, and upscaled ×2."""
GOOD_FRAMES_TO_RECOVER = 25
"""Frames in a row that end a live source's fault episode."""
READ_TIMEOUT_S = 1.0
"""How long one wait for a live frame lasts before the reader looks again."""


@dataclass
class CameraStats:
    """What the reader saw, for health reports; every counter only grows."""

    frames: int = 0
    """Frames decoded."""
    scans: int = 0
    """Scan events yielded."""
    repeats: int = 0
    """Reads of a code already reported and not yet out of sight for the window."""
    unusable: int = 0
    """Reads that cannot be a scan: not printable ASCII, or too long."""
    reconnects: int = 0
    """Times a live source came back after it was lost."""


class CameraReader:
    """Scans from one camera; the constructor does no I/O.

    ``clock`` (monotonic seconds) times the repeat window, so tests can set it;
    ``max_fps`` (None: as fast as frames come) bounds the frames decoded per second in
    real time, which bounds the CPU a camera with nothing in view costs.
    """

    def __init__(
        self,
        source: FrameSource,
        reader: str,
        *,
        dedup_window_s: float = 2.0,
        max_fps: float | None = 5.0,
        waybill_only: bool = False,
        effort: Effort = "quick",
        decoder: BarcodeDecoder | None = None,
        clock: Callable[[], float] = time.monotonic,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
    ) -> None:
        self.reader = validate_id(reader, "reader")
        if not dedup_window_s >= 0:
            raise ValueError("dedup_window_s must be >= 0")
        if max_fps is not None and not max_fps > 0:
            raise ValueError("max_fps must be positive or None")
        if not 0 < reconnect_initial_s <= reconnect_max_s:
            raise ValueError("need 0 < reconnect_initial_s <= reconnect_max_s")
        self.source = source
        self.stats = CameraStats()
        self.decoder = decoder or BarcodeDecoder(
            waybill_only=waybill_only, max_variants=QUICK_VARIANTS if effort == "quick" else None
        )
        self._window_s = dedup_window_s
        self._period_s = 0.0 if max_fps is None else 1.0 / max_fps
        self._clock = clock
        self._reconnect_initial_s = reconnect_initial_s
        self._reconnect_max_s = reconnect_max_s
        self._lost_delay_s = reconnect_initial_s
        self._last_seen: dict[str, float] = {}
        # A stream that gives a frame or two and drops again is still failing: its faults
        # end (and would be logged again) only after a run of good frames.
        self._faults = FaultLog(
            log, f"camera {self.reader} ({source.name})", clean_streak=GOOD_FRAMES_TO_RECOVER
        )

    @classmethod
    def from_config(
        cls, config: CameraConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> CameraReader:
        """The reader a ``[devices.camera]`` section describes (nothing opened yet)."""
        return cls(
            open_source(config.source),
            config.reader,
            dedup_window_s=config.dedup_window_s,
            max_fps=config.max_fps,
            waybill_only=config.waybill_only,
            effort=config.effort,
            reconnect_max_s=config.reconnect_max_s,
            clock=clock,
        )

    async def scans(self) -> AsyncIterator[ScanBody]:
        """A scan per new code, until a file or folder ends (a live source never does).

        The source is opened on the first iteration and closed when the iterator is
        closed: iterate inside ``contextlib.aclosing(reader.scans())`` so that happens
        at once when the consumer stops early, not when the iterator is collected.
        """
        loop = asyncio.get_running_loop()
        try:
            await self._open()
            while True:
                started = loop.time()
                frame = await self._next_frame()
                if frame is None:
                    if not self.source.live:
                        return
                    continue
                result = await asyncio.to_thread(self.decoder.decode, frame)
                self.stats.frames += 1
                for scan in self._new_scans(result.reads):
                    yield scan
                pause = self._period_s - (loop.time() - started)
                if pause > 0:
                    await asyncio.sleep(pause)
        finally:
            await asyncio.shield(asyncio.to_thread(self.source.close))

    async def _open(self) -> None:
        """Open the source; a live one is retried until it opens."""
        delay = self._reconnect_initial_s
        while True:
            try:
                await asyncio.to_thread(self.source.open)
                return
            except CameraError as exc:
                if not self.source.live:
                    raise
                self._faults.fault("unavailable", f"{exc}; retrying")
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._reconnect_max_s)

    async def _next_frame(self) -> Frame | None:
        """The next frame; a lost live source is reopened first."""
        try:
            frame = await asyncio.to_thread(self.source.read, READ_TIMEOUT_S)
        except SourceLost as exc:
            self._faults.fault("lost", f"{exc}; reconnecting")
            await asyncio.to_thread(self.source.close)
            # Grows while the stream keeps dropping, even if each reopen succeeds.
            await asyncio.sleep(self._lost_delay_s)
            self._lost_delay_s = min(self._lost_delay_s * 2, self._reconnect_max_s)
            await self._open()
            self.stats.reconnects += 1
            return None
        if frame is not None and self._faults.good("unavailable", "lost"):
            log.info("camera %s (%s): frames again", self.reader, self.source.name)
            self._lost_delay_s = self._reconnect_initial_s
        return frame

    def _new_scans(self, reads: tuple[Read, ...]) -> list[ScanBody]:
        now = self._clock()
        self._forget_before(now - self._window_s)
        scans: list[ScanBody] = []
        for read in reads:
            seen = self._last_seen.get(read.text)
            self._last_seen[read.text] = now
            if seen is not None and now - seen < self._window_s:
                self.stats.repeats += 1
                continue
            try:
                scan = ScanBody(reader=self.reader, code=read.text, symbology=read.symbology)
            except ValidationError:
                self.stats.unusable += 1
                self._faults.fault("unusable", "a code that is not printable ASCII was skipped")
                continue
            self.stats.scans += 1
            scans.append(scan)
        return scans

    def _forget_before(self, cutoff: float) -> None:
        """Drop codes out of sight since before ``cutoff``, so memory stays bounded."""
        stale = [code for code, seen in self._last_seen.items() if seen < cutoff]
        for code in stale:
            del self._last_seen[code]
