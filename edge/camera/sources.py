"""Where frames come from: a V4L2 camera, an RTSP/HTTP stream, a video file, an image folder.

Every call here blocks (OpenCV has no asynchronous API), so the camera reader calls
them in worker threads. A live source (camera or stream) is read by its own grabber
thread from :meth:`FrameSource.open` on, keeping only the newest frame: a decoder slower
than the camera then sees the label in front of it now, not one queued seconds ago in
OpenCV's buffer. Files and folders are read in order, every frame, at the caller's pace.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.errors import EdgeError

log = logging.getLogger(__name__)

Frame = NDArray[np.uint8]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
STREAM_TIMEOUT_MS = 5000
"""How long FFmpeg may take to open a stream or deliver a frame before it gives up."""


class CameraError(EdgeError):
    """A frame source could not be opened or read."""


class SourceLost(CameraError):
    """A live source stopped delivering frames; reopening it may help."""


class FrameSource(Protocol):
    """Frames, one at a time; every method may block."""

    name: str
    """For log lines: never holds a password from a stream URL."""
    live: bool
    """A camera or stream (reconnect when lost) rather than a file or folder (ends)."""

    def open(self) -> None:
        """Start reading; :class:`CameraError` if the source cannot be opened."""
        ...

    def read(self, timeout_s: float) -> Frame | None:
        """The next frame. None: a finite source has ended, or (live) no new frame came
        within ``timeout_s``. :class:`SourceLost` when a live source has failed."""
        ...

    def close(self) -> None:
        """Stop reading and release the device; safe to call twice."""
        ...


def open_source(spec: str | int) -> FrameSource:
    """The frame source ``spec`` names (nothing is opened yet).

    An int, a string of digits or ``/dev/videoN`` is a V4L2 device index; an ``rtsp://``
    or ``http(s)://`` URL a stream; a folder its images in name order; an image file that
    one image; any other file a video.
    """
    if isinstance(spec, int) or spec.isdigit():
        index = int(spec)
        return CaptureSource(index, name=f"camera {index}", live=True)
    device = re.fullmatch(r"/dev/video(\d+)", spec)
    if device:
        return CaptureSource(int(device.group(1)), name=spec, live=True)
    if spec.lower().startswith(STREAM_SCHEMES):
        return CaptureSource(spec, name=redact(spec), live=True)
    path = Path(spec)
    if path.is_dir():
        return ImageFiles.folder(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFiles([path], name=str(path))
    return CaptureSource(str(path), name=str(path), live=False)


def redact(url: str) -> str:
    """``url`` without the user and password a camera URL often carries."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1***@", url)


class ImageFiles:
    """Image files as frames, in the order given; an unreadable file is skipped."""

    live = False

    def __init__(self, paths: list[Path], *, name: str) -> None:
        self.paths = list(paths)
        self.name = name
        self._next = 0
        self._folder: Path | None = None

    @classmethod
    def folder(cls, folder: Path) -> ImageFiles:
        """The images in ``folder`` (listed when opened), in name order."""
        files = cls([], name=str(folder))
        files._folder = folder
        return files

    def open(self) -> None:
        if self._folder is not None:
            if not self._folder.is_dir():
                raise CameraError(f"{self.name}: no such folder")
            self.paths = sorted(
                p for p in self._folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
            )
        self._next = 0

    def read(self, timeout_s: float) -> Frame | None:
        while self._next < len(self.paths):
            path = self.paths[self._next]
            self._next += 1
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is not None:
                return np.asarray(frame, dtype=np.uint8)
            log.warning("%s: %s is not an image OpenCV can read; skipped", self.name, path.name)
        return None

    def close(self) -> None:
        self._next = len(self.paths)


class CaptureSource:
    """An OpenCV ``VideoCapture``: a V4L2 device index, a stream URL or a video file."""

    def __init__(self, target: int | str, *, name: str, live: bool) -> None:
        self.target = target
        self.name = name
        self.live = live
        self._capture: cv2.VideoCapture | None = None
        self._lock = threading.Lock()
        self._fresh = threading.Condition(self._lock)
        self._frame: Frame | None = None
        self._failed = False
        self._stopping = threading.Event()
        self._grabber: threading.Thread | None = None

    def open(self) -> None:
        self.close()
        capture = self._new_capture()
        if not capture.isOpened():
            capture.release()
            raise CameraError(f"{self.name}: cannot open")
        self._capture = capture
        self._frame = None
        self._failed = False
        self._stopping.clear()
        if self.live:
            self._grabber = threading.Thread(
                target=self._grab_forever, name=f"camera {self.name}", daemon=True
            )
            self._grabber.start()

    def _new_capture(self) -> cv2.VideoCapture:
        if isinstance(self.target, int):
            capture = cv2.VideoCapture(self.target, cv2.CAP_V4L2)
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            return capture
        if self.live:
            timeouts = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                STREAM_TIMEOUT_MS,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                STREAM_TIMEOUT_MS,
            ]
            return cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, timeouts)
        return cv2.VideoCapture(self.target)

    def read(self, timeout_s: float) -> Frame | None:
        if not self.live:
            return self._read_file()
        with self._fresh:
            if self._frame is None and not self._failed:
                self._fresh.wait(timeout_s)
            if self._frame is None and self._failed:
                raise SourceLost(f"{self.name}: stream lost")
            frame, self._frame = self._frame, None
            return frame

    def _read_file(self) -> Frame | None:
        with self._lock:
            if self._capture is None:
                return None
            ok, frame = self._capture.read()
        return np.asarray(frame, dtype=np.uint8) if ok else None

    def _grab_forever(self) -> None:
        capture = self._capture
        while capture is not None and not self._stopping.is_set():
            ok, frame = capture.read()
            with self._fresh:
                if ok:
                    self._frame = np.asarray(frame, dtype=np.uint8)
                else:
                    self._failed = True
                self._fresh.notify_all()
            if not ok:
                return

    def close(self) -> None:
        self._stopping.set()
        grabber, self._grabber = self._grabber, None
        if grabber is not None:
            grabber.join()
        with self._lock:
            capture, self._capture = self._capture, None
            self._frame = None
        if capture is not None:
            capture.release()
