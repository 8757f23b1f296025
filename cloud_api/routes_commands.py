"""Commands to devices (open a locker slot, set a probe's profile), audited."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from sqlalchemy import select

from cloud_api.auth import Principal
from cloud_api.commands import CommandNotSent, expiry
from cloud_api.context import ServicesDep, audit, require, station_in_scope
from cloud_api.schemas import CommandIn, CommandOut, iso
from contracts.commands import Command, command_args
from contracts.errors import ContractError
from gateway.ledger import schema as t

router = APIRouter(prefix="/api/v1", tags=["commands"])

Commander = Annotated[Principal, Depends(require("commands"))]

ALLOWED = {"open_slot": "locker", "set_profile": None}
"""The commands the API sends, and the device role each needs (None: any role with probes)."""


@router.post(
    "/commands",
    response_model=CommandOut,
    status_code=202,
    responses={
        403: {"description": "Role may not send commands, or outside scopes"},
        404: {"description": "No such device at that station"},
        422: {"description": "Unknown command or bad arguments"},
        503: {"description": "No broker configured, or the broker did not acknowledge"},
    },
)
def send_command(body: CommandIn, user: Commander, services: ServicesDep) -> CommandOut:
    """Send ``open_slot`` (``{"board", "lock"}``) to a locker or ``set_profile``
    (``{"probe", "profile", "low_c", "high_c"}``) to a probe's device. Answered once the
    broker has it (202); the device's result arrives on its ``cmd/result`` topic.
    Every command is written to the audit trail, sent or not."""
    station_in_scope(services, user, body.station)
    if body.command not in ALLOWED:
        raise HTTPException(422, f"command {body.command!r}: one of {', '.join(ALLOWED)}")
    with services.ledger.transaction(write=False) as tx:
        role = tx.connection.execute(
            select(t.devices.c.role).where(
                t.devices.c.id == body.device, t.devices.c.station == body.station
            )
        ).scalar_one_or_none()
    if role is None:
        raise HTTPException(404, f"no device {body.device} at station {body.station}")
    needed = ALLOWED[body.command]
    if needed is not None and role != needed:
        raise HTTPException(422, f"{body.command} goes to a {needed}, not a {role}")
    now = services.now()
    command_id = f"api-{now:%Y%m%d%H%M%S}-{secrets.token_hex(4)}"
    try:
        command = Command.model_validate(
            {"id": command_id, "command": body.command, "args": body.args, "ts": now,
             "expires": expiry(now)}
        )  # fmt: skip
        command_args(command)
    except (ContractError, ValueError) as exc:
        raise HTTPException(422, f"bad arguments: {exc}") from None
    details = {"command": body.command, "args": body.args, "id": command_id}
    if services.commands is None:
        audit(services, user, "command_failed", body.device, station=body.station,
              details=details | {"error": "no broker configured"})  # fmt: skip
        raise HTTPException(503, "this API has no [broker] configured for commands")
    try:
        topic = services.commands.send(body.station, body.device, command)
    except CommandNotSent as exc:
        audit(services, user, "command_failed", body.device, station=body.station,
              details=details | {"error": str(exc)})  # fmt: skip
        raise HTTPException(503, str(exc)) from None
    audit(services, user, "command_sent", body.device, station=body.station, details=details)
    return CommandOut(
        id=command_id, command=body.command, topic=topic, expires=iso(command.expires) or ""
    )
