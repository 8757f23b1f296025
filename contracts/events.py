"""Bodies of device events (channel ``event``), as the device drivers yield them.

Drivers in ``firmware_bridge`` return these types, so the edge agent can publish them
unchanged. Identity reads are personal data: :class:`IdentityRead` is a value the edge
uses at the counter, never published on its own, and its repr and validation errors
never show the name, number or issuing authority.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, model_validator

from contracts.ids import Identifier
from contracts.models import BODY, PERSONAL
from contracts.timestamps import UtcTimestamp

Symbology = Literal[
    "code128", "code39", "code93", "codabar", "ean13", "ean8", "upca", "upce", "itf",
    "qr", "datamatrix", "pdf417", "aztec", "unknown",
]  # fmt: skip
"""Barcode symbologies a reader may report; ``unknown`` when it does not say."""

PrintableText = Annotated[
    str, StringConstraints(min_length=1, max_length=512, pattern=r"^[\x20-\x7e]+$")
]
"""Printable ASCII, as barcode readers send waybill numbers."""

Waybill = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{4,40}$")]
"""A waybill number as printed on a label."""


class ScanBody(BaseModel):
    """One barcode read by a serial scanner or a camera."""

    model_config = BODY

    reader: Identifier
    code: PrintableText
    symbology: Symbology = "unknown"


class DoorBody(BaseModel):
    """A locker slot's door (and item sensor) as a lock board reports it."""

    model_config = BODY

    board: int = Field(ge=0, le=255, description="board address on the RS-485 bus")
    lock: int = Field(ge=1, le=24)
    door: Literal["open", "closed"]
    occupied: bool | None = Field(default=None, description="item sensor; None without one")
    cause: Literal["command", "report", "poll"] = Field(
        description="opened by our command, reported unsolicited by the board, or seen by polling"
    )


class InductionBody(BaseModel):
    """A parcel inducted onto a belt sorter, with its barcode or the slot of its scan."""

    model_config = BODY

    transaction: int = Field(ge=0, le=0xFFFFFFFF)
    barcode: PrintableText | None = None
    scan_slot: int | None = Field(default=None, ge=0, le=0xFFFF)

    @model_validator(mode="after")
    def _names_the_parcel(self) -> InductionBody:
        if self.barcode is None and self.scan_slot is None:
            raise ValueError("an induction needs a barcode or a scan slot")
        return self


class DivertBody(BaseModel):
    """The sorter's confirmation of a divert: where the parcel went."""

    model_config = BODY

    transaction: int = Field(ge=0, le=0xFFFFFFFF)
    chute: int = Field(ge=0, le=0xFFFF)
    outcome: Literal["diverted", "missed", "recirculated"]


class XrayBody(BaseModel):
    """One X-ray security machine record for one parcel."""

    model_config = BODY

    waybill: Waybill
    verdict: Literal["PASS", "SUSPECT", "FAIL"]
    operator: Identifier
    image: Annotated[
        str, StringConstraints(min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$")
    ]
    scanned_at: UtcTimestamp


IdType = Literal[
    "resident", "passport", "hk_macao_permit", "taiwan_permit", "foreign_permanent_residence"
]


class IdentityRead(BaseModel):
    """What an ID-card reader read from a document: personal data.

    Only the format is checked here; the resident ID rules (birth date, check character)
    are the gateway's. Never published alone and never logged.
    """

    model_config = PERSONAL

    name: str = Field(min_length=1, max_length=64, repr=False)
    id_type: IdType
    id_number: str = Field(min_length=5, max_length=32, pattern=r"^[A-Za-z0-9]+$", repr=False)
    authority: str = Field(min_length=1, max_length=128, repr=False)
    valid_from: dt.date
    # Defaults to None: encode() leaves None fields out, and decode() must take them back.
    valid_until: dt.date | None = Field(
        default=None, description="None for a long-term (长期) document"
    )

    @model_validator(mode="after")
    def _valid_period(self) -> IdentityRead:
        if self.valid_until is not None and self.valid_until < self.valid_from:
            raise ValueError("valid_until is before valid_from")
        return self
