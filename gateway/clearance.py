"""The decision engine: station events applied to the ledger, exactly once, with decisions.

:meth:`Clearance.handle` applies one envelope in one ledger transaction,
:meth:`Clearance.handle_batch` several in one (a savepoint each). A message id
applied before (``processed_messages``) is not applied again: the stored decision is
rebuilt and returned with ``replayed=True`` and no counters, so a redelivered or resent
event has no second effect and the device gets the same answer.

What each kind does (counters in brackets):

- ``acceptance``: the sender's identity is validated, encrypted and masked
  (:meth:`gateway.personal.Keyring.protect`) *before* the transaction; an invalid
  identity or phone raises ``InvalidIdentity`` (reason ``realname``) and nothing is
  written. Then the parcel row, its real-name record and its inspection. A second
  acceptance of a waybill raises :class:`DuplicateAcceptance`. The inspection is a
  recorded coverage fact only: clearance for routing is real-name + X-ray PASS + no hold,
  as the issue defines it. [acceptance.accepted, acceptance.inspected|uninspected]
- ``xray``: the verdict is recorded, also for a waybill the ledger does not know yet (its
  acceptance may reach the ledger later, or come from another station). SUSPECT and FAIL
  open a hold (unless one is open) and raise an ``xray_hold`` alert (warning, critical).
  A later PASS does not release a hold: a supervisor does. [xray.pass|suspect|fail,
  xray.hold]
- ``induction``: a :class:`~contracts.station.SortDecision`. Reasons, first match wins:
  ``unknown_parcel`` (no barcode, or a barcode that is not a waybill: the sorter cannot
  name the parcel), ``duplicate_induction`` (another message already *routed* this
  waybill on this sorter; a parcel sent to the exception chute may be inducted again
  once its problem is fixed), ``no_realname`` (no real-name record, including a waybill
  never accepted or whose acceptance was refused; the facts say which), ``xray_hold``
  (an open hold), ``no_xray`` (its latest verdict is not PASS), ``unknown_destination``
  (no route prefix matches, see :func:`gateway.registry.longest_prefix_route`).
  [sort.routed, sort.exception.<reason>]
- ``sort_miss`` (the edge sent a parcel to the exception chute because no decision came
  in time) and ``divert`` (the sorter's confirmation of where a parcel went: matched to
  the latest induction of its PLC transaction number): a parcel not in the chute it was
  routed to (missed at the edge, ``missed``, ``recirculated``, or diverted to another
  chute) loses its routed mark, so its next induction is decided afresh rather than
  refused as ``duplicate_induction``. [sort.missed_at_edge, sort.divert.<outcome>,
  sort.divert.elsewhere, sort.divert.unmatched]
- ``deposit_request``: allowed iff the parcel has a real-name record.
  [deposit.allowed|refused]
- ``deposit``: purpose ``delivery`` issues a pickup code (see :func:`pickup_code_hash`),
  closes older open codes of that waybill on that locker and of that slot, and sends the
  locker its new code list (:class:`~contracts.station.PickupCodes`, version + 1) in
  ``Outcome.extra``; the clear code is only in ``Outcome.pickup_code``. Purpose ``send``
  records where the parcel lies. [deposit.delivery|send, pickup_code.issued]
- ``pickup``: the waybill's open code on that locker is marked used and the new list
  sent. [pickup.collected|without_code]

Decision ids are ``dec:{request id}``, so a replay publishes an identical message; a code
list is ``codes:{locker}:{version}``. Every decision row stores its reason and the facts
it used (JSON); neither ever holds personal data.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from pydantic import JsonValue

from contracts.alerts import AlertMessage
from contracts.envelope import (
    AcceptanceEnvelope,
    AnyEnvelope,
    DepositEnvelope,
    DepositRequestEnvelope,
    DivertEnvelope,
    InductionEnvelope,
    PickupEnvelope,
    SortMissEnvelope,
    XrayEnvelope,
)
from contracts.errors import ContractError
from contracts.station import (
    DecisionMessage,
    DepositDecision,
    PickupCode,
    PickupCodes,
    SortDecision,
    SortReason,
    pickup_code_hash,
)
from contracts.timestamps import to_utc_ms, utc_now
from gateway.alerts import alert_message
from gateway.ledger import DecisionRow, Ledger, LedgerConflict, LedgerTx, LedgerUnavailable
from gateway.ledger import RealnameRow as _Realname
from gateway.personal import Keyring, ProtectedIdentity, mask_phone
from gateway.registry import Routing, longest_prefix_route

_T = TypeVar("_T")

DEFAULT_CODE_LIFETIME = timedelta(days=7)
_CONFLICT_ATTEMPTS = 5
_WAYBILL = re.compile(r"^[A-Za-z0-9-]{4,40}$")  # contracts.events.Waybill


class DuplicateAcceptance(ContractError):
    """A second acceptance of a waybill the ledger already holds."""

    reason = "duplicate_acceptance"


class UnknownSorter(ContractError):
    """An induction from a device the ledger holds no active sorter routing for."""

    reason = "identity"


@dataclass(frozen=True)
class Outcome:
    """What handling one envelope produced, for the caller to publish and count."""

    decision: DecisionMessage | None
    replayed: bool
    counters: Mapping[str, int]
    pickup_code: str | None = field(default=None, repr=False)
    extra: list[DecisionMessage] = field(default_factory=list)
    alerts: list[AlertMessage] = field(default_factory=list)
    """Alerts raised, for ``postedge/v1/{station}/_alerts``."""


@dataclass(frozen=True)
class _NewCode:
    """A pickup code made before the transaction (hashing takes milliseconds, which
    no transaction should hold its lock for)."""

    code: str = field(repr=False)
    salt: str
    code_hash: str

    @classmethod
    def make(cls) -> _NewCode:
        code = f"{secrets.randbelow(10**6):06d}"
        salt = secrets.token_hex(16)
        return cls(code, salt, pickup_code_hash(code, salt))


@dataclass(frozen=True)
class _Prepared:
    """What an envelope needs computed outside the transaction: pure, no ledger access."""

    realname: _Realname | None = None
    code: _NewCode | None = None


@dataclass(frozen=True)
class _Applied:
    outcome: Outcome
    decision_id: str | None = None


@dataclass(frozen=True)
class _Sort:
    reason: SortReason | None
    chute: int
    facts: dict[str, Any]


class Clearance:
    """The decision engine over a :class:`~gateway.ledger.Ledger` (which must be open)."""

    def __init__(
        self,
        ledger: Ledger,
        keyring: Keyring,
        *,
        clock: Callable[[], datetime] = utc_now,
        code_lifetime: timedelta | None = DEFAULT_CODE_LIFETIME,
    ) -> None:
        self._ledger = ledger
        self._keyring = keyring
        self._clock = clock
        self._code_lifetime = code_lifetime
        self._routings: dict[str, Routing] = {}
        self._routings_version = -1

    def handle(self, envelope: AnyEnvelope) -> Outcome:
        """Apply ``envelope`` once (see the module docstring); kinds with no ledger effect
        (scans, doors, telemetry, ...) give an empty outcome and are not recorded.

        Raises a ``ContractError`` for input the ledger refuses, ``LedgerUnavailable``
        when the database cannot be reached (retry later).
        """
        prepared = self._prepare(envelope)
        return self._in_transaction(
            lambda tx: self._handle(tx, envelope, prepared), f"message {envelope.id}"
        )

    def handle_batch(self, envelopes: Sequence[AnyEnvelope]) -> list[Outcome | ContractError]:
        """:meth:`handle` for each of ``envelopes`` in order, in ONE transaction (one commit,
        one fsync: a group commit), each message in a savepoint of its own: a message the
        ledger refuses is rolled back alone and its ``ContractError`` takes its place in the
        result. Publish the outcomes only after this returns (they are committed then).

        A conflict with another writer retries the whole batch; ``LedgerUnavailable``
        means none of it was applied.
        """
        if not envelopes:
            return []
        if len(envelopes) == 1:  # the usual case at a steady rate: no savepoint needed
            try:
                return [self.handle(envelopes[0])]
            except ContractError as exc:  # raised out of the transaction: rolled back
                return [exc]
        prepared: list[_Prepared | ContractError] = []
        for envelope in envelopes:
            try:
                prepared.append(self._prepare(envelope))
            except ContractError as exc:
                prepared.append(exc)
        return self._in_transaction(
            lambda tx: [
                self._handle_one(tx, e, p) for e, p in zip(envelopes, prepared, strict=True)
            ],
            f"{len(envelopes)} messages",
        )

    def _in_transaction(self, work: Callable[[LedgerTx], _T], what: str) -> _T:
        """``work`` in one ledger transaction, again from the start when another gateway
        process wrote the same rows first (it then finds what that process did)."""
        for _ in range(_CONFLICT_ATTEMPTS):
            try:
                with self._ledger.transaction() as tx:
                    return work(tx)
            except LedgerConflict:
                continue
        raise LedgerUnavailable(f"{what}: conflicting writers, retry later")

    def _handle_one(
        self, tx: LedgerTx, envelope: AnyEnvelope, prepared: _Prepared | ContractError
    ) -> Outcome | ContractError:
        if isinstance(prepared, ContractError):
            return prepared
        try:
            with tx.savepoint():
                return self._handle(tx, envelope, prepared)
        except ContractError as exc:
            return exc

    def _routing(self, tx: LedgerTx, sorter: str) -> Routing | None:
        """The sorter's routing, cached: it changes only when the registry is synced
        (:attr:`Ledger.registry_version`). An unknown sorter is looked up every time."""
        if self._routings_version != self._ledger.registry_version:
            self._routings.clear()
            self._routings_version = self._ledger.registry_version
        routing = self._routings.get(sorter)
        if routing is None:
            routing = tx.sorter_routing(sorter)
            if routing is not None:
                self._routings[sorter] = routing
        return routing

    def _prepare(self, envelope: AnyEnvelope) -> _Prepared:
        """Validate and encrypt an acceptance's identity (raising ``InvalidIdentity``, so
        nothing is written), or make a delivery's pickup code."""
        if isinstance(envelope, AcceptanceEnvelope):
            return _Prepared(realname=_protect(self._keyring, envelope))
        if isinstance(envelope, DepositEnvelope) and envelope.body.purpose == "delivery":
            return _Prepared(code=_NewCode.make())
        return _Prepared()

    def _handle(self, tx: LedgerTx, envelope: AnyEnvelope, prepared: _Prepared) -> Outcome:
        now = to_utc_ms(self._clock())
        done = tx.processed(envelope.id)
        if done is not None:
            return self._replay(tx, envelope, done.decision_id, now)
        if isinstance(envelope, AcceptanceEnvelope) and prepared.realname is not None:
            applied = _accept(tx, envelope, prepared.realname)
        elif isinstance(envelope, XrayEnvelope):
            applied = _xray(tx, envelope, now)
        elif isinstance(envelope, InductionEnvelope):
            applied = _induct(tx, envelope, self._routing(tx, envelope.device), now)
        elif isinstance(envelope, DepositRequestEnvelope):
            applied = _deposit_request(tx, envelope, now)
        elif isinstance(envelope, DepositEnvelope):
            applied = self._deposit(tx, envelope, prepared.code, now)
        elif isinstance(envelope, PickupEnvelope):
            applied = _pickup(tx, envelope, now)
        elif isinstance(envelope, SortMissEnvelope):
            applied = _sort_miss(tx, envelope)
        elif isinstance(envelope, DivertEnvelope):
            applied = _divert(tx, envelope)
        else:
            return Outcome(decision=None, replayed=False, counters={})
        tx.mark_processed(envelope.id, envelope.kind, now, applied.decision_id)
        return applied.outcome

    def _replay(
        self, tx: LedgerTx, envelope: AnyEnvelope, decision_id: str | None, now: datetime
    ) -> Outcome:
        stored = None if decision_id is None else tx.decision(decision_id)
        message = None
        if stored is not None and stored.body is not None:
            message = DecisionMessage.model_validate(
                {"id": stored.id, "ts": stored.decided_at, "request": stored.request,
                 "body": dict(stored.body)},
                strict=False,
            )  # fmt: skip
        extra = []
        if isinstance(envelope, DepositEnvelope | PickupEnvelope):
            # The locker may have missed the list: send the current one again, same version.
            version = tx.code_list_version(envelope.device)
            extra = [] if version is None else [_code_list(tx, envelope.device, version, now)]
        return Outcome(decision=message, replayed=True, counters={}, extra=extra)

    def _deposit(
        self, tx: LedgerTx, envelope: DepositEnvelope, new: _NewCode | None, now: datetime
    ) -> _Applied:
        body = envelope.body
        tx.set_location(
            waybill=body.waybill,
            station=envelope.station,
            device=envelope.device,
            board=body.board,
            lock=body.lock,
            purpose=body.purpose,
            since=now,
        )
        if new is None:  # purpose "send"
            return _Applied(Outcome(decision=None, replayed=False, counters={"deposit.send": 1}))
        superseded = tx.close_codes(
            device=envelope.device, waybill=body.waybill, at=now, closed="superseded"
        ) + tx.close_slot_codes(
            device=envelope.device, board=body.board, lock=body.lock, at=now, closed="superseded"
        )
        expires = None if self._code_lifetime is None else now + self._code_lifetime
        tx.add_pickup_code(
            waybill=body.waybill,
            station=envelope.station,
            device=envelope.device,
            board=body.board,
            lock=body.lock,
            salt=new.salt,
            code_hash=new.code_hash,
            issued_at=now,
            expires_at=expires,
        )
        codes = _code_list(tx, envelope.device, tx.next_code_list_version(envelope.device), now)
        facts = {"purpose": "delivery", "board": body.board, "lock": body.lock,
                 "superseded": superseded, "code_list": codes.id}  # fmt: skip
        decision_id = _record(
            tx, envelope, body.waybill, "pickup_code", "issued", None, facts, None, now
        )
        counters = {"deposit.delivery": 1, "pickup_code.issued": 1}
        outcome = Outcome(None, False, counters, pickup_code=new.code, extra=[codes])
        return _Applied(outcome, decision_id)


