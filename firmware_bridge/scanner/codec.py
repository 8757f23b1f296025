"""The serial barcode scanner's wire format: one ASCII line per read.

A scanner in serial mode (RS-232 or USB COM) sends each code it reads as printable ASCII,
optionally prefixed by its AIM symbology identifier (``]C0`` for Code 128, ISO/IEC
15424), and ends it with a configurable suffix (CR, LF, CRLF or TAB). There is no
checksum, so this codec is strict about everything it can check: a line that is empty,
too long, holds a byte outside printable ASCII, or lacks the AIM identifier it should
have is skipped whole, never trimmed into something that looks like a code.

The frame layout is in ``docs/devices/scanner.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

from contracts import Symbology
from firmware_bridge.codec import Decoded

SuffixName = Literal["CR", "LF", "CRLF", "TAB"]
SUFFIXES: dict[SuffixName, bytes] = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n", "TAB": b"\t"}
SUFFIX_NAMES: tuple[SuffixName, ...] = get_args(SuffixName)

MAX_CODE_LENGTH = 512
"""The longest code ``contracts.ScanBody`` accepts."""

AIM_PATTERN = re.compile(r"\][A-Za-z][0-9A-Za-z]")
"""``]`` + symbology character + modifier character (ISO/IEC 15424)."""
_AIM_LENGTH = 3

_SYMBOLOGY_OF_AIM: dict[str, Symbology] = {
    "A": "code39",
    "C": "code128",
    "F": "codabar",
    "G": "code93",
    "I": "itf",
    "L": "pdf417",
    "Q": "qr",
    "d": "datamatrix",
    "z": "aztec",
}
"""AIM symbology characters we can name; the modifier only refines them (GS1, check digit)."""

AIM_OF_SYMBOLOGY: dict[Symbology, str] = {
    "code128": "]C0",
    "code39": "]A0",
    "code93": "]G0",
    "codabar": "]F0",
    "ean13": "]E0",
    "ean8": "]E4",
    "upca": "]E0",
    "upce": "]E0",
    "itf": "]I0",
    "qr": "]Q1",
    "datamatrix": "]d1",
    "pdf417": "]L0",
    "aztec": "]z0",
    "unknown": "]X0",
}
"""The identifier a scanner sends for each symbology (the usual modifier); ``]X0`` is "other"."""


@dataclass(frozen=True)
class ScanLine:
    """One line as the scanner sent it: the code and, if the scanner sends one, its AIM id."""

    code: str
    aim: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not 1 <= len(self.code) <= MAX_CODE_LENGTH:
            raise ValueError(f"a code has 1..{MAX_CODE_LENGTH} characters")
        if not all(" " <= char <= "~" for char in self.code):
            raise ValueError("a code is printable ASCII")
        if self.aim is not None and not AIM_PATTERN.fullmatch(self.aim):
            raise ValueError(f"AIM identifier {self.aim!r} is not ']' + letter + modifier")

    @property
    def symbology(self) -> Symbology:
        return symbology_of(self.aim, self.code)


def symbology_of(aim: str | None, code: str) -> Symbology:
    """The symbology an AIM identifier names; ``unknown`` without one or for one we don't map.

    ``]E0`` covers EAN-13, UPC-A and UPC-E alike (ISO/IEC 15424 sends all three as 13
    digits); scanners set to send UPC codes at their own length are told apart by it.
    """
    if aim is None:
        return "unknown"
    character, modifier = aim[1], aim[2]
    if character != "E":
        return _SYMBOLOGY_OF_AIM.get(character, "unknown")
    if modifier == "4":
        return "ean8"
    if modifier not in "03" or not code.isdigit():
        return "unknown"  # E1/E2: an add-on sent on its own
    if len(code) == 12:
        return "upca"
    if 6 <= len(code) <= 8:
        return "upce"
    return "ean13"


@dataclass(frozen=True)
class ScannerCodec:
    """Encodes and decodes scanner lines for one scanner configuration; pure, no state."""

    suffix: SuffixName = "CR"
    aim: bool = True
    max_length: int = MAX_CODE_LENGTH

    def __post_init__(self) -> None:
        if self.suffix not in SUFFIXES:
            raise ValueError(f"suffix must be one of {SUFFIX_NAMES}, not {self.suffix!r}")
        if not isinstance(self.aim, bool):
            raise TypeError("aim must be a bool")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int):
            raise TypeError("max_length must be an int")
        if not 1 <= self.max_length <= MAX_CODE_LENGTH:
            raise ValueError(f"max_length must be in 1..{MAX_CODE_LENGTH}")

    @property
    def terminator(self) -> bytes:
        return SUFFIXES[self.suffix]

    @property
    def max_line(self) -> int:
        """The longest line on the wire, suffix excluded."""
        return self.max_length + (_AIM_LENGTH if self.aim else 0)

    def encode(self, line: ScanLine) -> bytes:
        """The bytes a scanner with this configuration sends for ``line``."""
        if self.aim != (line.aim is not None):
            raise ValueError("AIM identifier present/absent against the codec's setting")
        if len(line.code) > self.max_length:
            raise ValueError(f"code longer than {self.max_length} characters")
        return ((line.aim or "") + line.code).encode("ascii") + self.terminator

    def decode(self, buffer: bytes) -> Decoded[ScanLine]:
        """The line at the start of ``buffer``, a skip, or need-more; never raises."""
        terminator = self.terminator
        end = buffer.find(terminator)
        if end < 0:
            return self._unterminated(buffer)
        consumed = end + len(terminator)
        if end > self.max_line:
            return Decoded(None, consumed, f"line longer than {self.max_line} characters")
        return self._parse(buffer[:end], consumed)

    def _unterminated(self, buffer: bytes) -> Decoded[ScanLine]:
        # Keep enough of an over-long line to still see it as over-long when its suffix
        # comes; what lies before is dropped now, so memory stays bounded. Dropping it
        # all would let the line's tail pass later as a line of its own.
        keep = self.max_line + len(self.terminator)
        if len(buffer) <= keep:
            return Decoded(None, 0)
        return Decoded(None, len(buffer) - keep, f"line longer than {self.max_line} characters")

    def _parse(self, line: bytes, consumed: int) -> Decoded[ScanLine]:
        if not line:
            return Decoded(None, consumed, "empty line")
        bad = next((byte for byte in line if not 0x20 <= byte <= 0x7E), None)
        if bad is not None:
            return Decoded(None, consumed, f"byte 0x{bad:02x} in a line (noise or wrong suffix?)")
        text = line.decode("ascii")
        if not self.aim:
            return Decoded(ScanLine(text), consumed)
        if not AIM_PATTERN.match(text):
            return Decoded(None, consumed, "line without an AIM symbology identifier")
        if len(text) == _AIM_LENGTH:
            return Decoded(None, consumed, "AIM identifier without a code")
        return Decoded(ScanLine(text[_AIM_LENGTH:], text[:_AIM_LENGTH]), consumed)
