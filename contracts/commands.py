"""Commands to a device (``cmd`` topic) and their outcomes (``cmd/result`` topic).

A command is a small JSON object, not an envelope: it comes from the gateway or the API,
not from a device::

    {"schema": 1, "id": "c-20261125-0001", "command": "open_slot",
     "args": {"board": 1, "lock": 3}, "expires": "2026-11-25T10:00:00.000Z"}

``id`` is the command id: the device executes a command id at most once, and answers
the same id again with the first outcome (``replayed: true``). ``expires`` is optional;
a command that arrives after it is refused rather than carried out late.

The outcome travels as an envelope of kind ``command_result``
(:class:`CommandResultBody`), through the device's outbox like every event.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    JsonValue,
    StringConstraints,
    ValidationError,
    model_validator,
)

from contracts.errors import ContractError, MalformedPayload, PayloadTooLarge, SchemaViolation
from contracts.ids import Identifier
from contracts.models import BODY, MESSAGE
from contracts.profiles import ProfileName
from contracts.timestamps import UtcTimestamp

MAX_COMMAND_BYTES = 16 * 1024

CommandId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
CommandName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class UnknownCommand(ContractError):
    """A well-formed command whose name this device does not know."""

    reason = "unknown_command"


class Command(BaseModel):
    model_config = MESSAGE

    schema_version: Literal[1] = Field(default=1, alias="schema")
    id: CommandId
    command: CommandName
    args: dict[str, JsonValue] = Field(default_factory=dict)
    ts: UtcTimestamp | None = None
    expires: UtcTimestamp | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and now > self.expires


class OpenSlotArgs(BaseModel):
    model_config = BODY

    board: int = Field(ge=0, le=255)
    lock: int = Field(ge=1, le=24)


class QuerySlotsArgs(BaseModel):
    model_config = BODY

    board: int = Field(ge=0, le=255)


class SetProfileArgs(BaseModel):
    model_config = BODY

    probe: Identifier
    profile: ProfileName
    low_c: float | None = Field(default=None, allow_inf_nan=False)
    high_c: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _custom_has_limits(self) -> SetProfileArgs:
        if self.profile == "custom":
            if self.low_c is None and self.high_c is None:
                raise ValueError("a custom profile needs low_c, high_c or both")
            if self.low_c is not None and self.high_c is not None and self.low_c > self.high_c:
                raise ValueError("low_c is above high_c")
        elif self.low_c is not None or self.high_c is not None:
            raise ValueError("only a custom profile takes low_c and high_c")
        return self


class NoArgs(BaseModel):
    model_config = BODY


COMMAND_ARGS: dict[str, type[BaseModel]] = {
    "open_slot": OpenSlotArgs,
    "query_slots": QuerySlotsArgs,
    "set_profile": SetProfileArgs,
    "report_status": NoArgs,
    "reload_config": NoArgs,
}
"""Every command a device understands, with the model of its arguments."""


def encode_command(command: Command) -> bytes:
    return command.model_dump_json(by_alias=True, exclude_none=True).encode()


def decode_command(payload: bytes) -> Command:
    """Parse a command; raise :class:`MalformedPayload`, :class:`SchemaViolation` or
    :class:`PayloadTooLarge`. Messages never quote the payload."""
    if len(payload) > MAX_COMMAND_BYTES:
        raise PayloadTooLarge(f"command is {len(payload)} bytes, limit {MAX_COMMAND_BYTES}")
    try:
        return Command.model_validate_json(payload)
    except ValidationError as exc:
        raise _translate("command", exc) from None


def command_id_of(payload: bytes) -> str | None:
    """The command id of a payload that failed to parse, if one can be read safely."""
    if len(payload) > MAX_COMMAND_BYTES:
        return None
    try:
        data: Any = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    candidate = data.get("id") if isinstance(data, dict) else None
    try:
        return Command.model_validate({"id": candidate, "command": "x"}).id
    except ValidationError:
        return None


def command_args(command: Command) -> BaseModel:
    """The validated arguments of ``command``; raise :class:`UnknownCommand` or
    :class:`SchemaViolation`."""
    model = COMMAND_ARGS.get(command.command)
    if model is None:
        raise UnknownCommand(f"unknown command {command.command!r}")
    try:
        return model.model_validate(command.args)
    except ValidationError as exc:
        raise _translate(f"{command.command} args", exc) from None


def _translate(what: str, exc: ValidationError) -> MalformedPayload | SchemaViolation:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    if any(error["type"] in ("json_invalid", "json_type") for error in errors):
        return MalformedPayload(f"{what} is not a UTF-8 JSON object")
    details = "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or '(top)'}: {error['msg']}"
        for error in errors[:3]
    )
    return SchemaViolation(f"{what}: {details}")


ErrorText = Annotated[str, StringConstraints(min_length=1, max_length=500)]


class CommandResultBody(BaseModel):
    """The outcome of one command (envelope kind ``command_result``)."""

    model_config = BODY

    # Defaults to None: encode() leaves None fields out, and decode() must take them back.
    command_id: CommandId | None = Field(
        default=None, description="None when the command had no readable id"
    )
    command: CommandName | None = None
    ok: bool
    error: ErrorText | None = None
    reason: CommandName | None = Field(
        default=None, description="machine-readable error class, e.g. unknown_command"
    )
    result: dict[str, JsonValue] = Field(default_factory=dict)
    replayed: bool = Field(default=False, description="a repeat id: the first outcome again")

    @model_validator(mode="after")
    def _error_iff_failed(self) -> CommandResultBody:
        if self.ok == (self.error is not None):
            raise ValueError("a failed result needs an error, a successful one none")
        return self
