"""The camera barcode reader on labels made here (python-barcode, qrcode): no wrong reads.

Every decode in this file is checked against the text printed on the label: a result that
differs from it fails the test, whatever else the case checks. Sources are real OpenCV
ones (an image folder, an MJPG video file); only the reconnect test scripts a live
source, since no camera or stream server is at hand.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from contracts import ScanBody
from edge.camera import CameraConfig
from edge.camera.decode import (
    BarcodeDecoder,
    Box,
    DecodeError,
    DecodeResult,
    Read,
    _settle,
    plausible,
    read_zbar,
    read_zxing,
)
from edge.camera.reader import CameraReader
from edge.camera.sources import (
    CameraError,
    CaptureSource,
    Frame,
    ImageFiles,
    SourceLost,
    open_source,
    redact,
)
from edge.workflows import ScanSource
from tests import labels
from tests.helpers import run_async

ROOT = Path(__file__).resolve().parent.parent
WAYBILL = "PE2026112500001"
OTHER = "PE2026112500002"

DECODER = BarcodeDecoder()


def decode(image: labels.Image, truth: str | set[str] | None) -> DecodeResult:
    """Decode ``image``; fail on any read that is not (one of) ``truth``."""
    allowed = {truth} if isinstance(truth, str) else (truth or set())
    result = DECODER.decode(image)
    wrong = [read.text for read in result.reads if read.text not in allowed]
    assert not wrong, f"wrong reads {wrong} (truth {allowed})"
    return result


def texts(result: DecodeResult) -> set[str]:
    return {read.text for read in result.reads}


def code128() -> labels.Image:
    return labels.pad(labels.code128(WAYBILL))


def qr() -> labels.Image:
    return labels.pad(labels.qr(WAYBILL))


READABLE: dict[str, Callable[[], labels.Image]] = {
    "code128 clean": code128,
    "qr clean": qr,
    "code128 turned 90": lambda: labels.rotate(code128(), 90),
    "code128 turned 180": lambda: labels.rotate(code128(), 180),
    "qr turned 90": lambda: labels.rotate(qr(), 90),
    "qr turned 180": lambda: labels.rotate(qr(), 180),
    "code128 skewed 13": lambda: labels.rotate(code128(), 13),
    "code128 skewed -18": lambda: labels.rotate(code128(), -18),
    "code128 skewed 25": lambda: labels.rotate(code128(), 25),
    "qr skewed 20": lambda: labels.rotate(qr(), 20),
    "code128 small 1.2 px": lambda: labels.shrink(code128(), 0.4),
    "code128 small 1.05 px": lambda: labels.shrink(code128(), 0.35),
    "qr small 1.8 px": lambda: labels.shrink(qr(), 0.3),
    "code128 small and skewed": lambda: labels.shrink(labels.rotate(code128(), 15), 0.5),
    "code128 faded": lambda: labels.low_contrast(code128(), 120, 140),
    "qr faded": lambda: labels.low_contrast(qr(), 120, 140),
    "code128 scratched across": lambda: labels.scratch(code128(), top=0.3, bottom=0.6),
    "qr blot within error correction": lambda: labels.blot(qr(), box=(0.5, 0.5, 0.62, 0.62)),
}


@pytest.mark.parametrize("case", list(READABLE))
def test_readable_labels_are_read_exactly(case: str) -> None:
    result = decode(READABLE[case](), WAYBILL)
    assert texts(result) == {WAYBILL}
    assert result.reads[0].symbology == ("qr" if case.startswith("qr") else "code128")
    assert result.ms > 0


@pytest.mark.parametrize(
    ("case", "rescue"),
    [
        ("code128 skewed -18", "rot"),
        ("code128 small 1.2 px", "up"),
        ("code128 small 1.05 px", "up"),
        ("code128 faded", "clahe"),
    ],
)
def test_the_ladder_reads_what_zxing_alone_does_not(case: str, rescue: str) -> None:
    """These cases are hard on purpose: zxing-cpp alone reads nothing in them."""
    image = READABLE[case]()
    assert read_zxing(image) == []
    result = decode(image, WAYBILL)
    assert result.reads[0].variant.startswith(rescue)


UNREADABLE: dict[str, Callable[[], labels.Image]] = {
    "code128 cut by a band": lambda: labels.band(code128(), start=0.3, end=0.4),
    "code128 middle painted over": lambda: labels.band(code128(), start=0.45, end=0.55),
    "qr half painted over": lambda: labels.band(qr(), start=0.2, end=0.5),
    "blank sheet": lambda: labels.blank(240, 320),
    "noise": lambda: labels.noise(240, 320),
    "random bars": lambda: labels.stripes(240, 320),
}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_damaged_labels_and_empty_images_give_no_result(case: str) -> None:
    """A damaged label may be read (rightly) or not at all; these are beyond reading."""
    result = decode(UNREADABLE[case](), WAYBILL)
    assert result.reads == ()
    assert result.attempts > 2  # the whole ladder was tried before giving up


def test_two_labels_in_one_image_are_both_read() -> None:
    sheet = labels.side_by_side(code128(), labels.pad(labels.qr(OTHER)))
    result = decode(sheet, {WAYBILL, OTHER})
    assert {(r.text, r.symbology) for r in result.reads} == {(WAYBILL, "code128"), (OTHER, "qr")}


def test_colour_images_are_read_like_grayscale_ones() -> None:
    colour = cv2.cvtColor(qr(), cv2.COLOR_GRAY2BGR)
    assert texts(decode(colour, WAYBILL)) == {WAYBILL}


def test_waybill_only_drops_codes_that_are_not_waybills() -> None:
    image = labels.side_by_side(
        labels.pad(labels.qr("hello, world")), labels.pad(labels.qr(WAYBILL))
    )
    strict = BarcodeDecoder(waybill_only=True).decode(image)
    assert texts(strict) == {WAYBILL}
    assert strict.rejected == 1
    assert texts(decode(image, {WAYBILL, "hello, world"})) == {WAYBILL, "hello, world"}


def test_zbar_is_the_fallback_and_reads_what_zxing_misses() -> None:
    """A label 0.7 of its printed size has uneven bars zxing-cpp gives up on."""
    image = labels.shrink(code128(), 0.7)
    assert read_zxing(image) == []
    zbar = read_zbar(image)
    assert zbar is not None
    assert [text for text, _, _ in zbar] == [WAYBILL]
    assert texts(decode(image, WAYBILL)) == {WAYBILL}
    only_zxing = BarcodeDecoder(decoders=["zxing-cpp"], max_variants=1).decode(image)
    assert only_zxing.reads == ()


def test_plausible_text() -> None:
    assert plausible("PE-1\nline two", "qr")
    assert not plausible("PE\x07bell", "code128")
    assert not plausible("caf\ufffd", "qr")
    assert not plausible("", "qr")
    assert not plausible("1234", "itf")  # ITF below 6 digits: bars mistaken for a code
    assert not plausible("12345", "itf")  # ITF is digit pairs
    assert plausible("123456", "itf")
    assert plausible("PE-2026-1", "code39", waybill_only=True)
    assert not plausible("PE 2026", "code39", waybill_only=True)


def _read(text: str, symbology: str, decoder: str, variant: str, x: float = 0) -> Read:
    return Read(text, symbology, decoder, variant, Box(x, 0, x + 100, 40))  # type: ignore[arg-type]


def test_reads_that_disagree_at_one_place_cancel_each_other() -> None:
    first = _read("0829220875", "itf", "zxing-cpp", "rot+15-gray")
    second = _read("082922", "itf", "pyzbar", "clahe")
    elsewhere = _read("4012345678901", "ean13", "zxing-cpp", "gray", x=500)
    assert _settle([first, second, elsewhere]) == [elsewhere]


def test_weak_symbologies_need_the_other_decoders_word() -> None:
    by_zbar = _read("0829220875", "itf", "pyzbar", "gray")
    again_by_zbar = _read("0829220875", "itf", "pyzbar", "clahe")
    by_zxing = _read("0829220875", "itf", "zxing-cpp", "up2")
    assert _settle([by_zbar, again_by_zbar]) == []
    assert _settle([by_zxing]) == []  # a variant's ITF read, unconfirmed
    assert _settle([by_zxing, by_zbar]) == [by_zxing]
    assert _settle([_read("0829220875", "itf", "zxing-cpp", "gray")]) != []


def test_zbar_reads_need_a_second_run_even_with_a_check_digit() -> None:
    by_zbar = _read("4012345678901", "ean13", "pyzbar", "gray")
    assert _settle([by_zbar]) == []
    assert _settle([by_zbar, _read("4012345678901", "ean13", "pyzbar", "clahe")]) != []


def test_decode_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match="no such file"):
        DECODER.decode_file(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(DecodeError, match="not an image"):
        DECODER.decode_file(tmp_path / "text.png")


# --- sources and the reader ----------------------------------------------------------


class FrameClock:
    """A fake clock that moves ``step`` seconds each time the reader looks (once a frame)."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return (self.calls - 1) * self.step


