"""The decision engine over a real ledger, on SQLite and PostgreSQL (``ledger_url``):
acceptance, X-ray holds, sort decisions and their reasons, lockers and pickup codes,
exactly-once handling of replays, and no personal data in the database in clear."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from contracts.envelope import AnyBody, AnyEnvelope, make_envelope
from contracts.events import DivertBody, IdentityRead, InductionBody, ScanBody, XrayBody
from contracts.identity import InvalidIdentity
from contracts.station import (
    PICKUP_CODE_ITERATIONS,
    AcceptanceBody,
    DepositBody,
    DepositDecision,
    DepositRequestBody,
    Inspection,
    PickupBody,
    PickupCodes,
    SortDecision,
    SortMissBody,
    pickup_code_hash,
)
from gateway.clearance import Clearance, DuplicateAcceptance, Outcome, UnknownSorter
from gateway.ledger import Ledger, LedgerTx
from gateway.ledger import schema as t
from gateway.personal import Keyring
from gateway.registry import DeviceEntry, Registry, Routing, StationEntry

NUMBER = "11010519491231002X"  # the GB 11643-1999 worked example
NAME = "张三丰"
PHONE = "13812345678"
CLEAR_FRAGMENTS = [NUMBER, NUMBER[6:14], NAME, NAME[1:], PHONE, PHONE[3:7]]
"""Clear personal data and the parts of it masking hides: none may be stored."""

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
DESTINATION = "410523101001"
ROUTES = {"41": 3, "4105": 1, "410523": 2, "4105231": 7}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def registry() -> Registry:
    return Registry(
        stations=[
            StationEntry(id="county-1", name="County", division="410523000000", tier="county"),
            StationEntry(id="town-1", name="Town", division="410523100000", tier="township"),
        ],
        devices=[
            DeviceEntry(id="counter-1", station="county-1", role="counter"),
            DeviceEntry(id="xray-1", station="county-1", role="xray"),
            DeviceEntry(
                id="sorter-1",
                station="county-1",
                role="sorter",
                routing=Routing(exception_chute=99, routes=ROUTES),
            ),
            DeviceEntry(
                id="sorter-2",
                station="county-1",
                role="sorter",
                routing=Routing(exception_chute=98, routes={"41": 4}),
            ),
            DeviceEntry(id="locker-1", station="town-1", role="locker"),
            DeviceEntry(id="probe-1", station="town-1", role="probe"),
        ],
    )


STATION_OF = {d.id: d.station for d in registry().devices}


class Station:
    """Builds envelopes from the registry's devices (fresh sequence numbers) and hands
    them to the engine."""

    def __init__(
        self, clearance: Clearance, ledger: Ledger, clock: Clock, keyring: Keyring | None = None
    ) -> None:
        self.clearance = clearance
        self.keyring = keyring
        self.ledger = ledger
        self.clock = clock
        self._seq: dict[str, int] = {}

    def envelope(self, device: str, body: AnyBody) -> AnyEnvelope:
        seq = self._seq.get(device, 0) + 1
        self._seq[device] = seq
        return make_envelope(
            station=STATION_OF[device], device=device, boot=1, seq=seq, ts=self.clock(), body=body
        )

    def send(self, device: str, body: AnyBody) -> Outcome:
        return self.clearance.handle(self.envelope(device, body))

    def accept(self, waybill: str, *, inspected: bool = True, phone: str | None = PHONE,
               destination: str = DESTINATION) -> Outcome:  # fmt: skip
        return self.send("counter-1", acceptance(waybill, inspected=inspected, phone=phone,
                                                 destination=destination))  # fmt: skip

    def xray(self, waybill: str, verdict: str) -> Outcome:
        self.clock.now += timedelta(seconds=1)
        body = XrayBody.model_validate(
            {"waybill": waybill, "verdict": verdict, "operator": "op-7",
             "image": f"img/{waybill}-{verdict}.png", "scanned_at": self.clock()}
        )  # fmt: skip
        return self.send("xray-1", body)

    def induct(self, barcode: str | None, *, sorter: str = "sorter-1", slot: int | None = None,
               transaction: int = 1) -> Outcome:  # fmt: skip
        body = InductionBody(transaction=transaction, barcode=barcode, scan_slot=slot)
        return self.send(sorter, body)

    def cleared(self, waybill: str, **kwargs: Any) -> None:
        self.accept(waybill, **kwargs)
        self.xray(waybill, "PASS")

    def sort(self, outcome: Outcome) -> SortDecision:
        assert outcome.decision is not None
        assert isinstance(outcome.decision.body, SortDecision)
        return outcome.decision.body

    def count(self, table: Any, **where: Any) -> int:
        with self.ledger.transaction(write=False) as tx:
            query = select(func.count()).select_from(table)
            for column, value in where.items():
                query = query.where(table.c[column] == value)
            return int(tx.connection.execute(query).scalar_one())

    def dump(self) -> list[str]:
        """Every cell of every table, as text (bytes both as hex and decoded)."""
        cells: list[str] = []
        with self.ledger.transaction(write=False) as tx:
            for table in t.METADATA.sorted_tables:
                for row in tx.connection.execute(select(table)):
                    for value in row:
                        if isinstance(value, bytes):
                            cells += [value.hex(), value.decode("utf-8", "replace")]
                        else:
                            cells.append(str(value))
        return cells


def acceptance(waybill: str, *, inspected: bool = True, phone: str | None = PHONE,
               number: str = NUMBER, destination: str = DESTINATION) -> AcceptanceBody:  # fmt: skip
    sender = IdentityRead(
        name=NAME, id_type="resident", id_number=number, authority="北京市公安局西城分局",
        valid_from=dt.date(2015, 3, 1), valid_until=dt.date(2035, 3, 1),
    )  # fmt: skip
    return AcceptanceBody(
        waybill=waybill,
        destination=destination,
        sender=sender,
        sender_phone=phone,
        inspection=Inspection(inspected=inspected, declared_contents="books",
                              refused_items=["lighter"] if inspected else []),
        clerk="clerk-1",
    )  # fmt: skip


@pytest.fixture
def station(ledger_url: str) -> Iterator[Station]:
    clock = Clock()
    with Ledger(ledger_url) as ledger:
        ledger.sync_registry(registry())
        keyring = Keyring.generate()
        yield Station(Clearance(ledger, keyring, clock=clock), ledger, clock, keyring)


# -- acceptance ------------------------------------------------------------------------


def test_acceptance_stores_the_parcel_with_protected_identity(station: Station) -> None:
    outcome = station.accept("WB0001")
    assert outcome == Outcome(None, False, {"acceptance.accepted": 1, "acceptance.inspected": 1})
    with station.ledger.transaction(write=False) as tx:
        record = tx.realname("WB0001")
        parcel = tx.parcel("WB0001")
    assert parcel is not None
    assert (parcel.station, parcel.destination, parcel.accepted_at) == ("county-1", DESTINATION, T0)
    assert record is not None
    assert (record.masked_number, record.masked_name, record.masked_phone) == (
        "1101**********002X", "张**", "138****5678",
    )  # fmt: skip
    assert station.keyring is not None
    assert record.lookup == station.keyring.lookup("resident", NUMBER)


def test_no_clear_personal_data_is_stored_anywhere(station: Station) -> None:
    station.accept("WB0001")
    station.xray("WB0001", "SUSPECT")
    station.induct("WB0001")
    station.send("locker-1", DepositRequestBody(waybill="WB0001"))
    cells = station.dump()
    assert "138****5678" in cells  # the dump does see the record
    assert [(f, c) for c in cells for f in CLEAR_FRAGMENTS if f in c] == []


@pytest.mark.parametrize(
    ("number", "phone", "rule"),
    [
        ("11010519491231002Y", PHONE, "character"),
        ("110105194912310021", PHONE, "check_character"),
        (NUMBER, "12345", "mobile"),
    ],
)
def test_an_invalid_identity_is_refused_and_nothing_written(
    station: Station, number: str, phone: str, rule: str
) -> None:
    envelope = station.envelope("counter-1", acceptance("WB0001", number=number, phone=phone))
    with pytest.raises(InvalidIdentity) as caught:
        station.clearance.handle(envelope)
    assert (caught.value.reason, caught.value.rule) == ("realname", rule)
    assert number not in str(caught.value)
    assert station.count(t.parcels) == station.count(t.processed_messages) == 0


def test_a_second_acceptance_of_a_waybill_is_refused(station: Station) -> None:
    station.accept("WB0001")
    with pytest.raises(DuplicateAcceptance) as caught:
        station.accept("WB0001", inspected=False)
    assert caught.value.reason == "duplicate_acceptance"
    assert station.count(t.inspections, inspected=False) == 0
    assert station.count(t.processed_messages) == 1


def test_coverage_counts_accepted_realname_and_inspected(station: Station) -> None:
    station.accept("WB0001")
    station.accept("WB0002", inspected=False)
    outcome = station.accept("WB0003", phone=None)
    assert outcome.counters == {"acceptance.accepted": 1, "acceptance.inspected": 1}
    coverage = station.ledger.coverage("county-1", T0.date())
    assert (coverage.accepted, coverage.with_realname, coverage.inspected) == (3, 3, 2)


# -- X-ray -----------------------------------------------------------------------------


@pytest.mark.parametrize(("verdict", "severity"), [("SUSPECT", "warning"), ("FAIL", "critical")])
def test_suspect_and_fail_hold_the_parcel_and_raise_an_alert(
    station: Station, verdict: str, severity: str
) -> None:
    station.accept("WB0001")
    outcome = station.xray("WB0001", verdict)
    assert outcome.counters == {f"xray.{verdict.lower()}": 1, "xray.hold": 1}
    again = station.xray("WB0001", "SUSPECT")
    assert again.counters == {"xray.suspect": 1}  # the hold is open already
    assert station.count(t.holds) == 1
    with station.ledger.transaction(write=False) as tx:
        alerts = tx.connection.execute(select(t.alerts).order_by(t.alerts.c.id)).all()
    assert [(a.kind, a.severity, a.state, a.waybill) for a in alerts] == [
        ("xray_hold", severity, "open", "WB0001"),
        ("xray_hold", "warning", "open", "WB0001"),
    ]
    assert alerts[0].details["verdict"] == verdict


def test_an_xray_of_an_unknown_waybill_is_recorded_and_counts_later(station: Station) -> None:
    assert station.xray("WB0001", "PASS").counters == {"xray.pass": 1}
    station.accept("WB0001")
    assert station.sort(station.induct("WB0001")).reason is None


# -- sorting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("destination", "chute", "prefix"),
    [
        ("410523101001", 7, "4105231"),
        ("410523201001", 2, "410523"),
        ("410527000000", 1, "4105"),
        ("411000000000", 3, "41"),
    ],
)
def test_a_cleared_parcel_goes_to_the_chute_of_its_longest_prefix(
    station: Station, destination: str, chute: int, prefix: str
) -> None:
    station.cleared("WB0001", destination=destination)
    outcome = station.induct("WB0001", transaction=77)
    assert outcome.counters == {"sort.routed": 1}
    assert outcome.decision is not None
    assert outcome.decision.body == SortDecision(transaction=77, waybill="WB0001", chute=chute)
    assert outcome.decision.request == f"sorter-1:1:{station._seq['sorter-1']}"
    assert outcome.decision.id == f"dec:{outcome.decision.request}"
    with station.ledger.transaction(write=False) as tx:
        (decision,) = tx.decisions_for("WB0001")
    assert (decision.kind, decision.outcome, decision.reason) == ("sort", "routed", None)
    assert decision.facts == {
        "waybill": True, "routed_before": False, "parcel": True, "realname": True,
        "hold": None, "xray": "PASS", "destination": destination, "prefix": prefix,
        "chute": chute, "barcode": True, "scan_slot": None,
    }  # fmt: skip


def _no_realname(station: Station) -> None:
    """A parcel row without a real-name record (e.g. imported from an older system)."""
    with station.ledger.transaction() as tx:
        tx.add_parcel(
            waybill="WB0001", station="county-1", device="counter-1",
            destination=DESTINATION, accepted_at=T0, clerk="c", request="old",
        )  # fmt: skip


@pytest.mark.parametrize(
    ("scenario", "barcode", "reason"),
    [
        ("nothing", None, "unknown_parcel"),
        ("nothing", "not a waybill!", "unknown_parcel"),
        ("nothing", "WB0001", "no_realname"),
        ("refused acceptance", "WB0001", "no_realname"),
        ("accepted", "WB0001", "no_xray"),
        ("suspect then pass", "WB0001", "xray_hold"),
        ("no realname, held", "WB0001", "no_realname"),
        ("held, fail", "WB0001", "xray_hold"),
        ("released, latest suspect", "WB0001", "no_xray"),
        ("unrouted destination", "WB0001", "unknown_destination"),
        ("routed before", "WB0001", "duplicate_induction"),
        ("routed before, then held", "WB0001", "duplicate_induction"),
    ],
)
def test_each_exception_reason_in_its_order(
    station: Station, scenario: str, barcode: str | None, reason: str
) -> None:
    """The first failing check wins: no waybill, duplicate, real-name (a waybill never
    accepted has none), hold, X-ray, destination."""
    if scenario == "refused acceptance":
        with pytest.raises(InvalidIdentity):
            station.send("counter-1", acceptance("WB0001", number=NUMBER[:-1] + "3"))
    if scenario in ("accepted", "suspect then pass", "held, fail", "released, latest suspect"):
        station.accept("WB0001")
    if scenario == "suspect then pass":
        station.xray("WB0001", "SUSPECT")
        station.xray("WB0001", "PASS")  # a later PASS does not release the hold
    if scenario == "no realname, held":
        _no_realname(station)
        station.xray("WB0001", "FAIL")
    if scenario == "held, fail":
        station.xray("WB0001", "FAIL")
    if scenario == "released, latest suspect":
        station.xray("WB0001", "SUSPECT")
        with station.ledger.transaction() as tx:
            hold = tx.open_hold("WB0001")
            assert hold is not None
            assert tx.release_hold(hold.id, by="supervisor-1", at=station.clock())
    if scenario == "unrouted destination":
        station.cleared("WB0001", destination="510000000000")
    if scenario.startswith("routed before"):
        station.cleared("WB0001")
        assert station.sort(station.induct("WB0001")).reason is None
    if scenario == "routed before, then held":
        station.xray("WB0001", "SUSPECT")
    outcome = station.induct(barcode, slot=5 if barcode is None else None)
    decision = station.sort(outcome)
    expected_waybill = "WB0001" if barcode == "WB0001" else None
    assert (decision.chute, decision.reason, decision.waybill) == (99, reason, expected_waybill)
    assert outcome.counters == {f"sort.exception.{reason}": 1}


def test_a_parcel_fixed_after_an_exception_may_be_inducted_again(station: Station) -> None:
    station.accept("WB0001")
    assert station.sort(station.induct("WB0001")).reason == "no_xray"
    station.xray("WB0001", "PASS")
    assert station.sort(station.induct("WB0001")).chute == 7
    assert station.sort(station.induct("WB0001")).reason == "duplicate_induction"
    # Another sorter has its own inductions and its own routing.
    assert station.sort(station.induct("WB0001", sorter="sorter-2")).chute == 4


def test_a_parcel_the_sorter_missed_may_be_routed_when_it_comes_round_again(
    station: Station,
) -> None:
    """A decision that came too late: the edge sent the parcel to the exception chute and
    said so (sort_miss), so the next induction of the waybill is no duplicate."""
    station.cleared("WB0001")
    late = station.envelope("sorter-1", InductionBody(transaction=1, barcode="WB0001"))
    assert station.sort(station.clearance.handle(late)).chute == 7
    miss = SortMissBody(transaction=1, waybill="WB0001", chute=99, waited_ms=450, request=late.id)
    assert station.send("sorter-1", miss).counters == {"sort.missed_at_edge": 1}
    again = station.sort(station.induct("WB0001", transaction=2))
    assert (again.chute, again.reason) == (7, None)
    assert station.sort(station.induct("WB0001", transaction=3)).reason == "duplicate_induction"


@pytest.mark.parametrize(
    ("outcome", "chute", "counters", "routed_again"),
    [
        ("diverted", 7, {"sort.divert.diverted": 1}, False),
        ("diverted", 99, {"sort.divert.diverted": 1, "sort.divert.elsewhere": 1}, True),
        ("missed", 7, {"sort.divert.missed": 1}, True),
        ("recirculated", 7, {"sort.divert.recirculated": 1}, True),
    ],
)
def test_a_divert_confirmation_off_the_decided_chute_lets_the_parcel_be_routed_again(
    station: Station, outcome: str, chute: int, counters: dict[str, int], routed_again: bool
) -> None:
    """The sorter's word on where the parcel went, matched by its PLC transaction number
    to the latest induction: only a parcel in its decided chute stays routed."""
    station.cleared("WB0001")
    station.induct("WB0002", transaction=41)  # an unrelated, older transaction
    station.cleared("WB0002")
    station.clock.now += timedelta(seconds=1)
    assert station.sort(station.induct("WB0001", transaction=41)).chute == 7
    confirmation = DivertBody.model_validate({"transaction": 41, "chute": chute,
                                              "outcome": outcome})  # fmt: skip
    envelope = station.envelope("sorter-1", confirmation)
    assert station.clearance.handle(envelope).counters == counters
    assert station.clearance.handle(envelope).replayed  # and no second effect
    again = station.sort(station.induct("WB0001", transaction=42))
    assert again.reason == (None if routed_again else "duplicate_induction")


def test_a_divert_of_an_unknown_transaction_is_counted_and_changes_nothing(
    station: Station,
) -> None:
    station.cleared("WB0001")
    assert station.sort(station.induct("WB0001", transaction=5)).reason is None
    lost = DivertBody(transaction=6, chute=7, outcome="missed")
    outcome = station.send("sorter-2", lost)  # another sorter's number 6: not ours either
    assert outcome.counters == {"sort.divert.missed": 1, "sort.divert.unmatched": 1}
    assert station.sort(station.induct("WB0001", transaction=7)).reason == "duplicate_induction"


def test_an_induction_from_a_device_with_no_routing_is_refused(station: Station) -> None:
    body = InductionBody(transaction=1, barcode="WB0001")
    envelope = station.envelope("locker-1", body)
    with pytest.raises(UnknownSorter) as caught:
        station.clearance.handle(envelope)
    assert caught.value.reason == "identity"


def test_kinds_without_ledger_effect_give_nothing_and_are_not_recorded(station: Station) -> None:
    outcome = station.send("sorter-1", ScanBody(reader="r1", code="WB0001"))
    assert outcome == Outcome(None, False, {})
    assert station.count(t.processed_messages) == 0


# -- replays ---------------------------------------------------------------------------


def test_a_replayed_induction_returns_the_same_decision_without_effects(station: Station) -> None:
    station.cleared("WB0001")
    envelope = station.envelope("sorter-1", InductionBody(transaction=5, barcode="WB0001"))
    first = station.clearance.handle(envelope)
    station.clock.now += timedelta(minutes=5)
    again = station.clearance.handle(envelope)
    assert again == Outcome(first.decision, True, {})
    assert again.decision is not None
    assert again.decision.model_dump_json() == first.decision.model_dump_json()  # type: ignore[union-attr]
    assert station.count(t.inductions) == station.count(t.decisions) == 1


def test_replayed_events_have_no_second_effect(station: Station) -> None:
    accepted = station.envelope("counter-1", acceptance("WB0001"))
    xray = XrayBody(
        waybill="WB0001", verdict="SUSPECT", operator="op", image="i.png", scanned_at=T0
    )
    suspect = station.envelope("xray-1", xray)
    request = station.envelope("locker-1", DepositRequestBody(waybill="WB0001"))
    firsts = [station.clearance.handle(e) for e in (accepted, suspect, request)]
    replays = [station.clearance.handle(e) for e in (accepted, suspect, request)]
    assert [r.replayed for r in replays] == [True, True, True]
    assert [r.counters for r in replays] == [{}, {}, {}]
    assert replays[2].decision == firsts[2].decision
    for table in (t.parcels, t.xray_verdicts, t.holds, t.alerts, t.decisions):
        assert station.count(table) == 1, table.name


@contextlib.contextmanager
def two_gateways(ledger_url: str) -> Iterator[tuple[list[Clearance], Station]]:
    """Two engines on one database, as two gateway processes, and a station on the first."""
    keyring, clock = Keyring.generate(), Clock()
    ledgers = [Ledger(ledger_url), Ledger(ledger_url)]
    for ledger in ledgers:
        ledger.open()
    try:
        ledgers[0].sync_registry(registry())
        engines = [Clearance(ledger, keyring, clock=clock) for ledger in ledgers]
        yield engines, Station(engines[0], ledgers[0], clock)
    finally:
        for ledger in ledgers:
            ledger.close()


def at_once(engines: list[Clearance], work: Callable[[Clearance], None]) -> None:
    """``work`` for each engine, on threads of their own released together."""
    barrier = threading.Barrier(len(engines))

    def run(engine: Clearance) -> None:
        barrier.wait(10)
        work(engine)

    threads = [threading.Thread(target=run, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)


def test_one_message_handled_by_two_gateways_at_once_applies_once(ledger_url: str) -> None:
    """Two processes on one database (one shared subscription, a redelivery) race on one
    message: one applies it, the other gets the replay."""
    outcomes: list[Outcome] = []
    with two_gateways(ledger_url) as (engines, setup):
        setup.cleared("WB0001")
        for round_ in range(5):
            body = InductionBody(transaction=round_, barcode="WB0001")
            envelope = setup.envelope("sorter-1", body)
            at_once(engines, lambda engine, e=envelope: outcomes.append(engine.handle(e)))
    assert len(outcomes) == 10
    assert sorted(o.replayed for o in outcomes) == [False] * 5 + [True] * 5
    reasons = [setup.sort(o).reason for o in outcomes if not o.replayed]
    assert sorted(reasons, key=str) == [None] + ["duplicate_induction"] * 4


# -- batches (group commit) -----------------------------------------------------------


def test_a_batch_applies_in_order_and_refuses_messages_alone(station: Station) -> None:
    """One transaction for the batch: a refused message takes its error's place, the
    others apply, in order (the induction sees the acceptance and X-ray before it), and a
    replay inside the batch has no second effect."""
    accepted = station.envelope("counter-1", acceptance("WB0001"))
    again = station.envelope("counter-1", acceptance("WB0001"))
    invalid = station.envelope("counter-1", acceptance("WB0002", number=NUMBER[:-1] + "3"))
    xray = XrayBody(waybill="WB0001", verdict="PASS", operator="op", image="i.png",
                    scanned_at=T0)  # fmt: skip
    passed = station.envelope("xray-1", xray)
    induction = station.envelope("sorter-1", InductionBody(transaction=1, barcode="WB0001"))
    batch = [accepted, again, invalid, passed, induction, induction]
    outcomes = station.clearance.handle_batch(batch)
    assert [type(o).__name__ for o in outcomes] == [
        "Outcome", "DuplicateAcceptance", "InvalidIdentity", "Outcome", "Outcome", "Outcome",
    ]  # fmt: skip
    first, replay = outcomes[4], outcomes[5]
    assert isinstance(first, Outcome)
    assert isinstance(replay, Outcome)
    assert station.sort(first).reason is None
    assert station.sort(first).chute == 7
    assert replay == Outcome(first.decision, True, {})
    assert station.count(t.parcels) == 1
    assert station.count(t.inductions) == station.count(t.decisions) == 1
    assert station.count(t.processed_messages) == 3  # acceptance, X-ray, induction


def test_a_batch_of_one_refused_message_writes_nothing(station: Station) -> None:
    station.accept("WB0001")
    again = station.envelope("counter-1", acceptance("WB0001"))
    invalid = station.envelope("counter-1", acceptance("WB0002", number=NUMBER[:-1] + "3"))
    for envelope, refusal in ((again, DuplicateAcceptance), (invalid, InvalidIdentity)):
        (outcome,) = station.clearance.handle_batch([envelope])
        assert isinstance(outcome, refusal)
    assert station.count(t.parcels) == 1
    assert station.count(t.processed_messages) == 1


def test_an_empty_batch_gives_no_outcomes(station: Station) -> None:
    assert station.clearance.handle_batch([]) == []


def _refused_write(tx: LedgerTx) -> None:
    with tx.savepoint():
        tx.add_hold("WB0002", "undone", T0)
        raise RuntimeError("refused")


def test_a_savepoint_undoes_only_its_own_writes(station: Station) -> None:
    with station.ledger.transaction() as tx:
        tx.add_hold("WB0001", "kept", T0)
        with pytest.raises(RuntimeError):
            _refused_write(tx)
        with tx.savepoint():
            tx.add_hold("WB0003", "kept too", T0)
    assert station.count(t.holds) == 2
    assert station.count(t.holds, waybill="WB0002") == 0


def test_a_batch_handled_by_two_gateways_at_once_applies_once(ledger_url: str) -> None:
    """As the single-message race, for whole batches: one gateway commits the batch, the
    other's conflicting batch is retried and sees every message as a replay."""
    results: list[list[Outcome | Exception]] = []
    with two_gateways(ledger_url) as (engines, setup):
        for n in range(5):
            setup.cleared(f"WB000{n}")
        batch = [
            setup.envelope("sorter-1", InductionBody(transaction=n, barcode=f"WB000{n}"))
            for n in range(5)
        ]
        at_once(engines, lambda engine: results.append(list(engine.handle_batch(batch))))
        assert setup.count(t.inductions) == setup.count(t.decisions) == 5
    assert len(results) == 2
    flags = sorted(tuple(isinstance(o, Outcome) and o.replayed for o in r) for r in results)
    assert flags == [(False,) * 5, (True,) * 5]


