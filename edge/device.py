"""One device at run time: its identity, MQTT link, outbox sender, drivers and commands.

Everything a device produces (readings, scans, door changes, command results) goes
through :meth:`DeviceRuntime.emit`: it takes the next sequence number, commits the
envelope to the station's outbox and wakes the sender. ``emit`` runs on the event loop's
thread only, so each device's messages enter the outbox in sequence order (see
``edge/sender.py`` for why that matters).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from pydantic import BaseModel, JsonValue, ValidationError

from contracts import AnyBody, AnyEnvelope, Channel, DecisionMessage, DeviceTopic
from contracts.telemetry import LinkState
from edge.commandlog import CommandLog
from edge.commands import (
    CommandProcessor,
    Handler,
)
from edge.config import DeviceConfig, StationConfig
from edge.devicework import open_device_work
from edge.errors import EdgeError
from edge.link import DeviceLink
from edge.outbox import Outbox
from edge.sender import Sender
from edge.sequence import SequenceStore
from edge.tasks import run_until
from edge.workflows import Workflow

log = logging.getLogger(__name__)

_COMMAND_QUEUE = 256

StationHandlers = Mapping[str, Callable[[str], Handler]]
"""Handlers the station provides (report_status, reload_config), built per device id."""


class DeviceRuntime:
    """Runs one device until ``stop`` is set: ``await DeviceRuntime(...).run(stop)``."""

    def __init__(
        self,
        config: StationConfig,
        device: DeviceConfig,
        *,
        outbox: Outbox,
        commands: CommandLog,
        station_handlers: StationHandlers,
        on_answered: Callable[[], None] | None = None,
        clerk_terminal: bool = False,
        panel_terminal: bool = False,
    ) -> None:
        self.station = config.station
        self.config = device
        self.id = device.id
        self._station_config = config
        self._outbox = outbox
        self._commands = commands
        self._station_handlers = station_handlers
        self._on_answered = on_answered
        self._clerk_terminal = clerk_terminal
        self._panel_terminal = panel_terminal
        self._link: DeviceLink | None = None
        self._sender: Sender | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(_COMMAND_QUEUE)
        self.emit_failures = 0
        self.commands_dropped = 0
        self.bad_decisions = 0
        self.workflows: list[Workflow] = []

    @property
    def link_state(self) -> LinkState:
        return self._link.state if self._link is not None else "down"

    @property
    def link_failure(self) -> str | None:
        """Why the link is down, while it is."""
        return self._link.last_failure if self._link is not None else None

    @property
    def running(self) -> bool:
        return self._link is not None and self._sender is not None

    def emit(self, body: AnyBody) -> AnyEnvelope | None:
        """Commit one message to the outbox and wake the sender; None if it could not be kept."""
        link, sender = self._link, self._sender
        if link is None or sender is None:
            raise EdgeError(f"device {self.id} is not running")
        envelope = link.envelope(body)
        topic = DeviceTopic(self.station, self.id, envelope.message_channel)
        try:
            self._outbox.add(envelope, str(topic))
        except EdgeError as exc:
            self.emit_failures += 1
            log.error("%s: could not keep message %s: %s", self.id, envelope.id, exc)
            return None
        sender.notify()
        return envelope

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        data_dir = self._station_config.data_dir
        limits = self._station_config.limits
        async with contextlib.AsyncExitStack() as stack:
            sequence = stack.enter_context(SequenceStore(data_dir / f"{self.id}.seq.json"))
            link = DeviceLink(
                station=self.station,
                device=self.id,
                broker=self._station_config.broker,
                password=self.config.secret(),
                cert=_client_cert(self.config),
                sequence=sequence,
                on_message=self._on_message,
                on_connect=lambda: self._sender.on_connect() if self._sender else None,
            )
            sender = Sender(
                self.id,
                self._outbox,
                link,
                inflight=limits.inflight,
                receipt_timeout_s=limits.receipt_timeout_s,
            )
            self._link, self._sender = link, sender
            link.start()
            stack.push_async_callback(asyncio.to_thread, link.stop)
            sender.start()
            stack.push_async_callback(asyncio.to_thread, sender.stop)
            log.info(
                "%s: boot %d, %d probes, %d unconfirmed in the outbox",
                self.id,
                sequence.boot,
                len(self.config.probe_ids()),
                self._outbox.depth(self.id),
            )
            device = await open_device_work(
                self.config,
                stack,
                self.emit,
                data_dir=data_dir,
                commands=self._commands,
                clerk_terminal=self._clerk_terminal,
                panel_terminal=self._panel_terminal,
            )
            handlers = {name: make(self.id) for name, make in self._station_handlers.items()}
            handlers.update(device.handlers)
            processor = CommandProcessor(self.id, self._commands, handlers)
            if device.workflow is not None:
                self.workflows.append(device.workflow)
            work = [self._serve_commands(processor), *(run(stop) for run in device.work)]
            await run_until(stop, work)
            log.info("%s: stopping; sender %s", self.id, sender.stats)

    async def _serve_commands(self, processor: CommandProcessor) -> None:
        while True:
            payload = await self._queue.get()
            result = await processor.process(payload)
            self.emit(result)
            if self._on_answered is not None:
                self._on_answered()

    def _on_message(self, channel: Channel, payload: bytes) -> None:
        """From the link's thread: receipts to the sender, commands and decisions to the
        event loop."""
        if channel == Channel.RECEIPT:
            if self._sender is not None:
                self._sender.on_receipt(payload)
        elif channel == Channel.CMD and self._loop is not None:
            self._loop.call_soon_threadsafe(self._enqueue_command, payload)
        elif channel == Channel.DECISION and self._loop is not None:
            self._loop.call_soon_threadsafe(self._deliver_decision, payload)

    def _deliver_decision(self, payload: bytes) -> None:
        try:
            message = DecisionMessage.model_validate_json(payload)
        except ValidationError:
            self.bad_decisions += 1
            log.warning("%s: ignored a decision that does not parse", self.id)
            return
        for workflow in self.workflows:
            workflow.on_decision(message)

    def _enqueue_command(self, payload: bytes) -> None:
        try:
            self._queue.put_nowait(payload)
        except asyncio.QueueFull:
            self.commands_dropped += 1
            log.warning("%s: %d commands waiting; one dropped", self.id, _COMMAND_QUEUE)


def _client_cert(device: DeviceConfig) -> tuple[Path, Path] | None:
    if device.tls_cert_file is not None and device.tls_key_file is not None:
        return device.tls_cert_file, device.tls_key_file
    return None


def handler_returning(
    function: Callable[[], Awaitable[dict[str, JsonValue]]],
) -> Handler:
    """A command handler that takes no arguments."""

    async def handle(args: BaseModel) -> dict[str, JsonValue]:
        return await function()

    return handle
