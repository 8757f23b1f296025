"""The belt sorter at the edge: every induction the PLC posts gets a divert before the belt
carries the parcel past its chute, whether or not the gateway answers in time.

For each induction the PLC posts (:class:`~firmware_bridge.sorter.driver.SorterPlc`) the
workflow emits an ``induction`` event, waits for the gateway's
:class:`~contracts.SortDecision` (a :class:`~contracts.DecisionMessage` whose ``request``
is the induction's message id) and writes the decided chute to the PLC. The belt does not
wait: the deadline runs from the moment the induction was *read* from the PLC, not from
the publish, and a parcel with no decision by then (a slow gateway, the link down, the
outbox full) goes to the exception chute, with a ``sort_miss`` event saying how long it
waited. A decision arriving after that is counted as late and ignored: the exception
divert is already on its way. The PLC's divert confirmations (diverted, missed,
recirculated) are emitted as ``divert`` events.

Barcodes: the PLC posts either the barcode or the scan slot where a scanning tunnel put
its read. In the second case a ``scanner`` (a tunnel on a serial line, or a camera) sends
telegrams such as ``4;SF1000000001`` (``scan_telegram`` names the slot and the code), and
the induction is published with the code of its slot; without one, or when the slot's
read does not come within ``scan_wait_ms``, it is published with the slot alone (the
gateway then answers with the exception chute, ``unknown_parcel``).

PLC faults are counted and logged once per cause by the driver, which keeps polling;
this workflow only counts the diverts that could not be written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from contracts import DecisionMessage, DivertBody, InductionBody, ScanBody, SortDecision
from contracts.events import Waybill
from contracts.station import SortMissBody
from edge.workflows import DecisionWaiter, Emit, ScanSource
from firmware_bridge.errors import BridgeError
from firmware_bridge.faultlog import FaultLog
from firmware_bridge.sorter.driver import DivertRejected, SorterPlc, Trace
from firmware_bridge.sorter.registers import CommandResult

log = logging.getLogger(__name__)

DEFAULT_SCAN_TELEGRAM = r"^(?P<slot>[0-9]{1,5})[;:,](?P<code>[\x20-\x7e]+)$"
"""A tunnel read as ``slot;code`` (``:`` or ``,`` also separate)."""

_WAYBILL = TypeAdapter(Waybill)
_SCANNER_RETRY_S = 1.0
_CANCEL_RETRY_S = 0.05
_LATE_WINDOW = 1024
"""Requests remembered after their deadline, to tell a late decision from a stray one."""


class SorterWorkflowConfig(BaseModel):
    """``[devices.sorter]``: the PLC, the deadline and the exception chute.

    ``deadline_ms`` is how long the belt gives the gateway, counted from reading the
    induction; it must leave the PLC time to take the divert before the parcel reaches
    the first chute, and it should be well below the PLC's own decision timeout (after
    which it recirculates the parcel and refuses late commands).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65535)
    unit: int = Field(default=1, ge=1, le=247)
    base_address: int = Field(default=0, ge=0, le=0xFFFF)
    poll_interval_ms: int = Field(
        default=20, ge=1, le=1000, description="how often the PLC's mailboxes are read"
    )
    timeout_ms: int = Field(default=500, ge=10, le=10_000, description="one Modbus answer")
    deadline_ms: int = Field(default=300, ge=10, le=60_000)
    exception_chute: int = Field(ge=1, le=0xFFFF)
    scan_wait_ms: int = Field(
        default=50, ge=0, description="how long an induction by scan slot waits for the read"
    )
    scan_max_age_ms: int = Field(
        default=10_000, ge=1, description="a tunnel read older than this is not used"
    )
    scan_telegram: str = Field(
        default=DEFAULT_SCAN_TELEGRAM,
        description="regular expression with the groups 'slot' and 'code'",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if 4 * self.poll_interval_ms > self.deadline_ms:
            raise ValueError("poll_interval_ms must be at most a quarter of deadline_ms")
        if self.scan_wait_ms >= self.deadline_ms:
            raise ValueError("scan_wait_ms must be below deadline_ms")
        try:
            pattern = re.compile(self.scan_telegram)
        except re.error as exc:
            raise ValueError(f"scan_telegram is not a regular expression: {exc}") from None
        if not {"slot", "code"} <= pattern.groupindex.keys():
            raise ValueError("scan_telegram needs the named groups 'slot' and 'code'")
        return self

    def make_plc(self, *, trace: Trace | None = None) -> SorterPlc:
        """The PLC driver these settings describe (no I/O until it is used)."""
        return SorterPlc(
            self.host,
            self.port,
            unit=self.unit,
            base_address=self.base_address,
            poll_interval_s=self.poll_interval_ms / 1000,
            timeout_s=self.timeout_ms / 1000,
            command_timeout_s=max(self.deadline_ms, self.timeout_ms) / 1000,
            trace=trace,
        )


class SorterLink(Protocol):
    """What the workflow needs of the PLC driver (:class:`SorterPlc` is one)."""

    def events(self) -> AsyncIterator[InductionBody | DivertBody]: ...

    async def divert(self, transaction: int, chute: int) -> None: ...


@dataclass
class SorterStats:
    """What the workflow did, for health reports; every counter only grows."""

    inductions: int = 0
    routed: int = 0
    """Diverted to the decided chute within the deadline."""
    deadline_missed: int = 0
    """No decision within the deadline: sent to the exception chute."""
    not_published: int = 0
    """The induction could not be kept in the outbox: exception chute at once."""
    late_decisions: int = 0
    """Decisions that came after their parcel's deadline (ignored)."""
    stray_decisions: int = 0
    """Decisions for no induction waiting here, or not sort decisions (ignored)."""
    mismatched_decisions: int = 0
    """Decisions naming a waiting induction but another transaction (ignored)."""
    divert_failures: int = 0
    """Diverts not written: the PLC unreachable or not answering (it recirculates)."""
    diverts_rejected: int = 0
    """Diverts the PLC refused (too late, unknown transaction, invalid chute)."""
    confirmations: int = 0
    scans: int = 0
    unreadable_scans: int = 0
    """Scanner telegrams that do not match ``scan_telegram``."""
    slots_without_scan: int = 0
    """Inductions by scan slot published without a code: no read for the slot in time."""


@dataclass(frozen=True)
class _Published:
    request: str
    """The induction envelope's id, which its decision names."""
    decision: asyncio.Future[DecisionMessage]


@dataclass(frozen=True)
class _Induction:
    body: InductionBody
    read_at: float
    """``clock()`` when the induction was read from the PLC: the deadline runs from here."""


class SorterWorkflow:
    """One belt sorter: inductions → decisions → diverts, and confirmations.

    ``plc`` is opened (and closed) by the caller; ``scanner`` supplies the reads of a
    scanning tunnel for inductions posted by scan slot. ``clock`` is the monotonic clock
    (seconds) that stamps each induction as it is read; waits run on the event loop's
    clock, so it must run at real speed.
    """

    def __init__(
        self,
        config: SorterWorkflowConfig,
        plc: SorterLink,
        emit: Emit,
        *,
        scanner: ScanSource | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.stats = SorterStats()
        self._plc = plc
        self._emit = emit
        self._scanner = scanner
        self._clock = clock
        self._deadline_s = config.deadline_ms / 1000
        self._decisions = DecisionWaiter()
        self._waiting: dict[str, int] = {}
        """Request id → transaction, for inductions awaiting their decision."""
        self._expired: OrderedDict[str, None] = OrderedDict()
        self._slots = _SlotReads(config.scan_max_age_ms / 1000, clock)
        self._telegram = re.compile(config.scan_telegram)
        self._tasks: set[asyncio.Task[None]] = set()
        self._crashed: asyncio.Future[None] | None = None
        self._scanner_faults = FaultLog(log, "sorter scanner")

    async def run(self, stop: asyncio.Event) -> None:
        """Poll the PLC (and read the scanner) until ``stop``; in-flight parcels are left to
        the PLC (it recirculates a parcel it has no divert for)."""
        self._crashed = asyncio.get_running_loop().create_future()
        workers = [asyncio.create_task(self._take_events(), name="sorter-plc")]
        if self._scanner is not None:
            workers.append(asyncio.create_task(self._take_scans(self._scanner), name="scanner"))
        stopping = asyncio.create_task(stop.wait())
        waiting: set[asyncio.Future[Any]] = {stopping, self._crashed, *workers}
        try:
            while not stopping.done():
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    error = None if task.cancelled() else task.exception()
                    if error is not None:
                        raise error  # a bug, not a device fault: let it be seen
        finally:
            await _cancel([stopping, self._crashed, *workers])  # no new parcels from here
            while self._tasks:
                await _cancel(list(self._tasks))
            self._crashed = None

    def on_decision(self, message: DecisionMessage) -> None:
        """Hand a sort decision to the induction waiting for it; count and drop the rest."""
        request = message.request or ""
        body = message.body
        transaction = self._waiting.get(request)
        if not isinstance(body, SortDecision) or transaction is None:
            if isinstance(body, SortDecision) and request in self._expired:
                self.stats.late_decisions += 1
                log.info(
                    "sorter: decision for transaction %d came after the deadline; ignored",
                    body.transaction,
                )
            else:
                self.stats.stray_decisions += 1
            return
        if body.transaction != transaction:
            self.stats.mismatched_decisions += 1
            log.warning(
                "sorter: decision %s names transaction %d, its induction was %d; ignored",
                message.id, body.transaction, transaction,
            )  # fmt: skip
            return
        self._decisions.deliver(message)

    # --- the PLC side -------------------------------------------------------------------

    async def _take_events(self) -> None:
        # Nothing here awaits between taking an event and asking for the next one, so an
        # induction is stamped, published and awaited as the driver yields it.
        async for event in self._plc.events():
            if isinstance(event, DivertBody):
                self.stats.confirmations += 1
                self._emit(event)
                continue
            self.stats.inductions += 1
            induction = _Induction(event, self._clock())
            if event.barcode is None and self._scanner is not None:
                self._spawn(self._route_by_slot(induction))
            else:
                self._spawn(self._route(induction, self._publish(induction)))

    def _publish(self, induction: _Induction) -> _Published | None:
        """Emit the induction and start waiting for its decision; None if not published."""
        envelope = self._emit(induction.body)
        if envelope is None:
            return None
        decision = self._decisions.expect(envelope.id)  # before any await: may come at once
        self._waiting[envelope.id] = induction.body.transaction
        return _Published(envelope.id, decision)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None and self._crashed is not None and not self._crashed.done():
            self._crashed.set_exception(error)

    async def _route_by_slot(self, induction: _Induction) -> None:
        body = induction.body
        assert body.scan_slot is not None  # an induction names a barcode or a slot
        code = await self._slots.take(body.scan_slot, self.config.scan_wait_ms / 1000)
        if code is None:
            self.stats.slots_without_scan += 1
            log.info("sorter: no scanner read for slot %d in time", body.scan_slot)
        else:
            body = InductionBody(
                transaction=body.transaction, barcode=code, scan_slot=body.scan_slot
            )
            induction = _Induction(body, induction.read_at)
        await self._route(induction, self._publish(induction))

    async def _route(self, induction: _Induction, published: _Published | None) -> None:
        """Divert the parcel to its decided chute, or to the exception chute at the deadline."""
        if published is None:
            self.stats.not_published += 1
            await self._divert_to_exception(induction, None)
            return
        remaining = self._deadline_s - (self._clock() - induction.read_at)
        try:
            message: DecisionMessage | None = await asyncio.wait_for(
                published.decision, max(remaining, 0.0)
            )
        except TimeoutError:
            message = None
            self._remember_expired(published.request)
        finally:
            self._waiting.pop(published.request, None)  # from now on, a decision is late
        if message is None:
            self.stats.deadline_missed += 1
            await self._divert_to_exception(induction, published.request)
            return
        assert isinstance(message.body, SortDecision)  # on_decision delivers only these
        if await self._divert(induction.body.transaction, message.body.chute):
            self.stats.routed += 1

    async def _divert_to_exception(self, induction: _Induction, request: str | None) -> None:
        body = induction.body
        chute = self.config.exception_chute
        waited_ms = round((self._clock() - induction.read_at) * 1000)
        await self._divert(body.transaction, chute)
        waybill = _waybill(body.barcode)
        cause = "no decision" if request is not None else "induction not published"
        log.warning(
            "sorter: transaction %d (waybill %s): %s in %d ms, sent to exception chute %d",
            body.transaction, waybill or "unread", cause, waited_ms, chute,
        )  # fmt: skip
        miss = SortMissBody(
            transaction=body.transaction,
            waybill=waybill,
            chute=chute,
            waited_ms=waited_ms,
            request=request,
        )
        self._emit(miss)

    async def _divert(self, transaction: int, chute: int) -> bool:
        """Write one divert; False (counted, logged) if the PLC did not take it."""
        exception_chute = self.config.exception_chute
        try:
            await self._plc.divert(transaction, chute)
        except DivertRejected as exc:
            self.stats.diverts_rejected += 1
            log.warning("sorter: %s", exc)
            if exc.result is CommandResult.INVALID_CHUTE and chute != exception_chute:
                await self._divert(transaction, exception_chute)  # a chute this belt lacks
            return False
        except BridgeError:
            # The driver logged the cause once; the PLC recirculates the parcel.
            self.stats.divert_failures += 1
            return False
        return True

    def _remember_expired(self, request: str) -> None:
        self._expired[request] = None
        if len(self._expired) > _LATE_WINDOW:
            self._expired.popitem(last=False)

    # --- the scanner side ---------------------------------------------------------------

    async def _take_scans(self, scanner: ScanSource) -> None:
        while True:
            try:
                async for scan in scanner.scans():
                    self._scanner_faults.good()
                    self._take_scan(scan)
                return
            except BridgeError as exc:
                self._scanner_faults.fault("unavailable", f"no reads ({type(exc).__name__})")
                await asyncio.sleep(_SCANNER_RETRY_S)

    def _take_scan(self, scan: ScanBody) -> None:
        self.stats.scans += 1
        match = self._telegram.fullmatch(scan.code)
        slot = int(match["slot"]) if match is not None and match["slot"].isdigit() else -1
        if match is None or not 0 <= slot <= 0xFFFF or not match["code"]:
            self.stats.unreadable_scans += 1
            return
        self._slots.put(slot, match["code"])


class _SlotReads:
    """The latest tunnel read per scan slot, each used once; waiters get theirs as it comes.

    Slots are reused as the belt goes round, so a read older than ``max_age_s`` is not
    matched: a stale code on a parcel is worse than none.
    """

    def __init__(self, max_age_s: float, clock: Callable[[], float]) -> None:
        self._max_age = max_age_s
        self._clock = clock
        self._reads: dict[int, tuple[str, float]] = {}
        self._waiters: dict[int, asyncio.Future[str]] = {}

    def put(self, slot: int, code: str) -> None:
        waiter = self._waiters.pop(slot, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(code)
            return
        self._reads[slot] = (code, self._clock())
        now = self._clock()
        for old in [s for s, (_, at) in self._reads.items() if now - at > self._max_age]:
            del self._reads[old]

    async def take(self, slot: int, wait_s: float) -> str | None:
        """The slot's read, waiting up to ``wait_s`` for it; None if none came."""
        read = self._reads.pop(slot, None)
        if read is not None and self._clock() - read[1] <= self._max_age:
            return read[0]
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[slot] = waiter
        try:
            return await asyncio.wait_for(waiter, wait_s)
        except TimeoutError:
            return None
        finally:
            if self._waiters.get(slot) is waiter:
                del self._waiters[slot]


async def _cancel(tasks: list[asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has ended, cancelling again if need be.

    One cancel is not always enough: Python 3.11's ``asyncio.wait_for`` (which pymodbus
    uses for every request) returns the result and drops the cancellation when the answer
    arrives in the same loop turn, and the driver then polls on.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=_CANCEL_RETRY_S)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: run() raised it already, or it was a bug seen there


def _waybill(barcode: str | None) -> str | None:
    if barcode is None:
        return None
    with contextlib.suppress(ValidationError):
        return _WAYBILL.validate_python(barcode)
    return None