def _protect(keyring: Keyring, envelope: AcceptanceEnvelope) -> _Realname:
    """An acceptance's identity, validated, encrypted and masked (pure: no ledger access)."""
    identity: ProtectedIdentity = keyring.protect(envelope.body.sender)
    phone = envelope.body.sender_phone
    return _Realname(**asdict(identity), masked_phone=None if phone is None else mask_phone(phone))


def _accept(tx: LedgerTx, envelope: AcceptanceEnvelope, realname: _Realname) -> _Applied:
    body = envelope.body
    if tx.parcel(body.waybill) is not None:
        raise DuplicateAcceptance(f"waybill {body.waybill} was accepted before")
    tx.add_parcel(
        waybill=body.waybill,
        station=envelope.station,
        device=envelope.device,
        destination=body.destination,
        accepted_at=envelope.ts,
        clerk=body.clerk,
        request=envelope.id,
    )
    tx.add_realname(body.waybill, realname)
    inspection = body.inspection
    tx.add_inspection(
        body.waybill,
        inspected=inspection.inspected,
        declared_contents=inspection.declared_contents,
        refused_items=inspection.refused_items,
    )
    inspected = "acceptance.inspected" if inspection.inspected else "acceptance.uninspected"
    return _Applied(Outcome(None, False, {"acceptance.accepted": 1, inspected: 1}))