def canvas(image: labels.Image | None, height: int = 240, width: int = 680) -> labels.Image:
    """A frame of fixed size (a video needs one) with ``image`` at its top left."""
    frame = np.full((height, width), labels.WHITE, dtype=np.uint8)
    if image is not None:
        frame[: image.shape[0], : image.shape[1]] = image
    return frame


async def collect(reader: CameraReader, count: int | None = None) -> list[ScanBody]:
    scans: list[ScanBody] = []
    async with contextlib.aclosing(reader.scans()) as stream:
        async for scan in stream:
            scans.append(scan)
            if count is not None and len(scans) == count:
                break
    return scans


def test_a_folder_source_gives_one_scan_per_label_shown(tmp_path: Path) -> None:
    """Frames 0.5 s apart: A A A, two empty, A again 2.5 s after it was last seen, then B."""
    a, b = code128(), labels.pad(labels.code128(OTHER))
    frames = [a, a, a, None, None, None, None, a, b]
    for index, image in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"frame-{index:02}.png"), canvas(image))
    (tmp_path / "notes.txt").write_text("not a frame")
    clock = FrameClock(0.5)
    source = open_source(str(tmp_path))
    assert isinstance(source, ImageFiles)
    reader = CameraReader(source, "cam-1", dedup_window_s=2.0, max_fps=None, clock=clock)
    scans = run_async(collect(reader))
    assert [(s.reader, s.code, s.symbology) for s in scans] == [
        ("cam-1", WAYBILL, "code128"),
        ("cam-1", WAYBILL, "code128"),
        ("cam-1", OTHER, "code128"),
    ]
    assert reader.stats.frames == len(frames) == clock.calls
    assert reader.stats.repeats == 2
    assert reader.stats.scans == 3


