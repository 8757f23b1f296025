"""The message envelope that wraps every body on the wire.

``id`` is ``{device}:{boot}:{seq}``: unique per device across reboots, so that a
redelivered message is recognisable as the same message everywhere downstream.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, cast

from pydantic import BaseModel, Field, model_validator

from contracts.commands import CommandResultBody
from contracts.events import DivertBody, DoorBody, InductionBody, ScanBody, XrayBody
from contracts.ids import Identifier
from contracts.models import MESSAGE
from contracts.station import (
    AcceptanceBody,
    DepositBody,
    DepositRequestBody,
    DoorAlarmBody,
    PickupBody,
    SortMissBody,
)
from contracts.telemetry import HealthBody, StatusBody, TemperatureBody
from contracts.timestamps import UtcTimestamp
from contracts.topics import Channel

SCHEMA_VERSION: Literal[1] = 1
_MESSAGE_ID = re.compile(
    r"^(?P<device>[A-Za-z0-9_-]{1,64}):(?P<boot>[1-9][0-9]{0,17}):(?P<seq>[0-9]{1,18})$"
)


class Kind(StrEnum):
    TEMPERATURE = "temperature"
    STATUS = "status"
    SCAN = "scan"
    DOOR = "door"
    INDUCTION = "induction"
    DIVERT = "divert"
    XRAY = "xray"
    HEALTH = "health"
    ACCEPTANCE = "acceptance"
    DEPOSIT_REQUEST = "deposit_request"
    DEPOSIT = "deposit"
    PICKUP = "pickup"
    DOOR_ALARM = "door_alarm"
    SORT_MISS = "sort_miss"
    COMMAND_RESULT = "command_result"


CHANNEL_OF_KIND: dict[Kind, Channel] = {
    Kind.TEMPERATURE: Channel.TELEMETRY,
    Kind.STATUS: Channel.STATUS,
    Kind.SCAN: Channel.EVENT,
    Kind.DOOR: Channel.EVENT,
    Kind.INDUCTION: Channel.EVENT,
    Kind.DIVERT: Channel.EVENT,
    Kind.XRAY: Channel.EVENT,
    Kind.HEALTH: Channel.TELEMETRY,
    Kind.ACCEPTANCE: Channel.EVENT,
    Kind.DEPOSIT_REQUEST: Channel.EVENT,
    Kind.DEPOSIT: Channel.EVENT,
    Kind.PICKUP: Channel.EVENT,
    Kind.DOOR_ALARM: Channel.EVENT,
    Kind.SORT_MISS: Channel.EVENT,
    Kind.COMMAND_RESULT: Channel.CMD_RESULT,
}
"""The one channel each kind travels on."""


def message_id(device: str, boot: int, seq: int) -> str:
    return f"{device}:{boot}:{seq}"


class _EnvelopeBase(BaseModel):
    model_config = MESSAGE

    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, alias="schema")
    id: str = Field(max_length=160)
    station: Identifier
    device: Identifier
    ts: UtcTimestamp
    seq: int = Field(ge=0, lt=10**18)

    @model_validator(mode="after")
    def _id_names_device_and_seq(self) -> _EnvelopeBase:
        match = _MESSAGE_ID.fullmatch(self.id)
        if match is None:
            raise ValueError("id must be '{device}:{boot}:{seq}'")
        if match["device"] != self.device or int(match["seq"]) != self.seq:
            raise ValueError("id must name this envelope's device and seq")
        return self

    @property
    def boot(self) -> int:
        """The boot counter of the device when it sent the message (from ``id``)."""
        return int(self.id.split(":")[1])

    @property
    def message_channel(self) -> Channel:
        """The channel this envelope's kind travels on."""
        return CHANNEL_OF_KIND[Kind(getattr(self, "kind"))]  # noqa: B009 - kind is per subclass


class TemperatureEnvelope(_EnvelopeBase):
    kind: Literal["temperature"] = "temperature"
    body: TemperatureBody


class StatusEnvelope(_EnvelopeBase):
    kind: Literal["status"] = "status"
    body: StatusBody