def _xray(tx: LedgerTx, envelope: XrayEnvelope, now: datetime) -> _Applied:
    body = envelope.body
    tx.add_xray(
        waybill=body.waybill,
        verdict=body.verdict,
        operator=body.operator,
        image=body.image,
        scanned_at=body.scanned_at,
        station=envelope.station,
        device=envelope.device,
        request=envelope.id,
    )
    counters = {f"xray.{body.verdict.lower()}": 1}
    if body.verdict == "PASS":
        return _Applied(Outcome(None, False, counters))
    hold = tx.open_hold(body.waybill)
    if hold is None:
        hold_id = tx.add_hold(body.waybill, f"xray_{body.verdict.lower()}", now)
        counters["xray.hold"] = 1
    else:
        hold_id = hold.id
    severity: Literal["warning", "critical"] = (
        "warning" if body.verdict == "SUSPECT" else "critical"
    )
    details: dict[str, JsonValue] = {"verdict": body.verdict, "device": envelope.device,
                                     "operator": body.operator, "image": body.image,
                                     "hold": hold_id, "request": envelope.id}  # fmt: skip
    alert_id = tx.add_alert(
        station=envelope.station,
        kind="xray_hold",
        waybill=body.waybill,
        severity=severity,
        details=details,
        raised_at=now,
    )
    row = tx.alert(alert_id)
    assert row is not None  # inserted just now, in this transaction
    return _Applied(Outcome(None, False, counters, alerts=[alert_message(row)]))