def test_a_label_held_in_view_stays_one_scan(tmp_path: Path) -> None:
    """The window counts from when the code was last seen, not first seen."""
    for index in range(8):  # 3.5 s of frames, longer than the window, all showing A
        cv2.imwrite(str(tmp_path / f"{index}.png"), canvas(code128()))
    reader = CameraReader(open_source(str(tmp_path)), "cam-1", max_fps=None, clock=FrameClock(0.5))
    assert [s.code for s in run_async(collect(reader))] == [WAYBILL]
    assert reader.stats.repeats == 7


def write_video(path: Path, frames: list[labels.Image | None]) -> None:
    first = canvas(None)
    size = (first.shape[1], first.shape[0])
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, size)
    assert writer.isOpened()
    for image in frames:
        writer.write(cv2.cvtColor(canvas(image), cv2.COLOR_GRAY2BGR))
    writer.release()


def test_a_video_file_source_gives_one_scan_per_window(tmp_path: Path) -> None:
    video = tmp_path / "belt.avi"
    label = labels.pad(labels.qr(WAYBILL, box_px=5))
    write_video(video, [label] * 5 + [None] * 5 + [label] * 3)
    source = open_source(str(video))
    assert isinstance(source, CaptureSource)
    assert not source.live
    reader = CameraReader(source, "cam-2", max_fps=None, effort="quick", clock=FrameClock(0.5))
    scans = run_async(collect(reader))
    assert [(s.code, s.symbology) for s in scans] == [(WAYBILL, "qr"), (WAYBILL, "qr")]
    assert reader.stats.frames == 13
    assert reader.stats.repeats == 6


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_stream_over_http_is_read_and_reopened_when_it_ends(tmp_path: Path) -> None:
    """A real OpenCV/FFmpeg stream with its grabber thread: the served video has one
    frame, so each connection gives one frame and then ends; five scans need reconnects."""
    write_video(tmp_path / "cam.avi", [labels.pad(labels.qr(WAYBILL, box_px=5))])
    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://viewer:secret@127.0.0.1:{server.server_address[1]}/cam.avi"
        source = open_source(url)
        assert source.live
        assert "secret" not in source.name
        reader = CameraReader(
            source, "cam-4", dedup_window_s=0, max_fps=None, reconnect_initial_s=0.01
        )
        scans = run_async(collect(reader, count=5))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert [s.code for s in scans] == [WAYBILL] * 5
    assert reader.stats.reconnects >= 4


def test_codes_that_cannot_be_a_scan_are_skipped(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "1.png"), labels.pad(labels.qr("größe")))
    cv2.imwrite(str(tmp_path / "2.png"), qr())
    reader = CameraReader(open_source(str(tmp_path)), "cam-1", max_fps=None)
    assert [s.code for s in run_async(collect(reader))] == [WAYBILL]
    assert reader.stats.unusable == 1


class ScriptedStream:
    """A live source following a script: 'fail' to open, 'frame', 'lost', then frames."""

    live = True
    name = "rtsp://***@camera/stream"

    def __init__(self, script: list[str], frame: Frame) -> None:
        self.script = list(script)
        self.frame = frame
        self.opened = 0
        self.closed = 0

    def open(self) -> None:
        if self.script and self.script[0] == "fail":
            self.script.pop(0)
            raise CameraError(f"{self.name}: cannot open")
        self.opened += 1

    def read(self, timeout_s: float) -> Frame | None:
        step = self.script.pop(0) if self.script else "frame"
        if step == "lost":
            raise SourceLost(f"{self.name}: stream lost")
        return self.frame if step == "frame" else None

    def close(self) -> None:
        self.closed += 1