def test_a_registry_sync_replaces_the_cached_routing(station: Station) -> None:
    station.cleared("WB0001")
    station.cleared("WB0002")
    assert station.sort(station.induct("WB0001")).chute == 7
    before = registry()
    rerouted = Routing(exception_chute=99, routes={"41": 5})
    devices = [
        d.model_copy(update={"routing": rerouted}) if d.id == "sorter-1" else d
        for d in before.devices
    ]
    station.ledger.sync_registry(Registry(stations=before.stations, devices=devices))
    assert station.sort(station.induct("WB0002", transaction=2)).chute == 5


# -- lockers ---------------------------------------------------------------------------


def test_a_send_deposit_needs_a_realname_record(station: Station) -> None:
    refused = station.send("locker-1", DepositRequestBody(waybill="WB0001"))
    station.accept("WB0001")
    allowed = station.send("locker-1", DepositRequestBody(waybill="WB0001"))
    assert refused.decision is not None
    assert allowed.decision is not None
    assert refused.decision.body == DepositDecision(waybill="WB0001", allowed=False,
                                                    reason="no_realname")  # fmt: skip
    assert allowed.decision.body == DepositDecision(waybill="WB0001", allowed=True)
    assert (refused.counters, allowed.counters) == ({"deposit.refused": 1}, {"deposit.allowed": 1})
    sent = station.send("locker-1", DepositBody(waybill="WB0001", purpose="send", board=1, lock=3))
    assert sent.counters == {"deposit.send": 1}
    assert sent.extra == []
    with station.ledger.transaction(write=False) as tx:
        location = tx.location("WB0001")
    assert location is not None
    assert (location.device, location.board, location.lock, location.purpose) == (
        "locker-1", 1, 3, "send",
    )  # fmt: skip


