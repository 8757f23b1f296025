"""Counter acceptance (收寄验视 + 实名收寄): waybill, sender's ID card, inspection,
destination, then one ``acceptance`` event.

The clerk's terminal (:mod:`edge.clerk`) walks through the steps of
:class:`CounterWorkflow` in order: :meth:`~CounterWorkflow.begin` (a waybill scan, or
:meth:`~CounterWorkflow.enter_waybill` when the label will not scan),
:meth:`~CounterWorkflow.read_id`, optionally :meth:`~CounterWorkflow.set_phone`,
:meth:`~CounterWorkflow.inspect`, :meth:`~CounterWorkflow.destination` and
:meth:`~CounterWorkflow.submit`. Each step checks its own input and raises a
:class:`CounterRefusal` naming the reason (the pieces recorded so far are kept, so the
clerk can correct one step); ``submit`` refuses an acceptance with a piece missing.

Decisions taken here:

- A parcel with refused items (禁寄物品) is not accepted, unless the station sets
  ``accept_refused_items``: then the items are taken out, recorded in the inspection, and
  the rest is accepted.
- An uninspected parcel is refused while ``require_inspection`` holds (the default).
- The document is checked at the counter with the gateway's own rules
  (:mod:`contracts.identity`), and an expired or not yet valid document is refused, so
  a bad card is turned away while the sender is still there. The gateway checks again.
- ``begin`` takes the newest scan waiting (a clerk who rescans means the last label) and
  drops older ones.

The sender's identity is personal data. It lives only in the current acceptance, is
shown masked (张*, 1101**********002X), is never logged, and is dropped on submit,
cancel and every new ``begin``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from contracts import AnyEnvelope, DecisionMessage, IdentityRead, ScanBody
from contracts.errors import ContractError
from contracts.events import IdType, Waybill
from contracts.identity import (
    PROVINCE_CODES,
    InvalidIdentity,
    masked_resident_id,
    parse_document,
    parse_mobile,
    parse_resident_id,
)
from contracts.ids import Identifier, validate_id
from contracts.station import AcceptanceBody, DivisionCode, Inspection
from edge.errors import EdgeError
from edge.workflows import Emit
from firmware_bridge.errors import BridgeError

log = logging.getLogger(__name__)

_STRICT = ConfigDict(extra="forbid", frozen=True)
_WAYBILL: Final = TypeAdapter(Waybill)
_DIVISION: Final = re.compile(r"[0-9]{12}")
_CHINA_TZ: Final = dt.timezone(dt.timedelta(hours=8))
_RECENT_WAYBILLS: Final = 1000


class IdCardConfig(BaseModel):
    """The counter's ID-card reader (or vendor-SDK adapter) on a serial line."""

    model_config = _STRICT

    port: str
    reader: Identifier = "idcard"
    baudrate: int = 115200
    retries: int = Field(default=1, ge=0, le=10)


class CounterConfig(BaseModel):
    """``[devices.counter]``: a station counter where clerks accept parcels.

    ``destinations`` maps what a clerk may type instead of a division code (a place
    name, a postcode) to its 12-digit code; keys match ignoring case and surrounding
    spaces. The waybill scanner is the device's ``scanner``. Example::

        [devices.counter]
        clerk = "clerk-01"
        idcard = { port = "/dev/ttyUSB2", reader = "counter-id" }
        destinations = { "西城区" = "110102000000", "100032" = "110102000000" }
    """

    model_config = _STRICT

    idcard: IdCardConfig
    clerk: Identifier | None = Field(default=None, description="clerk id when none is given")
    destinations: dict[str, DivisionCode] = Field(default_factory=dict)
    require_inspection: bool = True
    accept_refused_items: bool = False
    id_wait_s: float = Field(default=15.0, gt=0, le=300, description="wait for a card")
    id_read_timeout_s: float = Field(default=1.0, gt=0, le=30, description="per read")
    id_poll_s: float = Field(default=0.5, gt=0, le=10, description="between reads, no card")

    @field_validator("destinations")
    @classmethod
    def _keys_distinct(cls, value: dict[str, str]) -> dict[str, str]:
        keys = [_lookup_key(key) for key in value]
        if "" in keys:
            raise ValueError("a destination name is empty")
        if len(set(keys)) != len(keys):
            raise ValueError("two destination names differ only in case or spaces")
        return value


def _lookup_key(text: str) -> str:
    return text.strip().casefold()