def test_a_lost_stream_is_reopened_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    frame = np.asarray(cv2.cvtColor(qr(), cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    stream = ScriptedStream(["fail", "fail", "frame", "lost", "idle", "frame"], frame)
    reader = CameraReader(
        stream, "cam-3", dedup_window_s=0, max_fps=None, reconnect_initial_s=0.001
    )
    scans = run_async(collect(reader, count=2))
    assert [s.code for s in scans] == [WAYBILL, WAYBILL]
    assert stream.opened == 2
    assert stream.closed == 2  # once when lost, once when the iteration ended
    assert reader.stats.reconnects == 1
    unavailable = [r for r in caplog.records if "cannot open" in r.getMessage()]
    assert len(unavailable) == 1  # two failed opens, one line
    assert "***@" in unavailable[0].getMessage()


def test_camera_reader_is_a_scan_source() -> None:
    reader: ScanSource = CameraReader(ImageFiles([], name="none"), "cam-1")
    assert run_async(collect(reader)) == []  # type: ignore[arg-type]


def test_open_source_reads_the_spec(tmp_path: Path) -> None:
    image = tmp_path / "label.png"
    cv2.imwrite(str(image), qr())
    for spec, target in ((0, 0), ("2", 2), ("/dev/video3", 3)):
        source = open_source(spec)
        assert isinstance(source, CaptureSource)
        assert (source.target, source.live) == (target, True)
    stream = open_source("rtsp://admin:secret@10.0.0.5:554/stream1")
    assert stream.live
    assert stream.name == "rtsp://***@10.0.0.5:554/stream1"
    assert redact("http://cam.local/mjpg") == "http://cam.local/mjpg"
    single = open_source(str(image))
    assert isinstance(single, ImageFiles)
    single.open()
    assert single.read(0) is not None
    assert single.read(0) is None
    missing = open_source(str(tmp_path / "missing.avi"))
    assert not missing.live
    with pytest.raises(CameraError):
        missing.open()


def test_camera_config() -> None:
    config = CameraConfig.model_validate({"source": "/dev/video0", "reader": "cam-1"})
    assert (config.dedup_window_s, config.max_fps, config.effort) == (2.0, 5.0, "quick")
    with pytest.raises(ValidationError):
        CameraConfig.model_validate({"source": "0", "reader": "cam-1", "fps": 3})
    with pytest.raises(ValidationError):
        CameraConfig.model_validate({"source": "0", "reader": "bad id!"})
    reader = CameraReader.from_config(config)  # opens nothing
    assert reader.reader == "cam-1"
    assert reader.source.live


# --- the command line and the benchmark ----------------------------------------------


def test_postedge_scan_json_through_the_cli(tmp_path: Path) -> None:
    first, second = tmp_path / "a.png", tmp_path / "b.jpg"
    cv2.imwrite(str(first), labels.rotate(code128(), 90))
    cv2.imwrite(str(second), labels.blank(120, 160))
    done = subprocess.run(
        [sys.executable, "-m", "postedge.cli", "scan", "--json", str(first), str(second)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(first), str(second)]
    assert lines[0]["results"] == [{"text": WAYBILL, "symbology": "code128"}]
    assert lines[1]["results"] == []
    assert all(set(line) == {"file", "results", "ms"} and line["ms"] > 0 for line in lines)

    missing = subprocess.run(
        [sys.executable, "-m", "postedge.cli", "scan", str(first), str(tmp_path / "no.png")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2
    assert "no.png: no such file" in missing.stderr
    assert missing.stdout.startswith(f'{first}: code128 "{WAYBILL}"')


def test_bench_barcodes_on_a_small_manifest(tmp_path: Path) -> None:
    """The benchmark runs and scores: a generated manifest, not ../shared."""
    folder = tmp_path / "labels"
    folder.mkdir()
    cv2.imwrite(str(folder / "1.png"), code128())
    cv2.imwrite(str(folder / "2.png"), labels.rotate(code128(), -18))
    cv2.imwrite(str(folder / "3.png"), labels.blank(100, 100))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "set,file,symbology,expected_text\n"
        f"labels,1.png,CODE_128,{WAYBILL}\n"
        f"labels,2.png,CODE_128,{WAYBILL}\n"
        f"labels,3.png,CODE_128,{OTHER}\n"
    )
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "barcodes.py"), "--manifest", str(manifest),
         "--json", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    chain, zxing = result["contenders"]["chain"], result["contenders"]["zxing-cpp"]
    assert (chain["correct"], chain["missed"], chain["wrong"]) == (2, 1, 0)
    assert (zxing["correct"], zxing["missed"], zxing["wrong"]) == (1, 2, 0)
    assert set(result["contenders"]) == {"chain", "zxing-cpp", "pyzbar"}