def _induct(
    tx: LedgerTx, envelope: InductionEnvelope, routing: Routing | None, now: datetime
) -> _Applied:
    body = envelope.body
    if routing is None:
        raise UnknownSorter(f"device {envelope.device} is not an active sorter in the ledger")
    barcode = body.barcode
    waybill = barcode if barcode is not None and _WAYBILL.fullmatch(barcode) else None
    sort = _sort(tx, envelope.device, envelope.id, waybill, routing)
    sort.facts.update(barcode=barcode is not None, scan_slot=body.scan_slot)
    tx.add_induction(
        request=envelope.id,
        sorter=envelope.device,
        waybill=waybill,
        transaction_no=body.transaction,
        chute=sort.chute,
        routed=sort.reason is None,
        inducted_at=now,
    )
    decision = SortDecision(
        transaction=body.transaction, waybill=waybill, chute=sort.chute, reason=sort.reason
    )
    outcome_name = "routed" if sort.reason is None else "exception"
    decision_id = _record(tx, envelope, waybill, "sort", outcome_name, sort.reason,
                          sort.facts, decision, now)  # fmt: skip
    counter = "sort.routed" if sort.reason is None else f"sort.exception.{sort.reason}"
    message = _message(decision_id, envelope.id, decision, now)
    return _Applied(Outcome(message, False, {counter: 1}), decision_id)