class WaybillScanner(Protocol):
    """Where waybills come from: :class:`firmware_bridge.scanner.driver.SerialScanner`."""

    async def next_scan(self, timeout: float | None = None) -> ScanBody: ...


class IdCardSource(Protocol):
    """An ID-card reader: :class:`firmware_bridge.idcard.driver.IdCardReader`."""

    async def read_card(self, timeout: float = 1.0) -> IdentityRead | None: ...


REFUSAL_LABELS: Final[dict[str, tuple[str, str]]] = {
    "no_waybill": ("未扫描运单", "no waybill"),
    "bad_waybill": ("运单号无效", "not a waybill number"),
    "duplicate_waybill": ("运单已收寄", "waybill already accepted"),
    "no_identity": ("未读取身份证件", "no ID read"),
    "id_read_failed": ("读卡失败", "ID-card read failed"),
    "invalid_id": ("证件号码无效", "invalid ID document"),
    "id_expired": ("证件已过期", "ID document expired"),
    "id_not_yet_valid": ("证件尚未生效", "ID document not yet valid"),
    "invalid_phone": ("手机号无效", "invalid mobile number"),
    "no_declared_contents": ("未填写内件品名", "declared contents missing"),
    "bad_inspection": ("验视记录无效", "invalid inspection record"),
    "not_inspected": ("未确认验视", "inspection not confirmed"),
    "refused_items": ("含禁寄物品", "refused items present"),
    "no_inspection": ("未记录验视", "no inspection recorded"),
    "bad_destination": ("目的地无效", "bad destination"),
    "no_destination": ("未填写目的地", "no destination"),
    "no_clerk": ("未填写收寄员", "no clerk id"),
    "not_kept": ("未能保存", "acceptance not stored"),
}
"""Each refusal reason with its short Chinese and English labels, for the clerk."""


class CounterRefusal(EdgeError):
    """The counter will not go on with this parcel as it is: ``reason`` says why.

    The message never holds personal data: document rules are named, never quoted.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.label_zh, self.label_en = REFUSAL_LABELS[reason]
        self.detail = detail
        super().__init__(f"{self.label_en}: {detail}" if detail else self.label_en)


@dataclass(frozen=True)
class MaskedIdentity:
    """What the clerk sees of a sender's document."""

    id_type: IdType
    number: str
    name: str
    valid_until: dt.date | None

    def __str__(self) -> str:
        return f"{self.name} {self.number} ({self.id_type})"


def mask_name(name: str) -> str:
    """First character, then a star for each other one (张*); a one-character name: *."""
    return "*" * len(name) if len(name) <= 1 else name[0] + "*" * (len(name) - 1)


def mask_number(id_type: str, number: str) -> str:
    """Resident IDs keep first and last 4 (1101**********002X); others at most half shown."""
    if id_type == "resident" and len(number) == 18:
        return masked_resident_id(number)
    keep = 2 if len(number) >= 8 else 1
    if len(number) <= 2 * keep:
        return "*" * len(number)
    return f"{number[:keep]}{'*' * (len(number) - 2 * keep)}{number[-keep:]}"


def masked(identity: IdentityRead) -> MaskedIdentity:
    return MaskedIdentity(
        identity.id_type,
        mask_number(identity.id_type, identity.id_number),
        mask_name(identity.name),
        identity.valid_until,
    )


@dataclass
class _Acceptance:
    """The parcel at the counter now; ``sender`` is personal data."""

    waybill: str
    sender: IdentityRead | None = field(default=None, repr=False)
    phone: str | None = field(default=None, repr=False)
    inspection: Inspection | None = None
    destination: str | None = None


@dataclass(frozen=True)
class CounterStatus:
    """The current acceptance as the clerk's screen shows it (masked)."""

    waybill: str | None = None
    sender: MaskedIdentity | None = None
    phone: str | None = None
    inspection: Inspection | None = None
    destination: str | None = None


