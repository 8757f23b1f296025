"""Carrying out commands from the ``cmd`` topic, each command id at most once.

:class:`CommandProcessor` turns one payload into one :class:`CommandResultBody`, whatever
the payload holds: a malformed, unknown, late or failing command is an error result, never
an exception, so one bad message cannot stop the agent. The device's handlers (one per
command name it supports) do the work; the factories below make the lock-board and
profile handlers. Error results never quote the payload, and an unexpected exception is
named by its type only, since its text may hold data.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Protocol, TypeVar

from pydantic import BaseModel, JsonValue, ValidationError

from contracts import DoorBody, utc_now
from contracts.commands import (
    Command,
    CommandResultBody,
    OpenSlotArgs,
    QuerySlotsArgs,
    SetProfileArgs,
    command_args,
    command_id_of,
    decode_command,
)
from contracts.errors import ContractError
from contracts.profiles import BUILTIN_LIMITS, Limits
from edge.commandlog import CommandLog, CommandLogError
from edge.errors import EdgeError
from firmware_bridge.errors import BridgeError

logger = logging.getLogger(__name__)

_REASON: Final = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_MAX_ERROR: Final = 500
_A = TypeVar("_A", bound=BaseModel)


class CommandFailed(EdgeError):
    """A handler could not carry out its command; ``reason`` is a short machine word."""

    def __init__(self, reason: str, message: str) -> None:
        if not _REASON.fullmatch(reason):
            raise ValueError(f"reason must look like a command name, not {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message


Handler = Callable[[BaseModel], Awaitable[dict[str, JsonValue]]]
"""Carries out one command, given its validated arguments; returns the result fields."""


@dataclass
class CommandStats:
    processed: int = 0
    """Payloads handled, whatever their outcome."""
    replayed: int = 0
    """Repeats of a known command id, answered from the log."""
    rejected: Counter[str] = field(default_factory=Counter)
    """Error results (not replays) by reason."""


class CommandProcessor:
    """The commands of one device: validation, idempotency through ``log``, dispatch."""

    def __init__(
        self,
        device: str,
        log: CommandLog,
        handlers: Mapping[str, Handler],
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.device = device
        self._log = log
        self._handlers = dict(handlers)
        self._clock = clock
        self.stats = CommandStats()

    async def process(self, payload: bytes) -> CommandResultBody:
        """The outcome of ``payload``; never raises (except when cancelled)."""
        self.stats.processed += 1
        try:
            command = decode_command(payload)
        except ContractError as exc:
            # No readable command, so nothing to record: a repeat fails the same way.
            return self._rejected(_failure(command_id_of(payload), None, exc.reason, str(exc)))
        try:
            replay = await asyncio.to_thread(
                self._log.begin, self.device, command.id, command.command
            )
        except CommandLogError as exc:
            logger.error("%s: command %s not carried out: %s", self.device, command.id, exc)
            return self._rejected(
                _failure(command.id, command.command, "storage", "command log unavailable")
            )
        if replay is not None:
            self.stats.replayed += 1
            return replay
        result = await self._execute(command)
        try:
            await asyncio.to_thread(self._log.finish, self.device, command.id, result)
        except CommandLogError as exc:
            # The command took effect; a repeat will be answered "interrupted", not redone.
            logger.error("%s: outcome of command %s not recorded: %s", self.device, command.id, exc)
        return result if result.ok else self._rejected(result)

    async def _execute(self, command: Command) -> CommandResultBody:
        """Carry out a command the log has let through; every failure becomes a result."""
        if command.expired(self._clock()):
            return _failure(command.id, command.command, "expired", "command arrived too late")
        try:
            args = command_args(command)
        except ContractError as exc:
            return _failure(command.id, command.command, exc.reason, str(exc))
        handler = self._handlers.get(command.command)
        if handler is None:
            return _failure(
                command.id,
                command.command,
                "unsupported",
                f"device {self.device} does not support {command.command}",
            )
        try:
            result = await handler(args)
            return CommandResultBody(
                command_id=command.id, command=command.command, ok=True, result=result
            )
        except CommandFailed as exc:
            return _failure(command.id, command.command, exc.reason, exc.message)
        except Exception as exc:
            # A bug met by this command: name its type only, its text may hold data.
            kind = type(exc).__name__
            logger.error(
                "%s: command %s (%s) failed: %s", self.device, command.id, command.command, kind
            )
            return _failure(command.id, command.command, "internal", kind)

    def _rejected(self, result: CommandResultBody) -> CommandResultBody:
        self.stats.rejected[result.reason or "error"] += 1
        return result


def _failure(
    command_id: str | None, command: str | None, reason: str, message: str
) -> CommandResultBody:
    return CommandResultBody(
        command_id=command_id,
        command=command,
        ok=False,
        error=_clip(message),
        reason=reason,
    )


def _clip(text: str) -> str:
    text = text.strip() or "failed"
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 1] + "…"


def _expect(args: BaseModel, model: type[_A]) -> _A:
    if not isinstance(args, model):
        raise TypeError(f"expected {model.__name__}, got {type(args).__name__}")
    return args


# --- lock boards -----------------------------------------------------------------------------


class SlotBus(Protocol):
    """What the slot handlers need of a lock bus (:class:`firmware_bridge.lockboard.LockBus`)."""

    async def open(self, board: int, lock: int) -> DoorBody: ...

    async def all_status(self, board: int) -> list[DoorBody]: ...


def _slot(body: DoorBody) -> dict[str, JsonValue]:
    return {"lock": body.lock, "door": body.door, "occupied": body.occupied}


def open_slot_handler(bus: SlotBus) -> Handler:
    """``open_slot``: open one slot; the result is its door as read afterwards."""

    async def handle(args: BaseModel) -> dict[str, JsonValue]:
        slot = _expect(args, OpenSlotArgs)
        try:
            body = await bus.open(slot.board, slot.lock)
        except ValueError as exc:  # a board not on this bus, a lock beyond the board's
            raise CommandFailed("unknown_slot", str(exc)) from None
        except BridgeError as exc:  # lock board faults: no personal data in these
            raise CommandFailed("device_error", str(exc)) from None
        return {"board": body.board, **_slot(body)}

    return handle


def query_slots_handler(bus: SlotBus) -> Handler:
    """``query_slots``: every slot of one board, lock 1 first."""

    async def handle(args: BaseModel) -> dict[str, JsonValue]:
        query = _expect(args, QuerySlotsArgs)
        try:
            bodies = await bus.all_status(query.board)
        except ValueError as exc:
            raise CommandFailed("unknown_slot", str(exc)) from None
        except BridgeError as exc:
            raise CommandFailed("device_error", str(exc)) from None
        return {"board": query.board, "slots": [_slot(body) for body in bodies]}

    return handle


# --- probe profiles --------------------------------------------------------------------------


def profile_key(device: str, probe: str) -> str:
    return f"profile/{device}/{probe}"


def set_profile_handler(
    device: str,
    probes: Collection[str],
    log: CommandLog,
    on_change: Callable[[str, Limits], None] | None = None,
) -> Handler:
    """``set_profile``: keep a probe's product profile (persisted in ``log``) and tell
    ``on_change`` its new limits."""
    known = frozenset(probes)

    async def handle(args: BaseModel) -> dict[str, JsonValue]:
        request = _expect(args, SetProfileArgs)
        if request.probe not in known:
            raise CommandFailed("unknown_probe", f"device {device} has no probe {request.probe}")
        limits = BUILTIN_LIMITS.get(request.profile, Limits(request.low_c, request.high_c))
        stored: dict[str, JsonValue] = {
            "profile": request.profile,
            "low_c": limits.low_c,
            "high_c": limits.high_c,
        }
        await asyncio.to_thread(
            log.set_setting, profile_key(device, request.probe), json.dumps(stored)
        )
        if on_change is not None:
            on_change(request.probe, limits)
        return {"probe": request.probe, **stored}

    return handle


def load_profiles(log: CommandLog, device: str) -> dict[str, Limits]:
    """The limits last set for each probe of ``device`` (probes never set are absent)."""
    prefix = profile_key(device, "")
    profiles: dict[str, Limits] = {}
    for key, value in log.settings(prefix).items():
        probe = key[len(prefix) :]
        try:
            stored = _StoredProfile.model_validate_json(value)
        except ValidationError:
            logger.warning("%s: stored profile of probe %s is damaged; ignored", device, probe)
            continue
        profiles[probe] = Limits(stored.low_c, stored.high_c)
    return profiles


class _StoredProfile(BaseModel):
    profile: str
    low_c: float | None
    high_c: float | None
