"""Barcodes from one image: a chain of decoders over a ladder of preprocessed variants.

zxing-cpp decodes more real-world labels than zbar, is faster and misreads less, so it
goes first, down the whole ladder; pyzbar (zbar) then tries the same variants as the
fallback, because it reads some worn EAN-13 and faded labels zxing-cpp misses. The
ladder runs cheapest and most faithful first and stops at the first variant that gives a
trusted read: the image as it is, more contrast, upscaled (small symbols whose modules
are under ~2 px), turned by ±15° and ±30° (linear decoders give up at ~12° of skew;
90/180/270° need no variant, as both decoders already scan across and in both
directions), sharpened, and binarised.

A misread is worse than no read. Every extra variant is another chance to imagine a code
in bars that are not one, so a read is kept only when it is plausible (printable text;
zbar's in plain ASCII, since zbar guesses QR character sets; ITF of 6 or more digits)
and trusted: zxing-cpp's on the image as it is, or of a symbology with a mandatory check
(Code 128, Code 93, EAN/UPC, the 2-D codes with error correction); any other read needs
the same text again at the same place from another run, and for Code 39, Codabar and ITF
from the *other* decoder, since one decoder on two variants repeats its own mistakes.
Reads at the same place that disagree cancel each other: none is better than a guess.
zbar's one undetectable misread, Code 128 with FNC4 (Latin-1) characters, is read
correctly by zxing-cpp first.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal, NamedTuple

import cv2
import numpy as np
import zxingcpp
from numpy.typing import NDArray
from pydantic import TypeAdapter, ValidationError

from contracts import Symbology
from contracts.events import Waybill
from edge.errors import EdgeError

log = logging.getLogger(__name__)

Image = NDArray[np.uint8]
Decoder = Literal["zxing-cpp", "pyzbar"]
DECODERS: tuple[Decoder, ...] = ("zxing-cpp", "pyzbar")

SURE_SYMBOLOGIES: frozenset[Symbology] = frozenset(
    {"code128", "code93", "ean13", "ean8", "upca", "upce", "qr", "datamatrix", "pdf417", "aztec"}
)
"""Symbologies whose check characters or error correction make a random misread rare.
Code 39, Codabar and ITF carry no mandatory check: their reads need a confirmation
unless zxing-cpp made them from the image as it is."""

_ZXING_SYMBOLOGY: dict[str, Symbology] = {
    "Code128": "code128",
    "Code39": "code39",
    "Code39Std": "code39",
    "Code39Ext": "code39",
    "Code93": "code93",
    "Codabar": "codabar",
    "EAN13": "ean13",
    "EAN8": "ean8",
    "UPCA": "upca",
    "UPCE": "upce",
    "ITF": "itf",
    "ITF14": "itf",
    "QRCode": "qr",
    "QRCodeModel1": "qr",
    "QRCodeModel2": "qr",
    "MicroQRCode": "qr",
    "DataMatrix": "datamatrix",
    "PDF417": "pdf417",
    "CompactPDF417": "pdf417",
    "Aztec": "aztec",
    "AztecCode": "aztec",
}
_ZXING_FORMATS = zxingcpp.barcode_formats_from_str(
    "Code128,Code39,Code93,Codabar,EAN13,EAN8,UPCA,UPCE,ITF,QRCode,MicroQRCode,DataMatrix,"
    "PDF417,Aztec"
)
"""What zxing-cpp looks for: the symbologies a ScanBody can name, and no exotic ones
(MaxiCode, DX film edge, EAN add-ons alone) that only add chances of a misread."""

_ZBAR_SYMBOLOGY: dict[str, Symbology] = {
    "CODE128": "code128",
    "CODE39": "code39",
    "CODE93": "code93",
    "CODABAR": "codabar",
    "EAN13": "ean13",
    "EAN8": "ean8",
    "UPCE": "upce",
    "I25": "itf",
    "QRCODE": "qr",
}
"""What zbar looks for. UPC-A is left out on purpose: zbar then reports it as the EAN-13
it also is (leading 0), the same text zxing-cpp gives."""


class DecodeError(EdgeError):
    """An image could not be read from a file (missing, or not an image)."""


class Box(NamedTuple):
    """Where a symbol is, in the coordinates of the image given to the decoder."""

    x0: float
    y0: float
    x1: float
    y1: float

    def near(self, other: Box) -> bool:
        """Overlapping once each grows by a tenth of its size (linear codes' boxes are
        often a thin scan line, and variants place corners a few pixels apart)."""
        grow_a = max(self.x1 - self.x0, self.y1 - self.y0) / 10 + 3
        grow_b = max(other.x1 - other.x0, other.y1 - other.y0) / 10 + 3
        grow = grow_a + grow_b
        return not (
            self.x1 + grow < other.x0
            or other.x1 + grow < self.x0
            or self.y1 + grow < other.y0
            or other.y1 + grow < self.y0
        )


class Read(NamedTuple):
    """One decoded symbol."""

    text: str
    symbology: Symbology
    decoder: Decoder
    variant: str
    """The preprocessing step that gave it (``gray`` is the image as it is)."""
    box: Box


@dataclass(frozen=True)
class DecodeResult:
    """What the chain found in one image and how long it took."""

    reads: tuple[Read, ...]
    ms: float
    attempts: int
    """Decoder runs, over all variants."""
    rejected: int
    """Texts decoded but not reported: implausible, unconfirmed, or contradicted."""


class Variant(NamedTuple):
    """A preprocessed image and the affine map (2×3) from its pixels to the original's."""

    name: str
    image: Image
    to_source: NDArray[np.float64]
    zbar: bool = True
    """Whether pyzbar tries it too: not the turned ones, which on a busy image cost zbar
    up to four times as long as zxing-cpp."""


_IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


class _Ladder:
    """The preprocessing variants of one grayscale image, made lazily in ladder order.

    Sizes bound the cost: an image with nothing to read goes down the whole ladder, and
    a decoder's time grows with the pixels it is given.
    """

    UPSCALE_2_MAX_SIDE = 1600
    """Upscale ×2 only up to this longest side (a 1600 px frame becomes 3200 px)."""
    UPSCALE_3_MAX_SIDE = 640
    """Upscale ×3 only up to this: a label cropped close, or a thumbnail."""
    ROTATE_UPSCALED_MAX_SIDE = 400
    """Turn and sharpen the ×2 image below this longest side, else the image as it is."""
    SKEW_ANGLES = (15.0, -15.0, 30.0, -30.0)

    def __init__(self, gray: Image) -> None:
        self.gray = gray
        self.longest = max(gray.shape[:2])

    @cached_property
    def _up2(self) -> Variant:
        return _scaled("up2", self.gray, 2)

    def variants(self) -> Iterator[Variant]:
        yield Variant("gray", self.gray, _IDENTITY)
        yield Variant("clahe", _clahe(self.gray), _IDENTITY)
        if self.longest <= self.UPSCALE_2_MAX_SIDE:
            yield self._up2
        base = Variant("gray", self.gray, _IDENTITY)
        if self.longest <= self.ROTATE_UPSCALED_MAX_SIDE:
            base = self._up2
        for angle in self.SKEW_ANGLES:
            yield _rotated(base, angle)
        if self.longest <= self.UPSCALE_3_MAX_SIDE:
            yield _scaled("up3", self.gray, 3)
        blurred = cv2.GaussianBlur(base.image, (0, 0), 2.0)
        sharp = _u8(cv2.addWeighted(base.image, 2.0, blurred, -1.0, 0))  # unsharp mask
        yield Variant(f"sharp-{base.name}", sharp, base.to_source)
        _, binary = cv2.threshold(
            cv2.GaussianBlur(base.image, (3, 3), 0), 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU
        )
        yield Variant(f"otsu-{base.name}", _u8(binary), base.to_source)


def _u8(array: object) -> Image:
    """OpenCV's result as the 8-bit image it is (no copy)."""
    return np.asarray(array, dtype=np.uint8)


def _clahe(gray: Image) -> Image:
    """Contrast stretched to the full range, then equalised locally (CLAHE)."""
    clahe = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8))
    low, high = int(gray.min()), int(gray.max())
    span = max(high - low, 1)
    stretched = _u8(cv2.convertScaleAbs(gray, alpha=255 / span, beta=-low * 255 / span))
    return _u8(clahe.apply(stretched))


def _scaled(name: str, gray: Image, factor: int) -> Variant:
    image = _u8(cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC))
    return Variant(name, image, np.array([[1 / factor, 0.0, 0.0], [0.0, 1 / factor, 0.0]]))