@dataclass
class CounterStats:
    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    """Refusals by reason."""
    stale_scans: int = 0
    """Older scans dropped by ``begin`` for a newer one."""


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CounterWorkflow:
    """One counter: the steps of an acceptance, for the clerk's terminal to call.

    ``scanner`` and ``idcard`` are opened drivers; ``emit`` commits the acceptance to the
    outbox; ``clock`` (aware UTC) dates document validity. The constructor does no I/O.
    """

    def __init__(
        self,
        config: CounterConfig,
        scanner: WaybillScanner,
        idcard: IdCardSource,
        emit: Emit,
        *,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self.config = config
        self.stats = CounterStats()
        self._scanner = scanner
        self._idcard = idcard
        self._emit = emit
        self._clock = clock
        self._current: _Acceptance | None = None
        self._accepted: OrderedDict[str, None] = OrderedDict()
        self._destinations = {_lookup_key(k): v for k, v in config.destinations.items()}

    # --- Workflow -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Nothing runs on its own at a counter: the clerk's terminal drives the steps."""
        try:
            await stop.wait()
        finally:
            self.cancel()

    def on_decision(self, message: DecisionMessage) -> None:
        log.debug("counter: decision %s ignored (acceptances are not answered)", message.id)

    # --- steps --------------------------------------------------------------------------

    @property
    def status(self) -> CounterStatus:
        current = self._current
        if current is None:
            return CounterStatus()
        sender = None if current.sender is None else masked(current.sender)
        phone = None if current.phone is None else f"{current.phone[:3]}****{current.phone[-4:]}"
        return CounterStatus(
            current.waybill, sender, phone, current.inspection, current.destination
        )

    async def begin(self, timeout: float | None = None) -> str:
        """Start an acceptance with the newest waybill scan, waiting up to ``timeout`` s
        for one if none is waiting (None: as long as it takes)."""
        waybill = await self.begin_if_scanned()
        if waybill is not None:
            return waybill
        try:
            scan = await self._scanner.next_scan(timeout)
        except BridgeError as exc:
            raise self._refuse("no_waybill", str(exc)) from None
        return self.enter_waybill(scan.code)

    async def begin_if_scanned(self) -> str | None:
        """Start an acceptance with the newest scan already waiting; None if none waits.

        The current acceptance ends either way. Cancelling this call may lose a scan
        taken while it looked for newer ones: race it against nothing the clerk needs.
        """
        self.cancel()
        scan = await self._newest_scan()
        return None if scan is None else self.enter_waybill(scan.code)

    def enter_waybill(self, text: str) -> str:
        """Start an acceptance with a waybill number the clerk typed (or scanned)."""
        self.cancel()
        waybill = text.strip()
        try:
            _WAYBILL.validate_python(waybill)
        except ValidationError:
            raise self._refuse("bad_waybill", "4 to 40 letters, digits or '-'") from None
        if waybill in self._accepted:
            raise self._refuse("duplicate_waybill", f"{waybill} was accepted at this counter")
        self._current = _Acceptance(waybill)
        log.info("counter: waybill %s at the counter", waybill)
        return waybill

    async def read_id(self, wait_s: float | None = None) -> MaskedIdentity:
        """Read the sender's document, waiting up to ``wait_s`` (default ``id_wait_s``)
        for a card on the reader; check it and keep it for this acceptance only."""
        current = self._need_waybill()
        current.sender = None  # a new read replaces the last, even when it fails
        identity = await self._read_card(self.config.id_wait_s if wait_s is None else wait_s)
        current.sender = self._checked(identity)
        return masked(current.sender)

    def set_phone(self, text: str) -> str | None:
        """The sender's mainland mobile number (optional; empty clears it), masked."""
        current = self._need_waybill()
        current.phone = None
        if not text.strip():
            return None
        try:
            current.phone = parse_mobile(text.strip())
        except InvalidIdentity:
            raise self._refuse("invalid_phone", "11 digits, 13x to 19x") from None
        return self.status.phone

    def inspect(
        self, declared_contents: str, inspected: bool, refused_items: Sequence[str] = ()
    ) -> Inspection:
        """Record the inspection; refused when not inspected (while required) or when
        refused items were found (unless ``accept_refused_items``)."""
        current = self._need_waybill()
        current.inspection = None
        contents = declared_contents.strip()
        items = [item.strip() for item in refused_items if item.strip()]
        if not contents:
            raise self._refuse("no_declared_contents")
        if not inspected and self.config.require_inspection:
            raise self._refuse("not_inspected", "the parcel must be opened and inspected")
        if items and not self.config.accept_refused_items:
            raise self._refuse("refused_items", "、".join(items))
        try:
            inspection = Inspection(
                inspected=inspected, declared_contents=contents, refused_items=items
            )
        except ValidationError as exc:
            fields = sorted({str(error["loc"][0]) for error in exc.errors()})
            raise self._refuse("bad_inspection", f"too long: {', '.join(fields)}") from None
        current.inspection = inspection
        return inspection

    def destination(self, code_or_name: str) -> str:
        """A 12-digit division code, or a name or postcode from ``destinations``."""
        current = self._need_waybill()
        current.destination = None
        text = code_or_name.strip()
        code = text if _DIVISION.fullmatch(text) else self._destinations.get(_lookup_key(text))
        if code is None:
            raise self._refuse("bad_destination", "not a 12-digit code or a known name")
        if code[:2] not in PROVINCE_CODES:
            raise self._refuse("bad_destination", "no known province code")
        current.destination = code
        return code

    def submit(self, clerk: str | None = None) -> AnyEnvelope:
        """Emit the acceptance and end it; refused when a piece is missing."""
        current = self._need_waybill()
        clerk_id = self._clerk(clerk)
        if current.sender is None:
            raise self._refuse("no_identity", "read the sender's ID card")
        if current.inspection is None:
            raise self._refuse("no_inspection", "record the inspection")
        if current.destination is None:
            raise self._refuse("no_destination", "enter the destination")
        body = AcceptanceBody(
            waybill=current.waybill,
            destination=current.destination,
            sender=current.sender,
            sender_phone=current.phone,
            inspection=current.inspection,
            clerk=clerk_id,
        )
        envelope = self._emit(body)
        if envelope is None:
            raise self._refuse("not_kept", "the outbox did not take it; try again")
        self._remember(current.waybill)
        self.stats.accepted += 1
        log.info("counter: %s accepted by clerk %s as %s", current.waybill, clerk_id, envelope.id)
        self._current = None  # drops the sender's identity
        return envelope

    def cancel(self) -> None:
        """End the current acceptance without publishing; its identity is dropped."""
        if self._current is not None:
            log.info("counter: acceptance of %s cancelled", self._current.waybill)
        self._current = None

    # --- helpers ------------------------------------------------------------------------

    def _refuse(self, reason: str, detail: str = "") -> CounterRefusal:
        refusal = CounterRefusal(reason, detail)
        self.stats.refused[reason] += 1
        waybill = self._current.waybill if self._current is not None else "-"
        log.info("counter: refused (%s) for %s: %s", reason, waybill, refusal)
        return refusal

    def _need_waybill(self) -> _Acceptance:
        if self._current is None:
            raise self._refuse("no_waybill", "scan the waybill first")
        return self._current

    def _clerk(self, clerk: str | None) -> str:
        clerk_id = clerk if clerk is not None else self.config.clerk
        if not clerk_id:
            raise self._refuse("no_clerk")
        try:
            return validate_id(clerk_id, "clerk")
        except ContractError:
            raise self._refuse("no_clerk", "letters, digits, '_' or '-'") from None

    async def _newest_scan(self) -> ScanBody | None:
        """The newest scan already waiting, older ones dropped; None if none waits."""
        newest: ScanBody | None = None
        while True:
            try:
                scan = await self._scanner.next_scan(0)
            except BridgeError:
                return newest
            if newest is not None:
                self.stats.stale_scans += 1
            newest = scan

    async def _read_card(self, wait_s: float) -> IdentityRead:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            try:
                identity = await self._idcard.read_card(self.config.id_read_timeout_s)
            except BridgeError as exc:  # driver messages never hold card data
                raise self._refuse("id_read_failed", str(exc)) from None
            if identity is not None:
                return identity
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise self._refuse("no_identity", f"no card on the reader within {wait_s:g} s")
            await asyncio.sleep(min(self.config.id_poll_s, remaining))

    def _checked(self, identity: IdentityRead) -> IdentityRead:
        """``identity`` with its number canonical, or a refusal naming the failed rule."""
        today = self._clock().astimezone(_CHINA_TZ).date()
        try:
            if identity.id_type == "resident":
                number = parse_resident_id(identity.id_number, today=today).number
            else:
                number = parse_document(identity.id_type, identity.id_number)
        except InvalidIdentity as exc:  # names the rule, never the number
            raise self._refuse("invalid_id", f"rule {exc.rule}: {exc}") from None
        if identity.valid_until is not None and identity.valid_until < today:
            raise self._refuse("id_expired", "its validity period has ended")
        if identity.valid_from > today:
            raise self._refuse("id_not_yet_valid", "its validity period has not begun")
        return identity.model_copy(update={"id_number": number})

    def _remember(self, waybill: str) -> None:
        self._accepted[waybill] = None
        while len(self._accepted) > _RECENT_WAYBILLS:
            self._accepted.popitem(last=False)