def _codes(outcome: Outcome) -> PickupCodes:
    (message,) = outcome.extra
    assert isinstance(message.body, PickupCodes)
    return message.body


def test_a_delivery_deposit_issues_a_hashed_pickup_code(station: Station) -> None:
    first = station.send("locker-1", DepositBody(waybill="WB0001", purpose="delivery",
                                                  board=1, lock=2))  # fmt: skip
    code = first.pickup_code
    assert code is not None
    assert len(code) == 6
    assert code.isdigit()
    assert first.counters == {"deposit.delivery": 1, "pickup_code.issued": 1}
    assert code not in repr(first)
    codes = _codes(first)
    assert codes.version == 1
    (entry,) = codes.codes
    assert (entry.waybill, entry.board, entry.lock) == ("WB0001", 1, 2)
    assert entry.code_hash == pickup_code_hash(code, entry.salt)
    assert entry.expires == T0 + timedelta(days=7)
    assert first.extra[0].id == "codes:locker-1:1"
    second = station.send("locker-1", DepositBody(waybill="WB0002", purpose="delivery",
                                                   board=1, lock=3))  # fmt: skip
    assert second.pickup_code is not None
    listed = _codes(second)
    assert (listed.version, [c.waybill for c in listed.codes]) == (2, ["WB0001", "WB0002"])
    for clear in (code, second.pickup_code):
        assert [c for c in station.dump() if clear in c] == []