def _sort(tx: LedgerTx, sorter: str, request: str, waybill: str | None, routing: Routing) -> _Sort:
    """The chute for ``waybill`` and why, with the facts looked up on the way."""
    facts: dict[str, Any] = {"waybill": waybill is not None}
    exception = routing.exception_chute
    if waybill is None:
        return _Sort("unknown_parcel", exception, facts)
    found = tx.sort_facts(sorter, waybill, request)  # one statement; facts below as checked
    facts["routed_before"] = found.routed_before
    if found.routed_before:
        return _Sort("duplicate_induction", exception, facts)
    destination = found.destination
    facts["parcel"] = destination is not None  # never accepted, or its acceptance was refused
    facts["realname"] = destination is not None and found.realname
    if destination is None or not facts["realname"]:
        return _Sort("no_realname", exception, facts)
    hold = found.hold
    facts["hold"] = None if hold is None else {"id": hold[0], "reason": hold[1]}
    if hold is not None:
        return _Sort("xray_hold", exception, facts)
    facts["xray"] = found.verdict
    if facts["xray"] != "PASS":
        return _Sort("no_xray", exception, facts)
    facts["destination"] = destination
    chute = longest_prefix_route(routing, destination)
    facts["prefix"] = _matched_prefix(routing, destination)
    if chute is None:
        return _Sort("unknown_destination", exception, facts)
    facts["chute"] = chute
    return _Sort(None, chute, facts)


def _matched_prefix(routing: Routing, destination: str) -> str | None:
    """The route prefix :func:`longest_prefix_route` matched, for the decision's facts."""
    matching = [prefix for prefix in routing.routes if destination.startswith(prefix)]
    return max(matching, key=len, default=None)