def _rotated(base: Variant, degrees: float) -> Variant:
    """``base`` turned by ``degrees`` on a canvas that holds all of it."""
    h, w = base.image.shape[:2]
    rad = math.radians(degrees)
    new_w = int(abs(w * math.cos(rad)) + abs(h * math.sin(rad))) + 1
    new_h = int(abs(w * math.sin(rad)) + abs(h * math.cos(rad))) + 1
    forward = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    forward[0, 2] += (new_w - w) / 2
    forward[1, 2] += (new_h - h) / 2
    image = cv2.warpAffine(
        base.image, forward, (new_w, new_h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
    )
    back = np.asarray(cv2.invertAffineTransform(forward), dtype=np.float64)
    to_source = _compose(base.to_source, back)
    return Variant(f"rot{degrees:+g}-{base.name}", _u8(image), to_source, zbar=False)


def _compose(outer: NDArray[np.float64], inner: NDArray[np.float64]) -> NDArray[np.float64]:
    """The affine map ``outer ∘ inner`` (apply ``inner`` first)."""
    a = np.vstack([outer, [0.0, 0.0, 1.0]])
    b = np.vstack([inner, [0.0, 0.0, 1.0]])
    return np.asarray((a @ b)[:2], dtype=np.float64)


def _box(points: Sequence[tuple[float, float]], to_source: NDArray[np.float64]) -> Box:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    mapped = pts @ to_source[:, :2].T + to_source[:, 2]
    x0, y0 = mapped.min(axis=0)
    x1, y1 = mapped.max(axis=0)
    return Box(float(x0), float(y0), float(x1), float(y1))


RawRead = tuple[str, Symbology, list[tuple[float, float]]]
"""text, symbology, corner points in the variant's pixels."""


def read_zxing(image: Image) -> list[RawRead]:
    """zxing-cpp alone on one image, as it reads it (its own rotations and inversion)."""
    reads: list[RawRead] = []
    for found in zxingcpp.read_barcodes(image, formats=_ZXING_FORMATS):
        p = found.position
        corners = [p.top_left, p.top_right, p.bottom_right, p.bottom_left]
        symbology = _ZXING_SYMBOLOGY.get(found.format.name, "unknown")
        reads.append((found.text, symbology, [(c.x, c.y) for c in corners]))
    return reads


class _Zbar:
    """pyzbar, loaded on first use: it needs the zbar shared library (Debian libzbar0)."""

    def __init__(self) -> None:
        self._decode: Callable[[Image], list[RawRead]] | None = None
        self._missing = False

    def __call__(self, image: Image) -> list[RawRead] | None:
        """The reads, or None when zbar is not installed (logged once)."""
        if self._decode is None and not self._missing:
            try:
                self._decode = _load_zbar()
            except ImportError as exc:
                self._missing = True
                log.warning("pyzbar fallback disabled: %s (install libzbar0)", exc)
        return None if self._decode is None else self._decode(image)


def _load_zbar() -> Callable[[Image], list[RawRead]]:
    from pyzbar import pyzbar  # type: ignore[import-untyped]

    symbols = [getattr(pyzbar.ZBarSymbol, name) for name in _ZBAR_SYMBOLOGY]

    def decode(image: Image) -> list[RawRead]:
        reads: list[RawRead] = []
        for found in pyzbar.decode(image, symbols=symbols):
            try:
                text = bytes(found.data).decode("ascii")
            except UnicodeDecodeError:
                text = "\ufffd"  # zbar's charset guess may be wrong: implausible, rejected
            symbology = _ZBAR_SYMBOLOGY.get(str(found.type), "unknown")
            points = [(float(p.x), float(p.y)) for p in found.polygon]
            if not points:
                r = found.rect
                points = [(r.left, r.top), (r.left + r.width, r.top + r.height)]
            reads.append((text, symbology, points))
        return reads

    return decode


read_zbar = _Zbar()
"""pyzbar alone on one image; None when zbar is not installed."""


_WAYBILL: TypeAdapter[str] = TypeAdapter(Waybill)


def plausible(text: str, symbology: Symbology, *, waybill_only: bool = False) -> bool:
    """Printable text (line breaks and tabs allowed), or a waybill number if asked.

    ITF encodes digits in pairs and is only used with 6 or more of them; shorter reads
    are bars mistaken for a symbol.
    """
    if not text or "\ufffd" in text:
        return False
    if symbology == "itf" and (len(text) < 6 or len(text) % 2):
        return False
    if waybill_only:
        try:
            _WAYBILL.validate_python(text)
        except ValidationError:
            return False
        return True
    return all(ch.isprintable() or ch in "\n\r\t" for ch in text)


class BarcodeDecoder:
    """Decodes images with the chain; safe to share between threads (no mutable state
    but the lazily loaded zbar binding). The constructor does no I/O."""

    def __init__(
        self,
        *,
        decoders: Sequence[Decoder] = DECODERS,
        waybill_only: bool = False,
        max_variants: int | None = None,
    ) -> None:
        unknown = set(decoders) - set(DECODERS)
        if not decoders or unknown:
            raise ValueError(f"decoders must be a non-empty subset of {DECODERS}")
        if max_variants is not None and max_variants < 1:
            raise ValueError("max_variants must be at least 1")
        self.decoders = tuple(decoders)
        self.waybill_only = waybill_only
        self.max_variants = max_variants

    def decode_file(self, path: Path) -> DecodeResult:
        """Decode an image file; :class:`DecodeError` if it is missing or not an image."""
        if not path.is_file():
            raise DecodeError(f"{path}: no such file")
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise DecodeError(f"{path}: not an image OpenCV can read")
        return self.decode(_u8(image))

    def decode(self, image: NDArray[np.uint8]) -> DecodeResult:
        """The trusted reads in ``image`` (8-bit grayscale or BGR), one per symbol."""
        started = time.perf_counter()
        gray = image if image.ndim == 2 else _u8(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
        gray = np.ascontiguousarray(gray)
        found: list[Read] = []
        attempts = rejected = 0
        accepted: list[Read] = []
        for decoder, variant in self._attempts(gray):
            raw = self._run(decoder, variant.image)
            if raw is None:
                continue
            attempts += 1
            for text, symbology, points in raw:
                if not plausible(text, symbology, waybill_only=self.waybill_only):
                    rejected += 1
                    continue
                box = _box(points, variant.to_source)
                found.append(Read(text, symbology, decoder, variant.name, box))
            accepted = _settle(found)
            if accepted:
                break
        reported = {read.text for read in accepted}
        rejected += len({read.text for read in found} - reported)
        ms = (time.perf_counter() - started) * 1000
        return DecodeResult(tuple(accepted), ms, attempts, rejected)

    def _attempts(self, gray: Image) -> Iterator[tuple[Decoder, Variant]]:
        """zxing-cpp down the whole ladder, then pyzbar: in trials on real labels spoiled
        many ways, taking zbar's read of the image as it is before zxing-cpp's of a
        variant let zbar's misreads in; this order had none."""
        made: list[Variant] = []
        ladder = _Ladder(gray).variants()
        if self.max_variants is not None:
            ladder = itertools.islice(ladder, self.max_variants)
        for index, decoder in enumerate(self.decoders):
            variants = ladder if index == 0 else iter(made)
            for variant in variants:
                if index == 0:
                    made.append(variant)
                if decoder == "pyzbar" and not variant.zbar:
                    continue
                yield decoder, variant

    @staticmethod
    def _run(decoder: Decoder, image: Image) -> list[RawRead] | None:
        return read_zxing(image) if decoder == "zxing-cpp" else read_zbar(image)


def _trusted(read: Read, same_place: list[Read]) -> bool:
    """Sure on its own, or confirmed by another run at the same place (all of which
    have the same text by now). zbar's reads of weak symbologies need zxing-cpp's word,
    and the reverse: runs of one decoder on two variants make the same mistakes."""
    sure = read.symbology in SURE_SYMBOLOGIES
    if read.decoder == "zxing-cpp":
        if sure or read.variant == "gray":
            return True
        return any(other.decoder == "pyzbar" for other in same_place)
    if sure:
        return bool(same_place)
    return any(other.decoder == "zxing-cpp" for other in same_place)


def _settle(found: list[Read]) -> list[Read]:
    """One read per symbol that is trusted and not contradicted.

    Reads of one decoder run are distinct symbols (the decoders merge their own
    repeats); reads of different runs at the same place are the same symbol, so they
    confirm each other when their texts agree and cancel each other when not.
    """
    accepted: list[Read] = []
    for read in found:
        others = [o for o in found if _attempt(o) != _attempt(read) and o.box.near(read.box)]
        if any(o.text != read.text for o in others):
            continue  # two texts for one symbol: prefer none
        if not _trusted(read, others):
            continue
        if not any(a.text == read.text and a.box.near(read.box) for a in accepted):
            accepted.append(read)
    return accepted


def _attempt(read: Read) -> tuple[str, str]:
    return (read.variant, read.decoder)
