"""What one device does, built from its config: drivers opened, a workflow, the local alarm.

:func:`open_device_work` opens a device's drivers on an exit stack and decides who
consumes them. With a station workflow (counter, locker or sorter) the workflow owns the
scanner and the lock boards and emits their events itself; without one, the device
forwards every scan and door change as an event. Probe readings always go out, and
through the local alarm when the device has one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contracts import AnyBody, DoorAlarmBody, DoorBody, ScanBody, TemperatureBody
from edge.alarm import ProbeAlarm, SysfsGpio, make_output
from edge.clerk import run_clerk_terminal
from edge.commandlog import CommandLog
from edge.commands import (
    Handler,
    SlotBus,
    load_profiles,
    open_slot_handler,
    query_slots_handler,
    set_profile_handler,
)
from edge.config import DeviceConfig
from edge.panel import run_locker_panel
from edge.probes import ProbePoller
from edge.terminal import read_lines
from edge.workflows import Emit, ScanSource, Workflow
from edge.workflows.counter import CounterWorkflow
from edge.workflows.locker import DoorAlarm, LockerWorkflow
from edge.workflows.sorter import SorterWorkflow
from firmware_bridge.errors import DeviceTimeout
from firmware_bridge.idcard.driver import IdCardReader
from firmware_bridge.lockboard.driver import LockBus
from firmware_bridge.scanner.driver import SerialScanner
from firmware_bridge.serial_link import SerialLink

log = logging.getLogger(__name__)

Work = Coroutine[Any, Any, None]


@dataclass
class DeviceWork:
    """The coroutines a device runs, its command handlers and its workflow."""

    work: list[Callable[[Any], Work]] = field(default_factory=list)
    """Each takes the stop event."""
    handlers: dict[str, Handler] = field(default_factory=dict)
    workflow: Workflow | None = None
    alarm: ProbeAlarm | None = None


async def open_device_work(
    config: DeviceConfig,
    stack: contextlib.AsyncExitStack,
    emit: Emit,
    *,
    data_dir: Path,
    commands: CommandLog,
    clerk_terminal: bool = False,
    panel_terminal: bool = False,
) -> DeviceWork:
    """Open ``config``'s drivers on ``stack`` and wire them; nothing runs until the caller
    runs ``work``."""
    result = DeviceWork()
    result.alarm = await _open_alarm(config, commands, stack)
    result.handlers["set_profile"] = set_profile_handler(
        config.id,
        config.probe_ids(),
        commands,
        result.alarm.set_profile if result.alarm is not None else None,
    )
    if config.modbus or config.ds18b20:
        alarm = result.alarm

        def on_reading(body: TemperatureBody) -> None:
            emit(body)
            if alarm is not None:
                alarm.on_reading(body)

        poller = ProbePoller(config.modbus, config.interval_s, on_reading, config.ds18b20)
        result.work.append(poller.run)
    lockbus = await _open_lockboard(config, stack)
    scanner: SerialScanner | QueuedScans | None = await _open_scanner(config, stack)
    if config.camera is not None:
        from edge.camera.reader import CameraReader  # OpenCV only where a camera is used

        camera = QueuedScans(CameraReader.from_config(config.camera))
        result.work.append(camera.run)
        scanner = camera
    result.workflow = await _open_workflow(config, stack, emit, lockbus, scanner, data_dir)
    if lockbus is not None:
        # With a locker workflow, opens go through it: it then expects and times the door.
        slots: SlotBus = lockbus
        if isinstance(result.workflow, LockerWorkflow):
            slots = _WorkflowSlots(result.workflow, lockbus)
        result.handlers["open_slot"] = open_slot_handler(slots)
        result.handlers["query_slots"] = query_slots_handler(slots)
    if result.workflow is not None:
        result.work.append(result.workflow.run)
        if clerk_terminal and isinstance(result.workflow, CounterWorkflow):
            counter = result.workflow
            result.work.append(lambda stop: _clerk(counter))
        if panel_terminal and isinstance(result.workflow, LockerWorkflow):
            locker = result.workflow
            result.work.append(lambda stop: _panel(locker))
    else:
        if lockbus is not None:
            result.work.append(lambda stop: _forward(lockbus.events(), emit))
        if scanner is not None:
            result.work.append(lambda stop: _forward(scanner.scans(), emit))
    return result


async def _open_workflow(
    config: DeviceConfig,
    stack: contextlib.AsyncExitStack,
    emit: Emit,
    lockbus: LockBus | None,
    scanner: SerialScanner | QueuedScans | None,
    data_dir: Path,
) -> Workflow | None:
    if config.counter is not None and scanner is not None:
        card = config.counter.idcard
        link = await stack.enter_async_context(SerialLink(card.port, baudrate=card.baudrate))
        reader = await stack.enter_async_context(
            IdCardReader(link, reader=card.reader, retries=card.retries)
        )
        return CounterWorkflow(config.counter, scanner, reader, emit)
    if config.locker is not None and lockbus is not None:

        def on_alarm(alarm: DoorAlarm) -> None:
            emit(
                DoorAlarmBody(
                    board=alarm.board, lock=alarm.lock, alarm=alarm.alarm, open_s=alarm.seconds
                )
            )

        return LockerWorkflow(
            config.locker,
            lockbus,
            emit,
            scanner=scanner,
            codes_path=data_dir / f"{config.id}.codes.json",
            on_alarm=on_alarm,
        )
    if config.sorter is not None:
        plc = await stack.enter_async_context(config.sorter.make_plc())
        return SorterWorkflow(config.sorter, plc, emit, scanner=scanner)
    return None


async def _open_alarm(
    config: DeviceConfig, commands: CommandLog, stack: contextlib.AsyncExitStack
) -> ProbeAlarm | None:
    if config.alarm is None:
        return None
    output = make_output(config.alarm)
    if isinstance(output, SysfsGpio):
        output.start()
        stack.callback(output.stop)
    return ProbeAlarm(load_profiles(commands, config.id), output)


async def _open_lockboard(config: DeviceConfig, stack: contextlib.AsyncExitStack) -> LockBus | None:
    board = config.lockboard
    if board is None:
        return None
    serial = await stack.enter_async_context(SerialLink(board.port, baudrate=board.baudrate))
    return await stack.enter_async_context(
        LockBus(
            serial,
            boards=board.boards,
            locks_per_board=board.locks_per_board,
            item_sensors=board.item_sensors,
            poll_interval_s=board.poll_interval_s,
        )
    )


async def _open_scanner(
    config: DeviceConfig, stack: contextlib.AsyncExitStack
) -> SerialScanner | None:
    scanner = config.scanner
    if scanner is None:
        return None
    serial = await stack.enter_async_context(SerialLink(scanner.port, baudrate=scanner.baudrate))
    return await stack.enter_async_context(
        SerialScanner(serial, reader=scanner.reader, suffix=scanner.suffix, aim=scanner.aim)
    )


class QueuedScans:
    """A scan source that ends or is read from one place (a camera) made to serve like a
    serial scanner: :meth:`run` drains it into a queue; :meth:`next_scan` and
    :meth:`scans` take from the queue."""

    def __init__(self, source: ScanSource, *, size: int = 100) -> None:
        self._source = source
        self._queue: asyncio.Queue[ScanBody] = asyncio.Queue(size)
        self.dropped = 0

    async def run(self, stop: asyncio.Event) -> None:
        scans = self._source.scans()
        try:
            async for scan in scans:
                if self._queue.full():  # nobody is taking them: keep the newest
                    self._queue.get_nowait()
                    self.dropped += 1
                self._queue.put_nowait(scan)
        finally:
            aclose = getattr(scans, "aclose", None)  # closes the camera's source
            if aclose is not None:
                await aclose()
        await stop.wait()  # a file or folder source ends; the device does not

    async def next_scan(self, timeout: float | None = None) -> ScanBody:
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            raise DeviceTimeout(f"no scan in {timeout:g} s") from None

    async def scans(self) -> AsyncIterator[ScanBody]:
        while True:
            yield await self._queue.get()


async def _forward(events: Any, emit: Callable[[AnyBody], object]) -> None:
    async for body in events:
        emit(body)


async def _clerk(counter: CounterWorkflow) -> None:
    accepted = await run_clerk_terminal(counter, read_lines(sys.stdin), sys.stdout)
    log.info("clerk terminal closed after %d acceptances; the agent carries on", accepted)


async def _panel(locker: LockerWorkflow) -> None:
    completed = await run_locker_panel(locker, read_lines(sys.stdin), sys.stdout)
    log.info("locker panel closed after %d operations; the agent carries on", completed)


class _WorkflowSlots:
    """The slot handlers' bus when a locker workflow runs: opens go through it."""

    def __init__(self, workflow: LockerWorkflow, bus: LockBus) -> None:
        self._workflow = workflow
        self._bus = bus

    async def open(self, board: int, lock: int) -> DoorBody:
        return await self._workflow.open_on_command(board, lock)

    async def all_status(self, board: int) -> list[DoorBody]:
        return await self._bus.all_status(board)