def _sort_miss(tx: LedgerTx, envelope: SortMissEnvelope) -> _Applied:
    """The sorter sent the parcel to its exception chute because the decision came too late
    (or not at all): the induction did not route it, so when the parcel comes round again
    it is not a duplicate."""
    request = envelope.body.request
    if request is not None:
        tx.unroute_induction(request, sorter=envelope.device)
    return _Applied(Outcome(None, False, {"sort.missed_at_edge": 1}))


def _divert(tx: LedgerTx, envelope: DivertEnvelope) -> _Applied:
    """Where the sorter says the parcel went. Not in the chute it was decided for: the
    induction did not route it (as :func:`_sort_miss`)."""
    body = envelope.body
    counters = {f"sort.divert.{body.outcome}": 1}
    induction = tx.induction_of_transaction(envelope.device, body.transaction)
    if induction is None:
        counters["sort.divert.unmatched"] = 1  # inducted before the ledger, or a PLC's slip
    elif body.outcome != "diverted" or body.chute != induction.chute:
        if body.outcome == "diverted":
            counters["sort.divert.elsewhere"] = 1
        if induction.routed:
            tx.unroute_induction(induction.request, sorter=envelope.device)
    return _Applied(Outcome(None, False, counters))


def _deposit_request(tx: LedgerTx, envelope: DepositRequestEnvelope, now: datetime) -> _Applied:
    waybill = envelope.body.waybill
    allowed = tx.has_realname(waybill)
    facts = {"parcel": tx.parcel(waybill) is not None, "realname": allowed,
             "purpose": envelope.body.purpose}  # fmt: skip
    decision = DepositDecision(
        waybill=waybill, allowed=allowed, reason=None if allowed else "no_realname"
    )
    outcome_name = "allowed" if allowed else "refused"
    decision_id = _record(tx, envelope, waybill, "deposit", outcome_name, decision.reason,
                          facts, decision, now)  # fmt: skip
    message = _message(decision_id, envelope.id, decision, now)
    return _Applied(Outcome(message, False, {f"deposit.{outcome_name}": 1}), decision_id)


def _pickup(tx: LedgerTx, envelope: PickupEnvelope, now: datetime) -> _Applied:
    body = envelope.body
    tx.clear_location(body.waybill, envelope.device)
    used = tx.close_codes(device=envelope.device, waybill=body.waybill, at=now, closed="pickup")
    if not used:
        return _Applied(Outcome(None, False, {"pickup.without_code": 1}))
    codes = _code_list(tx, envelope.device, tx.next_code_list_version(envelope.device), now)
    return _Applied(Outcome(None, False, {"pickup.collected": 1}, extra=[codes]))


def _code_list(tx: LedgerTx, locker: str, version: int, now: datetime) -> DecisionMessage:
    """The locker's open codes as code list ``version`` (a new one, or the current again)."""
    codes = [
        PickupCode(
            waybill=code.waybill,
            board=code.board,
            lock=code.lock,
            salt=code.salt,
            code_hash=code.code_hash,
            expires=None if code.expires_at is None else to_utc_ms(code.expires_at),
        )
        for code in tx.open_codes(locker, now)
    ]
    body = PickupCodes(version=version, codes=codes)
    return DecisionMessage(id=f"codes:{locker}:{version}", ts=now, request=None, body=body)


def _record(
    tx: LedgerTx,
    envelope: AnyEnvelope,
    waybill: str | None,
    kind: str,
    outcome: str,
    reason: str | None,
    facts: Mapping[str, Any],
    body: SortDecision | DepositDecision | None,
    now: datetime,
) -> str:
    """Store a decision with its reason and facts; return its id."""
    decision_id = f"dec:{envelope.id}"
    tx.add_decision(
        DecisionRow(
            id=decision_id,
            station=envelope.station,
            device=envelope.device,
            request=envelope.id,
            waybill=waybill,
            kind=kind,
            outcome=outcome,
            reason=reason,
            facts=facts,
            body=None if body is None else body.model_dump(mode="json"),
            decided_at=now,
        )
    )
    return decision_id


def _message(
    decision_id: str, request: str, body: SortDecision | DepositDecision, now: datetime
) -> DecisionMessage:
    return DecisionMessage(id=decision_id, ts=now, request=request, body=body)