class ScanEnvelope(_EnvelopeBase):
    kind: Literal["scan"] = "scan"
    body: ScanBody


class DoorEnvelope(_EnvelopeBase):
    kind: Literal["door"] = "door"
    body: DoorBody


class InductionEnvelope(_EnvelopeBase):
    kind: Literal["induction"] = "induction"
    body: InductionBody


class DivertEnvelope(_EnvelopeBase):
    kind: Literal["divert"] = "divert"
    body: DivertBody


class XrayEnvelope(_EnvelopeBase):
    kind: Literal["xray"] = "xray"
    body: XrayBody


class HealthEnvelope(_EnvelopeBase):
    kind: Literal["health"] = "health"
    body: HealthBody


class CommandResultEnvelope(_EnvelopeBase):
    kind: Literal["command_result"] = "command_result"
    body: CommandResultBody


class AcceptanceEnvelope(_EnvelopeBase):
    kind: Literal["acceptance"] = "acceptance"
    body: AcceptanceBody


class DepositRequestEnvelope(_EnvelopeBase):
    kind: Literal["deposit_request"] = "deposit_request"
    body: DepositRequestBody


class DepositEnvelope(_EnvelopeBase):
    kind: Literal["deposit"] = "deposit"
    body: DepositBody


class PickupEnvelope(_EnvelopeBase):
    kind: Literal["pickup"] = "pickup"
    body: PickupBody


class DoorAlarmEnvelope(_EnvelopeBase):
    kind: Literal["door_alarm"] = "door_alarm"
    body: DoorAlarmBody


class SortMissEnvelope(_EnvelopeBase):
    kind: Literal["sort_miss"] = "sort_miss"
    body: SortMissBody


AnyEnvelope = (
    TemperatureEnvelope
    | StatusEnvelope
    | ScanEnvelope
    | DoorEnvelope
    | InductionEnvelope
    | DivertEnvelope
    | XrayEnvelope
    | HealthEnvelope
    | CommandResultEnvelope
    | AcceptanceEnvelope
    | DepositRequestEnvelope
    | DepositEnvelope
    | PickupEnvelope
    | DoorAlarmEnvelope
    | SortMissEnvelope
)
Envelope = Annotated[AnyEnvelope, Field(discriminator="kind")]
"""Any envelope, discriminated by ``kind``."""

AnyBody = (
    TemperatureBody
    | StatusBody
    | ScanBody
    | DoorBody
    | InductionBody
    | DivertBody
    | XrayBody
    | HealthBody
    | CommandResultBody
    | AcceptanceBody
    | DepositRequestBody
    | DepositBody
    | PickupBody
    | DoorAlarmBody
    | SortMissBody
)

_ENVELOPE_OF_BODY: dict[type[BaseModel], type[_EnvelopeBase]] = {
    TemperatureBody: TemperatureEnvelope,
    StatusBody: StatusEnvelope,
    ScanBody: ScanEnvelope,
    DoorBody: DoorEnvelope,
    InductionBody: InductionEnvelope,
    DivertBody: DivertEnvelope,
    XrayBody: XrayEnvelope,
    HealthBody: HealthEnvelope,
    CommandResultBody: CommandResultEnvelope,
    AcceptanceBody: AcceptanceEnvelope,
    DepositRequestBody: DepositRequestEnvelope,
    DepositBody: DepositEnvelope,
    PickupBody: PickupEnvelope,
    DoorAlarmBody: DoorAlarmEnvelope,
    SortMissBody: SortMissEnvelope,
}


def make_envelope(
    *,
    station: str,
    device: str,
    boot: int,
    seq: int,
    ts: datetime,
    body: AnyBody,
) -> AnyEnvelope:
    """Build and validate an envelope for ``body``; the kind follows from the body's type."""
    fields = {
        "id": message_id(device, boot, seq),
        "station": station,
        "device": device,
        "ts": ts,
        "seq": seq,
        "body": body,
    }
    envelope_type = _ENVELOPE_OF_BODY[type(body)]  # each body type pairs with one kind
    return cast(AnyEnvelope, envelope_type.model_validate(fields))
