"""Barcode labels for the camera tests, made here so no test needs files from outside.

Labels are grayscale numpy images (white paper, black bars) drawn by python-barcode
(Code 128, ``ImageWriter``) and qrcode, then spoiled the ways a camera spoils them:
turned, shrunk, washed out, partly covered. Every spoiling is deterministic.
"""

from __future__ import annotations

import math

import barcode
import cv2
import numpy as np
import qrcode
from barcode.writer import ImageWriter
from numpy.typing import NDArray

Image = NDArray[np.uint8]

WHITE = 255


def code128(text: str, *, module_px: int = 3, height_px: int = 90) -> Image:
    """A Code 128 symbol of ``text`` with its quiet zones and no human-readable line."""
    dpi = 254  # 10 px per mm, so sizes in px map to whole tenths of a millimetre
    options = {
        "module_width": module_px / 10,
        "module_height": height_px / 10,
        "quiet_zone": module_px,  # mm: 10 modules either side
        "dpi": dpi,
        "write_text": False,
    }
    symbol = barcode.get("code128", text, writer=ImageWriter())
    rendered = symbol.render(writer_options=options)
    return np.asarray(rendered.convert("L"), dtype=np.uint8).copy()


def qr(text: str, *, box_px: int = 6) -> Image:
    """A QR symbol of ``text`` (error correction M) with a four-module quiet zone."""
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=box_px)
    code.add_data(text)
    code.make(fit=True)
    rendered = code.make_image(fill_color="black", back_color="white").get_image()
    return np.asarray(rendered.convert("L"), dtype=np.uint8).copy()


def pad(image: Image, margin: int = 40) -> Image:
    """The label on a white sheet, as a camera sees it with some paper around."""
    return cv2.copyMakeBorder(
        image, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=WHITE
    )


def rotate(image: Image, degrees: float) -> Image:
    """Turned by ``degrees`` counter-clockwise on a white canvas large enough to hold it."""
    if degrees % 90 == 0:
        return np.ascontiguousarray(np.rot90(image, int(degrees // 90) % 4))
    h, w = image.shape[:2]
    rad = math.radians(degrees)
    new_w = int(abs(w * math.cos(rad)) + abs(h * math.sin(rad))) + 2
    new_h = int(abs(w * math.sin(rad)) + abs(h * math.cos(rad))) + 2
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    matrix[0, 2] += (new_w - w) / 2
    matrix[1, 2] += (new_h - h) / 2
    return cv2.warpAffine(image, matrix, (new_w, new_h), flags=cv2.INTER_LINEAR, borderValue=WHITE)


def shrink(image: Image, factor: float) -> Image:
    """Scaled down by ``factor`` (< 1) with area averaging, as a distant label is."""
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def low_contrast(image: Image, dark: int = 110, light: int = 160) -> Image:
    """Black mapped to ``dark`` and white to ``light``: a faded print in dim light."""
    scaled = image.astype(np.float32) / 255.0 * (light - dark) + dark
    return scaled.round().astype(np.uint8)


def band(image: Image, *, start: float, end: float, value: int = 0) -> Image:
    """A vertical band from ``start`` to ``end`` (fractions of the width) painted over."""
    out = image.copy()
    w = image.shape[1]
    out[:, int(w * start) : int(w * end)] = value
    return out


def scratch(image: Image, *, top: float, bottom: float, value: int = WHITE) -> Image:
    """A horizontal band from ``top`` to ``bottom`` (fractions of the height) painted over."""
    out = image.copy()
    h = image.shape[0]
    out[int(h * top) : int(h * bottom), :] = value
    return out


def blot(image: Image, *, box: tuple[float, float, float, float], value: int = 0) -> Image:
    """A rectangle (left, top, right, bottom as fractions of the size) painted over."""
    out = image.copy()
    h, w = image.shape[:2]
    left, top, right, bottom = box
    out[int(h * top) : int(h * bottom), int(w * left) : int(w * right)] = value
    return out


def side_by_side(*images: Image, gap: int = 60) -> Image:
    """Several labels on one white sheet, left to right, tops aligned."""
    height = max(image.shape[0] for image in images)
    width = sum(image.shape[1] for image in images) + gap * (len(images) - 1)
    sheet = np.full((height, width), WHITE, dtype=np.uint8)
    x = 0
    for image in images:
        sheet[: image.shape[0], x : x + image.shape[1]] = image
        x += image.shape[1] + gap
    return sheet


def blank(height: int = 480, width: int = 640, value: int = 200) -> Image:
    """An empty sheet: nothing to read."""
    return np.full((height, width), value, dtype=np.uint8)


def noise(height: int = 480, width: int = 640, seed: int = 6) -> Image:
    """Uniform random pixels: nothing to read, and many chances to imagine something."""
    return np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)


def stripes(height: int = 480, width: int = 640, seed: int = 6) -> Image:
    """Random vertical bars, like a barcode with no valid symbol: a misread trap."""
    widths = np.random.default_rng(seed).integers(1, 9, width)
    columns = np.repeat(np.arange(len(widths)) % 2 * WHITE, widths)[:width].astype(np.uint8)
    return np.tile(columns, (height, 1))