def test_pickup_code_hash_is_pbkdf2_sha256() -> None:
    import hashlib

    salt = "00112233445566778899aabbccddeeff"
    expected = hashlib.pbkdf2_hmac("sha256", b"123456", bytes.fromhex(salt), PICKUP_CODE_ITERATIONS)
    assert pickup_code_hash("123456", salt) == expected.hex()
    assert pickup_code_hash("123457", salt) != expected.hex()


def test_a_new_parcel_in_a_slot_closes_the_old_code_of_that_slot(station: Station) -> None:
    station.send("locker-1", DepositBody(waybill="WB0001", purpose="delivery", board=1, lock=2))
    again = station.send("locker-1", DepositBody(waybill="WB0002", purpose="delivery",
                                                  board=1, lock=2))  # fmt: skip
    moved = station.send("locker-1", DepositBody(waybill="WB0002", purpose="delivery",
                                                  board=1, lock=4))  # fmt: skip
    assert [c.waybill for c in _codes(again).codes] == ["WB0002"]
    assert [(c.waybill, c.lock) for c in _codes(moved).codes] == [("WB0002", 4)]
    assert station.count(t.pickup_codes, closed="superseded") == 2


def test_pickup_uses_the_code_and_syncs_the_list(station: Station) -> None:
    for waybill, lock in (("WB0001", 2), ("WB0002", 3)):
        station.send("locker-1", DepositBody(waybill=waybill, purpose="delivery", board=1,
                                             lock=lock))  # fmt: skip
    envelope = station.envelope("locker-1", PickupBody(waybill="WB0001", board=1, lock=2))
    picked = station.clearance.handle(envelope)
    assert picked.counters == {"pickup.collected": 1}
    codes = _codes(picked)
    assert (codes.version, [c.waybill for c in codes.codes]) == (3, ["WB0002"])
    replay = station.clearance.handle(envelope)
    assert (replay.replayed, replay.counters, replay.extra) == (True, {}, picked.extra)
    nothing = station.send("locker-1", PickupBody(waybill="WB0009", board=2, lock=1))
    assert (nothing.counters, nothing.extra) == ({"pickup.without_code": 1}, [])
    with station.ledger.transaction(write=False) as tx:
        assert tx.location("WB0001") is None
        assert tx.location("WB0002") is not None


def test_a_replayed_delivery_deposit_issues_no_second_code(station: Station) -> None:
    envelope = station.envelope("locker-1", DepositBody(waybill="WB0001", purpose="delivery",
                                                        board=1, lock=2))  # fmt: skip
    first = station.clearance.handle(envelope)
    replay = station.clearance.handle(envelope)
    assert (replay.replayed, replay.pickup_code, replay.counters) == (True, None, {})
    assert replay.extra == first.extra  # the same list again, same version
    assert station.count(t.pickup_codes) == 1


def test_expired_codes_leave_the_list(station: Station) -> None:
    station.send("locker-1", DepositBody(waybill="WB0001", purpose="delivery", board=1, lock=2))
    station.clock.now += timedelta(days=8)
    later = station.send("locker-1", DepositBody(waybill="WB0002", purpose="delivery",
                                                  board=1, lock=3))  # fmt: skip
    assert [c.waybill for c in _codes(later).codes] == ["WB0002"]
