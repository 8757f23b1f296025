"""Bodies of station workflow events (channel ``event``) and the gateway's decisions.

Counter acceptance, locker deposits and pickups are events a station's edge agent
publishes; the gateway answers some of them on the device's ``decision`` topic.

An :class:`AcceptanceBody` carries the sender's identity (personal data) to the gateway,
which validates, encrypts and masks it before anything is stored; its repr and
validation errors never show it. Nothing here logs or prints personal data.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from contracts.events import IdentityRead, Waybill
from contracts.ids import Identifier
from contracts.models import BODY, MESSAGE, PERSONAL
from contracts.timestamps import UtcTimestamp

DivisionCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{12}$")]
"""A 12-digit administrative division code (统计用区划代码): province, city, county,
township, village."""

ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Inspection(BaseModel):
    """The clerk's inspection at acceptance (收寄验视)."""

    model_config = BODY

    inspected: bool
    declared_contents: ShortText
    refused_items: list[ShortText] = Field(default_factory=list, max_length=20)


class AcceptanceBody(BaseModel):
    """A parcel accepted at a station counter: the parcel's ledger entry starts here.

    ``sender`` and ``sender_phone`` are personal data (never in a repr or an error).
    """

    model_config = PERSONAL

    waybill: Waybill
    destination: DivisionCode
    sender: IdentityRead = Field(repr=False)
    sender_phone: str | None = Field(default=None, max_length=20, repr=False)
    inspection: Inspection
    clerk: Identifier


class DepositRequestBody(BaseModel):
    """A locker asks whether it may take a parcel (a sender's send-deposit)."""

    model_config = BODY

    waybill: Waybill
    purpose: Literal["send"] = "send"


class DepositBody(BaseModel):
    """A parcel now lies in a locker slot: door closed, item sensor occupied."""

    model_config = BODY

    waybill: Waybill
    purpose: Literal["delivery", "send"]
    board: int = Field(ge=0, le=255)
    lock: int = Field(ge=1, le=24)
    courier: Identifier | None = None


class PickupBody(BaseModel):
    """A recipient took a parcel out of a locker slot."""

    model_config = BODY

    waybill: Waybill
    board: int = Field(ge=0, le=255)
    lock: int = Field(ge=1, le=24)


class DoorAlarmBody(BaseModel):
    """A locker door that needs someone's attention: left open too long, or opened
    without a command (forced)."""

    model_config = BODY

    board: int = Field(ge=0, le=255)
    lock: int = Field(ge=1, le=24)
    alarm: Literal["left_open", "forced"]
    open_s: float = Field(ge=0, allow_inf_nan=False, description="how long it has been open")


class SortMissBody(BaseModel):
    """A sorter induction diverted to the exception chute at the edge because no decision
    came within the deadline (late, or the link was down)."""

    model_config = BODY

    transaction: int = Field(ge=0, le=0xFFFFFFFF)
    waybill: Waybill | None = None
    chute: int = Field(ge=0, le=0xFFFF)
    waited_ms: int = Field(ge=0)
    request: str | None = Field(default=None, max_length=160, description="the induction's id")


SortReason = Literal[
    "no_realname", "no_xray", "xray_hold", "unknown_destination", "duplicate_induction",
    "unknown_parcel",
]  # fmt: skip
"""Why a parcel goes to the exception chute."""


class SortDecision(BaseModel):
    """The gateway's answer to a sorter induction: a chute, or the exception chute and why."""

    model_config = BODY

    kind: Literal["sort"] = "sort"
    transaction: int = Field(ge=0, le=0xFFFFFFFF)
    waybill: Waybill | None
    chute: int = Field(ge=0, le=0xFFFF)
    reason: SortReason | None = Field(
        default=None, description="None when routed to its destination"
    )


class DepositDecision(BaseModel):
    """The gateway's answer to a send-deposit request."""

    model_config = BODY

    kind: Literal["deposit"] = "deposit"
    waybill: Waybill
    allowed: bool
    reason: Literal["no_realname"] | None = None


PICKUP_CODE_ITERATIONS = 10_000
"""PBKDF2 iterations of a pickup code hash. A locker checks a typed code against every
code it holds (each has its own salt), offline and on a Raspberry-Pi-class CPU: 10,000
iterations take about 2 ms here and some 10 ms there, so a list of 100 codes is checked
in about a second. More would slow every pickup; the hash only keeps a stolen code list
from showing the codes at a glance: six digits cannot resist a determined brute force."""


def pickup_code_hash(code: str, salt_hex: str) -> str:
    """The stored and synced form of a pickup code: hex PBKDF2-HMAC-SHA256 of the code's
    ASCII digits, salted with the 16 bytes ``salt_hex`` names. The gateway stores only
    this; a locker checks a typed code with this same function, offline too."""
    digest = hashlib.pbkdf2_hmac(
        "sha256", code.encode("ascii"), bytes.fromhex(salt_hex), PICKUP_CODE_ITERATIONS
    )
    return digest.hex()


class PickupCode(BaseModel):
    """One parcel's pickup code as a locker keeps it: hashed, never in clear."""

    model_config = BODY

    waybill: Waybill
    board: int = Field(ge=0, le=255)
    lock: int = Field(ge=1, le=24)
    salt: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    code_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    expires: UtcTimestamp | None = None


class PickupCodes(BaseModel):
    """The full list of a locker's valid pickup codes (it replaces the previous one)."""

    model_config = BODY

    kind: Literal["pickup_codes"] = "pickup_codes"
    version: int = Field(ge=1)
    codes: list[PickupCode] = Field(max_length=1000)


class DecisionMessage(BaseModel):
    """What the gateway publishes on a device's ``decision`` topic.

    ``request`` is the message id of the event decided on (absent for a code-list sync).
    """

    model_config = MESSAGE

    schema_version: Literal[1] = Field(default=1, alias="schema")
    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,160}$")]
    ts: UtcTimestamp
    request: str | None = Field(default=None, max_length=160)
    body: Annotated[SortDecision | DepositDecision | PickupCodes, Field(discriminator="kind")]
