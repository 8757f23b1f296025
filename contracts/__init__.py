"""The wire contract shared by every side: topics, the envelope, bodies, codec and errors.

This package imports nothing else of the project.
"""

from contracts.codec import MAX_PAYLOAD_BYTES, decode, encode
from contracts.commands import Command, CommandResultBody, UnknownCommand
from contracts.envelope import (
    CHANNEL_OF_KIND,
    SCHEMA_VERSION,
    AnyBody,
    AnyEnvelope,
    CommandResultEnvelope,
    DivertEnvelope,
    DoorEnvelope,
    Envelope,
    HealthEnvelope,
    InductionEnvelope,
    Kind,
    ScanEnvelope,
    StatusEnvelope,
    TemperatureEnvelope,
    XrayEnvelope,
    make_envelope,
    message_id,
)
from contracts.errors import (
    ContractError,
    InvalidId,
    InvalidTopic,
    MalformedPayload,
    PayloadTooLarge,
    SchemaViolation,
)
from contracts.events import (
    DivertBody,
    DoorBody,
    IdentityRead,
    IdType,
    InductionBody,
    ScanBody,
    Symbology,
    XrayBody,
)
from contracts.ids import ID_PATTERN, validate_id
from contracts.receipts import Receipt, seq_ranges
from contracts.telemetry import HealthBody, StatusBody, TemperatureBody
from contracts.timestamps import format_utc_ms, utc_now
from contracts.topics import (
    AlertsTopic,
    Channel,
    DeadLetterTopic,
    DeviceTopic,
    device_filter,
    shared,
)

__all__ = [
    "CHANNEL_OF_KIND",
    "ID_PATTERN",
    "MAX_PAYLOAD_BYTES",
    "SCHEMA_VERSION",
    "AlertsTopic",
    "AnyBody",
    "AnyEnvelope",
    "Channel",
    "Command",
    "CommandResultBody",
    "CommandResultEnvelope",
    "ContractError",
    "DeadLetterTopic",
    "DeviceTopic",
    "DivertBody",
    "DivertEnvelope",
    "DoorBody",
    "DoorEnvelope",
    "Envelope",
    "HealthBody",
    "HealthEnvelope",
    "IdType",
    "IdentityRead",
    "InductionBody",
    "InductionEnvelope",
    "InvalidId",
    "InvalidTopic",
    "Kind",
    "MalformedPayload",
    "PayloadTooLarge",
    "Receipt",
    "ScanBody",
    "ScanEnvelope",
    "SchemaViolation",
    "StatusBody",
    "StatusEnvelope",
    "Symbology",
    "TemperatureBody",
    "TemperatureEnvelope",
    "UnknownCommand",
    "XrayBody",
    "XrayEnvelope",
    "decode",
    "device_filter",
    "encode",
    "format_utc_ms",
    "make_envelope",
    "message_id",
    "seq_ranges",
    "shared",
    "utc_now",
    "validate_id",
]
