"""Compliance reports against a scenario with known counts: the real clearance engine
writes a real ledger (SQLite and PostgreSQL), the cold-chain figures are computed from
stored readings as the reporter does, device statuses go through the gateway's
converter into a real SQLite telemetry store; local days and months in Asia/Shanghai."""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import openpyxl  # type: ignore[import-untyped]
import pytest

from cloud_api.report_files import sections
from cloud_api.reports import (
    ComplianceReport,
    UnknownStation,
    compliance_report,
    period_of,
    report_csv,
    report_xlsx,
)
from contracts.envelope import AnyBody, AnyEnvelope, make_envelope
from contracts.events import InductionBody, XrayBody
from contracts.profiles import Limits
from contracts.station import DepositBody, DepositRequestBody, PickupBody
from contracts.telemetry import StatusBody, TemperatureBody
from gateway.clearance import Clearance, Outcome
from gateway.coldchain.exposure import daily_point, probe_exposure
from gateway.coldchain.metrics import (
    ACTIVATION_ENERGY_J_PER_MOL,
    GAS_CONSTANT_J_PER_MOL_K,
    ZERO_CELSIUS_K,
    day_window,
)
from gateway.convert import to_points
from gateway.ledger import Ledger
from gateway.personal import Keyring
from gateway.registry import DeviceEntry, Registry, Routing, StationEntry
from gateway.telemetry import TelemetryStore, open_store
from gateway.telemetry.config import SqliteStoreConfig
from tests.test_clearance import acceptance

BEIJING = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 12, 5, tzinfo=UTC)
"""When the reports are made: December has run for 4 days and 8 local hours."""
VILLAGE_23 = "411523105201"
ELSEWHERE = "320101001001"
LIMITS = Limits(2.0, 8.0)
MAX_GAP_S = 900.0
PROBE = ("village-23", "medbox-23", "medicine")


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A Beijing wall-clock time as aware UTC."""
    return datetime(year, month, day, hour, minute, tzinfo=BEIJING).astimezone(UTC)


def registry() -> Registry:
    return Registry(
        stations=[
            StationEntry(id="county-01", name="县中心", division="411523000000", tier="county"),
            StationEntry(id="town-05", name="镇站", division="411523105000", tier="township"),
            StationEntry(id="village-23", name="村点23", division=VILLAGE_23, tier="village"),
            StationEntry(id="village-24", name="村点24", division="411523105202", tier="village"),
            StationEntry(id="village-25", name="村点25", division="411523106201", tier="village"),
            StationEntry(id="village-99", name="外县", division=ELSEWHERE, tier="village"),
        ],
        devices=[
            DeviceEntry(id="counter-1", station="county-01", role="counter"),
            DeviceEntry(id="xray-1", station="county-01", role="xray"),
            DeviceEntry(id="sorter-1", station="county-01", role="sorter",
                        routing=Routing(exception_chute=99, routes={"4115": 3})),
            DeviceEntry(id="xray-5", station="town-05", role="xray"),
            DeviceEntry(id="locker-23", station="village-23", role="locker"),
            DeviceEntry(id="medbox-23", station="village-23", role="probe"),
            DeviceEntry(id="scanner-23", station="village-23", role="scanner"),
            DeviceEntry(id="locker-24", station="village-24", role="locker"),
            DeviceEntry(id="locker-25", station="village-25", role="locker"),
            DeviceEntry(id="locker-99", station="village-99", role="locker"),
        ],
    )  # fmt: skip


STATION_OF = {device.id: device.station for device in registry().devices}


class Scenario:
    """Sends events from the registry's devices through the clearance engine, each at
    its own time (the engine's clock and the envelope's), and statuses to the store."""

    def __init__(self, ledger: Ledger, store: TelemetryStore) -> None:
        self.ledger = ledger
        self.store = store
        self.now = NOW
        self.clearance = Clearance(ledger, Keyring.generate(), clock=lambda: self.now)
        self._seq: Counter[str] = Counter()

    def envelope(self, device: str, body: AnyBody, at: datetime) -> AnyEnvelope:
        self._seq[device] += 1
        return make_envelope(station=STATION_OF[device], device=device, boot=1,
                             seq=self._seq[device], ts=at, body=body)  # fmt: skip

    def send(self, device: str, body: AnyBody, at: datetime) -> Outcome:
        self.now = at
        return self.clearance.handle(self.envelope(device, body, at))

    def accept(self, waybill: str, at: datetime, destination: str = VILLAGE_23) -> None:
        self.send("counter-1", acceptance(waybill, destination=destination), at)

    def xray(self, waybill: str, verdict: str, at: datetime, device: str = "xray-1") -> None:
        fields = {"waybill": waybill, "verdict": verdict, "operator": "op-7", "image": "i.png"}
        self.send(device, XrayBody.model_validate({**fields, "scanned_at": at}), at)

    def induct(self, barcode: str | None, at: datetime) -> None:
        body = InductionBody(transaction=self._seq["sorter-1"] + 1, barcode=barcode,
                             scan_slot=None if barcode else 1)  # fmt: skip
        self.send("sorter-1", body, at)

    def deliver(self, waybill: str, lock: int, at: datetime, locker: str = "locker-23") -> None:
        self.send(locker, DepositBody(waybill=waybill, purpose="delivery", board=1, lock=lock), at)

    def pick_up(self, waybill: str, lock: int, at: datetime) -> None:
        self.send("locker-23", PickupBody(waybill=waybill, board=1, lock=lock), at)

    def status(self, device: str, state: str, at: datetime) -> None:
        body = StatusBody.model_validate({"state": state, "boot": 1, "version": "1.0"})
        self.store.write(to_points(self.envelope(device, body, at)))


def fill_ledger(s: Scenario) -> None:
    s.ledger.sync_registry(registry())
    # October
    s.deliver("DEL4", 4, local(2026, 10, 30, 10))  # still waiting, but October's
    s.accept("PAR4", local(2026, 10, 31, 23, 30))
    s.xray("PAR4", "PASS", local(2026, 10, 31, 23, 50))
    s.induct("PAR4", local(2026, 10, 31, 23, 52))  # routed
    with s.ledger.transaction() as tx:
        tx.add_hold("PAR4", "manual", local(2026, 10, 31, 23, 55))
    # November: parcels accepted at the county centre
    s.accept("PAR1", local(2026, 11, 1, 0, 30))  # 31 October in UTC
    s.xray("PAR1", "PASS", local(2026, 11, 1, 1))
    with s.ledger.transaction() as tx:  # no record: what an import from before leaves
        tx.add_parcel(waybill="LEG1", station="county-01", device="counter-1",
                      destination=VILLAGE_23, accepted_at=local(2026, 11, 10, 10),
                      clerk="clerk-1", request="import:LEG1")  # fmt: skip
    s.accept("PAR2", local(2026, 11, 15, 9))
    s.xray("PAR2", "SUSPECT", local(2026, 11, 16, 8))
    with s.ledger.transaction() as tx:
        hold = tx.open_hold("PAR2")
        assert hold is not None
        tx.release_hold(hold.id, by="qa", at=local(2026, 11, 16, 9))
    s.accept("PAR6", local(2026, 11, 20, 8), destination=ELSEWHERE)
    s.xray("PAR6", "PASS", local(2026, 11, 20, 8, 30))
    for minute, barcode in enumerate(["PAR1", "PAR1", "PAR2", None, "NOPE0001", "PAR6", "LEG1"]):
        s.induct(barcode, local(2026, 11, 20, 10, minute))
    # routed, duplicate_induction, no_xray (a released hold, SUSPECT), unknown_parcel,
    # no_realname (never accepted), unknown_destination, no_realname (no record)
    s.accept("PAR7", local(2026, 11, 21, 10))
    s.xray("PAR7", "FAIL", local(2026, 11, 21, 12), device="xray-5")  # held at the town
    s.accept("PAR3", local(2026, 11, 30, 23, 30))  # the month's last local half hour
    s.xray("PAR3", "FAIL", local(2026, 11, 30, 23, 40))
    s.induct("PAR3", local(2026, 11, 30, 23, 50))  # xray_hold
    s.accept("PAR5", local(2026, 12, 1, 0, 10))  # 30 November in UTC: December's
    s.induct("PAR5", local(2026, 12, 1, 0, 20))  # no_xray, December's
    # November: lockers at the village points
    s.deliver("DEL1", 1, local(2026, 11, 2, 10))
    s.pick_up("DEL1", 1, local(2026, 11, 2, 13))  # 3 h
    s.send("locker-23", DepositRequestBody(waybill="PAR1"), local(2026, 11, 3, 10))  # allowed
    s.send("locker-23", DepositRequestBody(waybill="NOPE0002"), local(2026, 11, 3, 10, 5))
    s.deliver("DEL2", 2, local(2026, 11, 5, 10))
    s.pick_up("DEL2", 2, local(2026, 11, 6, 7))  # 21 h
    s.deliver("DEL5", 1, local(2026, 11, 8, 10), locker="locker-24")
    s.deliver("DEL6", 1, local(2026, 11, 8, 10), locker="locker-99")  # another county
    s.deliver("DEL10", 1, local(2026, 11, 9, 10), locker="locker-25")  # another township
    s.deliver("DEL3", 3, local(2026, 11, 20, 10))  # waiting
    s.deliver("DEL7", 7, local(2026, 11, 21, 10))  # superseded by the next
    s.deliver("DEL7", 8, local(2026, 11, 21, 11))  # waiting
    s.deliver("DEL8", 9, local(2026, 11, 30, 23))
    s.pick_up("DEL8", 9, local(2026, 12, 1, 1))  # 2 h, issued in November
    s.deliver("DEL9", 10, local(2026, 12, 1, 0, 30))  # December's
    with s.ledger.transaction() as tx:  # as the cold-chain engine raises them
        for kind, at in (("temperature_high", local(2026, 11, 2, 12, 5)),
                         ("probe_offline", local(2026, 11, 9, 3)),
                         ("door_open", local(2026, 11, 12, 3)),
                         ("temperature_high", local(2026, 12, 1, 3))):  # fmt: skip
            tx.add_alert(station="village-23", kind=kind, waybill=None, severity="warning",
                         details={}, raised_at=at, subject="medbox-23/medicine",
                         device="medbox-23")  # fmt: skip
        tx.save_probe("village-23", "medbox-23", "vaccine", profile="vaccine")  # no figures


def temperature_on(day: date, minute: int) -> float | None:
    """The medicine probe's readings, every 10 minutes of five local days."""
    if day in (date(2026, 10, 31), date(2026, 12, 1)):
        return 30.0
    if day == date(2026, 11, 1):
        return 5.0
    if day == date(2026, 11, 2):
        return 12.0 if 12 * 60 <= minute < 14 * 60 else 5.0  # 120 min out of range
    if day == date(2026, 11, 30):
        return 9.0 if minute >= 20 * 60 else 4.0  # 240 min out of range
    return None


def fill_store(s: Scenario) -> None:
    first = date(2026, 10, 29)
    days = [first + timedelta(days=n) for n in range(36)]
    readings = []
    for day in days:
        for minute in range(0, 24 * 60, 10):
            celsius = temperature_on(day, minute)
            if celsius is not None:
                at = datetime.combine(day, time(), BEIJING) + timedelta(minutes=minute)
                body = TemperatureBody(probe="medicine", celsius=celsius)
                readings += to_points(s.envelope("medbox-23", body, at.astimezone(UTC)))
    s.store.write(readings)
    for day in days:  # as gateway.coldchain.reporting measures each ended day
        start_ns, end_ns = day_window(day, BEIJING)
        exposure = probe_exposure(s.store, *PROBE, start_ns, end_ns, LIMITS, MAX_GAP_S)
        if exposure.covered_s > 0:
            s.store.write([daily_point(*PROBE, day, "pharma", LIMITS, exposure)])
    s.status("locker-23", "online", local(2025, 6, 1))  # more than a year before November
    s.status("medbox-23", "online", local(2026, 10, 25))
    s.status("medbox-23", "offline", local(2026, 11, 10, 6))
    s.status("medbox-23", "online", local(2026, 11, 10, 18))


@pytest.fixture
def scenario(ledger_url: str, tmp_path: Path) -> Iterator[Scenario]:
    store = open_store(SqliteStoreConfig(kind="sqlite", path=tmp_path / "telemetry.sqlite"))
    store.open()
    with Ledger(ledger_url) as ledger:
        s = Scenario(ledger, store)
        fill_ledger(s)
        fill_store(s)
        yield s
    store.close()


def report(s: Scenario, station: str, *, day: str | None = None,
           month: str | None = None) -> ComplianceReport:  # fmt: skip
    return compliance_report(s.ledger, s.store, station,
                             period_of(day=day, month=month, tz=BEIJING), now=NOW)  # fmt: skip


def reasons(**counts: int) -> dict[str, int]:
    """Sort exceptions by reason: every reason, in the contract's order."""
    names = ["no_realname", "no_xray", "xray_hold", "unknown_destination",
             "duplicate_induction", "unknown_parcel"]  # fmt: skip
    return {name: counts.get(name, 0) for name in names}


def mkt(minutes_at: Mapping[float, float]) -> float:
    """The MKT formula, written out: minutes at each temperature (°C) → °C."""
    ratio = ACTIVATION_ENERGY_J_PER_MOL / GAS_CONSTANT_J_PER_MOL_K
    total = sum(minutes_at.values())
    term = sum(w * math.exp(-ratio / (c + ZERO_CELSIUS_K)) for c, w in minutes_at.items())
    return ratio / -math.log(term / total) - ZERO_CELSIUS_K


# -- the ledger's figures --------------------------------------------------------------


def test_a_county_month_counts_its_parcels_holds_and_decisions(scenario: Scenario) -> None:
    november = report(scenario, "county-01", month="2026-11")
    assert november.period.model_dump() == {
        "kind": "month", "label": "2026-11", "start": "2026-10-31T16:00:00.000Z",
        "end": "2026-11-30T16:00:00.000Z", "timezone": "Asia/Shanghai",
    }  # fmt: skip
    assert (november.name, november.division, november.tier) == ("县中心", "411523000000", "county")
    # PAR1, PAR2, PAR3, PAR6, PAR7 and LEG1 (no record, never X-rayed); not PAR4 (October)
    # nor PAR5 (December)
    assert november.realname.model_dump() == {"outbound": 6, "with_record": 5, "ratio": 5 / 6}
    assert november.xray.model_dump() == {
        "outbound": 6, "screened": 5, "ratio": 5 / 6,
        "verdicts": {"PASS": 2, "SUSPECT": 1, "FAIL": 1},  # PAR7's FAIL was at the town
    }  # fmt: skip
    assert november.holds.model_dump() == {
        "opened": 3, "released": 1, "still_open": 2,
        "reasons": {"xray_fail": 2, "xray_suspect": 1},
    }  # fmt: skip
    assert november.exceptions.model_dump() == {
        "routed": 1,
        "sort": reasons(no_realname=2, no_xray=1, xray_hold=1, unknown_destination=1,
                        duplicate_induction=1, unknown_parcel=1),
        "deposit_refused": {"no_realname": 0},
    }  # fmt: skip
    assert november.coldchain.alerts == {}  # its xray_hold alerts are holds, not cold chain
    assert november.coldchain.probes == []
    assert november.dwell.deposited == 0
    assert [(d.station, d.name, d.deliveries) for d in november.deliveries] == [
        ("village-23", "村点23", 6), ("village-24", "村点24", 1), ("village-25", "村点25", 1)
    ]  # fmt: skip
    assert [(u.device, u.role, u.online_ratio) for u in november.uptime] == [
        ("counter-1", "counter", None), ("sorter-1", "sorter", None), ("xray-1", "xray", None)
    ]  # fmt: skip


def test_the_month_before_has_only_its_own(scenario: Scenario) -> None:
    october = report(scenario, "county-01", month="2026-10")
    assert (october.realname.outbound, october.realname.with_record, october.xray.screened) == (
        1, 1, 1
    )  # fmt: skip
    assert october.xray.verdicts == {"PASS": 1, "SUSPECT": 0, "FAIL": 0}
    assert october.holds.model_dump() == {
        "opened": 1, "released": 0, "still_open": 1, "reasons": {"manual": 1}
    }  # fmt: skip
    assert (october.exceptions.routed, october.exceptions.sort) == (1, reasons())
    assert [(d.station, d.deliveries) for d in october.deliveries] == [
        ("village-23", 1), ("village-24", 0), ("village-25", 0)
    ]  # fmt: skip


def test_a_local_day_runs_from_local_midnight_to_local_midnight(scenario: Scenario) -> None:
    """23:30 on 30 November in Beijing is November's; 00:10 on 1 December (16:10 UTC on
    30 November) is not; 00:30 on 1 November (16:30 UTC on 31 October) is."""
    last = report(scenario, "county-01", day="2026-11-30")
    assert last.period.start == "2026-11-29T16:00:00.000Z"
    assert last.realname.model_dump() == {"outbound": 1, "with_record": 1, "ratio": 1.0}
    assert (last.xray.screened, last.xray.verdicts) == (1, {"PASS": 0, "SUSPECT": 0, "FAIL": 1})
    assert last.holds.model_dump() == {
        "opened": 1, "released": 0, "still_open": 1, "reasons": {"xray_fail": 1}
    }  # fmt: skip
    assert (last.exceptions.routed, last.exceptions.sort) == (0, reasons(xray_hold=1))
    assert [(d.station, d.deliveries) for d in last.deliveries] == [
        ("village-23", 1), ("village-24", 0), ("village-25", 0)
    ]  # fmt: skip
    first = report(scenario, "county-01", day="2026-11-01")
    assert first.realname.model_dump() == {"outbound": 1, "with_record": 1, "ratio": 1.0}
    assert first.xray.verdicts == {"PASS": 1, "SUSPECT": 0, "FAIL": 0}
    december = report(scenario, "county-01", day="2026-12-01")
    assert december.xray.model_dump() == {
        "outbound": 1, "screened": 0, "ratio": 0.0,
        "verdicts": {"PASS": 0, "SUSPECT": 0, "FAIL": 0},
    }  # fmt: skip
    assert december.exceptions.sort == reasons(no_xray=1)
    empty = report(scenario, "county-01", day="2026-11-02")
    assert (empty.realname.outbound, empty.realname.ratio, empty.xray.ratio) == (0, None, None)


def test_a_township_sees_holds_of_its_xray_and_its_village_points(scenario: Scenario) -> None:
    town = report(scenario, "town-05", month="2026-11")
    assert (town.realname.outbound, town.realname.ratio) == (0, None)
    assert town.xray.verdicts == {"PASS": 0, "SUSPECT": 0, "FAIL": 1}
    assert town.holds.model_dump() == {
        "opened": 1, "released": 0, "still_open": 1, "reasons": {"xray_fail": 1}
    }  # fmt: skip
    assert town.coldchain.alerts == {}
    assert [(d.station, d.deliveries) for d in town.deliveries] == [
        ("village-23", 6), ("village-24", 1)
    ]  # fmt: skip


def test_a_village_month_counts_refusals_dwell_alerts_and_itself(scenario: Scenario) -> None:
    november = report(scenario, "village-23", month="2026-11")
    assert november.exceptions.model_dump() == {
        "routed": 0, "sort": reasons(), "deposit_refused": {"no_realname": 1}
    }  # fmt: skip
    # DEL1 3 h, DEL2 21 h, DEL8 2 h (picked up in December); DEL3 and the second DEL7 waiting;
    # the first DEL7 superseded; not DEL4 (October) nor DEL9 (December)
    assert november.dwell.model_dump() == {
        "deposited": 6, "picked_up": 3, "superseded": 1, "waiting": 2,
        "mean_h": pytest.approx(26 / 3), "median_h": 3.0, "max_h": 21.0,
    }  # fmt: skip
    assert november.coldchain.alerts == {"door_open": 1, "probe_offline": 1, "temperature_high": 1}
    assert [(d.station, d.deliveries) for d in november.deliveries] == [("village-23", 6)]
    assert (november.realname.outbound, november.holds.opened) == (0, 0)
    day = report(scenario, "village-23", day="2026-11-21")
    assert day.dwell.model_dump() == {
        "deposited": 2, "picked_up": 0, "superseded": 1, "waiting": 1,
        "mean_h": None, "median_h": None, "max_h": None,
    }  # fmt: skip
    last = report(scenario, "village-23", day="2026-11-30")
    assert (last.dwell.deposited, last.dwell.picked_up, last.dwell.mean_h) == (1, 1, 2.0)
    assert last.coldchain.alerts == {}


# -- the store's figures ---------------------------------------------------------------


def test_a_month_of_cold_chain_is_combined_exactly_from_its_days(scenario: Scenario) -> None:
    """The month's mean and MKT from the daily figures equal those of all the month's
    readings at once: each day is weighted by its covered time."""
    november = report(scenario, "village-23", month="2026-11")
    medicine, vaccine = november.coldchain.probes
    # 1 Nov at 5 °C; 2 Nov at 5 °C but 2 h at 12 °C; 5 min of 3 Nov held by the last
    # reading of the 2nd (it counts on both days); 30 Nov 20 h at 4 °C and 4 h at 9 °C.
    minutes = {5.0: 1440 + 1320 + 5, 12.0: 120, 4.0: 1200, 9.0: 240}
    assert medicine.model_dump() == {
        "device": "medbox-23", "probe": "medicine", "profile": "pharma",
        "low_c": 2.0, "high_c": 8.0, "days": 4, "readings": 3 * 144 + 1,
        "covered_h": pytest.approx(72 + 5 / 60), "out_of_range_min": 360.0,
        "min_c": 4.0, "max_c": 12.0,
        "mean_c": pytest.approx(sum(c * w for c, w in minutes.items()) / 4325),
        "mkt_c": pytest.approx(mkt(minutes), abs=1e-9),
    }  # fmt: skip
    whole = probe_exposure(scenario.store, *PROBE, *_window(november), LIMITS, MAX_GAP_S)
    assert medicine.covered_h * 3600 == pytest.approx(whole.covered_s)
    assert medicine.mean_c == pytest.approx(whole.mean_c, abs=1e-12)
    assert medicine.mkt_c == pytest.approx(whole.mkt_c, abs=1e-9)
    assert vaccine.model_dump() == {
        "device": "medbox-23", "probe": "vaccine", "profile": None, "low_c": None,
        "high_c": None, "days": 0, "readings": 0, "covered_h": 0.0, "out_of_range_min": 0.0,
        "min_c": None, "max_c": None, "mean_c": None, "mkt_c": None,
    }  # fmt: skip


def test_a_day_and_the_month_before_have_their_own_cold_chain(scenario: Scenario) -> None:
    [last, _] = report(scenario, "village-23", day="2026-11-30").coldchain.probes
    assert (last.days, last.readings, last.covered_h, last.out_of_range_min) == (1, 144, 24, 240)
    assert (last.min_c, last.max_c) == (4.0, 9.0)
    assert last.mean_c == pytest.approx((1200 * 4 + 240 * 9) / 1440)
    assert last.mkt_c == pytest.approx(mkt({4.0: 1200, 9.0: 240}), abs=1e-9)
    [october, _] = report(scenario, "village-23", month="2026-10").coldchain.probes
    assert (october.days, october.out_of_range_min, october.mean_c, october.mkt_c) == (
        1, 1440.0, 30.0, 30.0
    )  # fmt: skip


def test_uptime_takes_the_state_at_the_start_however_old(scenario: Scenario) -> None:
    """medbox-23 was offline 12 h on 10 November; locker-23's only status is from
    June 2025; scanner-23 never sent one."""
    november = {u.device: u for u in report(scenario, "village-23", month="2026-11").uptime}
    assert november["medbox-23"].model_dump() == {
        "device": "medbox-23", "role": "probe", "online_ratio": 708 / 720, "online_h": 708.0
    }  # fmt: skip
    assert (november["locker-23"].online_ratio, november["locker-23"].online_h) == (1.0, 720.0)
    assert november["scanner-23"].model_dump() == {
        "device": "scanner-23", "role": "scanner", "online_ratio": None, "online_h": 0.0
    }  # fmt: skip
    day = {u.device: u for u in report(scenario, "village-23", day="2026-11-10").uptime}
    assert (day["medbox-23"].online_ratio, day["medbox-23"].online_h) == (0.5, 12.0)
    # October: medbox-23's first status came on the 25th; before it, it was not online.
    october = {u.device: u for u in report(scenario, "village-23", month="2026-10").uptime}
    assert october["medbox-23"].online_h == 7 * 24
    assert october["medbox-23"].online_ratio == pytest.approx(7 / 31)
    # December so far: up to NOW, 4 days and 8 hours after its start.
    december = {u.device: u for u in report(scenario, "village-23", month="2026-12").uptime}
    assert (december["medbox-23"].online_ratio, december["medbox-23"].online_h) == (1.0, 104.0)
    future = {u.device: u for u in report(scenario, "village-23", month="2027-01").uptime}
    assert future["medbox-23"].online_ratio is None


def _window(report: ComplianceReport) -> tuple[int, int]:
    start = datetime.fromisoformat(report.period.start)
    end = datetime.fromisoformat(report.period.end)
    return int(start.timestamp()) * 10**9, int(end.timestamp()) * 10**9


# -- files -----------------------------------------------------------------------------


def _csv_sections(text: str) -> dict[str, list[list[str]]]:
    found: dict[str, list[list[str]]] = {}
    rows: list[list[str]] = []
    for row in csv.reader(io.StringIO(text)):
        if len(row) == 1 and row[0].startswith("# "):
            rows = found.setdefault(row[0][2:], [])
        elif row:
            rows.append(row)
    return found


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def test_the_csv_reads_back_section_by_section(scenario: Scenario) -> None:
    november = report(scenario, "village-23", month="2026-11")
    read = _csv_sections(report_csv(november))
    assert read == {
        s.title: [s.header, *[[_text(v) for v in row] for row in s.rows]]
        for s in sections(november)
    }
    assert read["coverage"][1:] == [
        ["real-name records", "0", "0", ""], ["X-ray screened", "0", "0", ""]
    ]  # fmt: skip
    assert read["locker dwell"] == [
        ["deposited", "picked_up", "superseded", "waiting", "mean_h", "median_h", "max_h"],
        ["6", "3", "1", "2", str(26 / 3), "3.0", "21.0"],
    ]
    assert read["deliveries"][1] == ["village-23", "村点23", VILLAGE_23, "6"]
    assert read["exceptions"][-1] == ["deposit refused", "no_realname", "1"]


def test_the_workbook_has_a_sheet_per_section(scenario: Scenario) -> None:
    november = report(scenario, "county-01", month="2026-11")
    workbook = openpyxl.load_workbook(io.BytesIO(report_xlsx(november)), read_only=True)
    try:
        sheets = {sheet.title: list(sheet.iter_rows(values_only=True)) for sheet in workbook}
    finally:
        workbook.close()
    assert sheets == {
        s.title: [tuple(s.header), *[tuple(row) for row in s.rows]] for s in sections(november)
    }
    assert sheets["coverage"][1] == ("real-name records", 6, 5, pytest.approx(5 / 6))
    assert sheets["exceptions"][1:4] == [
        ("sort", "(routed)", 1), ("sort", "no_realname", 2), ("sort", "no_xray", 1)
    ]  # fmt: skip
    assert sheets["report"][1][:5] == ("county-01", "县中心", "411523000000", "county", "2026-11")


def test_every_field_of_the_report_is_documented() -> None:
    """The OpenAPI document shows these descriptions."""
    schema = ComplianceReport.model_json_schema()
    undocumented = [
        f"{name}.{field}"
        for name, shape in [("ComplianceReport", schema), *schema["$defs"].items()]
        for field, spec in shape["properties"].items()
        if not spec.get("description")
    ]
    assert undocumented == []


# -- periods and stations --------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "month", "message"),
    [
        (None, None, "exactly one"),
        ("2026-11-01", "2026-11", "exactly one"),
        ("2026-02-30", None, "not a day or month"),
        (None, "2026-13", "not a day or month"),
        ("20261101", None, "YYYY-MM-DD"),
        ("2026-W47-1", None, "YYYY-MM-DD"),
        (None, "2026-1", "YYYY-MM"),
        (None, " 2026-11", "YYYY-MM"),
        (None, "٢٠٢٦-١١", "YYYY-MM"),  # Arabic-Indic digits are digits to int(), not here
        ("9999-12-31", None, "years 1970 to 2261"),
        (None, "1969-12", "years 1970 to 2261"),
    ],
)
def test_a_bad_period_is_refused_saying_why(day: str | None, month: str | None,
                                            message: str) -> None:  # fmt: skip
    with pytest.raises(ValueError, match=message):
        period_of(day=day, month=month, tz=BEIJING)


def test_periods_are_local_calendar_days_and_months() -> None:
    december = period_of(day=None, month="2026-12", tz=BEIJING)
    assert (december.kind, december.label) == ("month", "2026-12")
    assert (december.start, december.end) == (
        datetime(2026, 12, 1, tzinfo=BEIJING), datetime(2027, 1, 1, tzinfo=BEIJING)
    )  # fmt: skip
    day = period_of(day="2026-11-30", month=None, tz=BEIJING)
    assert (day.kind, day.label, day.end - day.start) == ("day", "2026-11-30", timedelta(days=1))
    berlin = ZoneInfo("Europe/Berlin")  # a month with the change to summer time
    march = period_of(day=None, month="2026-03", tz=berlin)
    assert march.end.astimezone(UTC) - march.start.astimezone(UTC) == timedelta(days=31, hours=-1)


def test_an_unknown_station_is_a_lookup_error(scenario: Scenario) -> None:
    with pytest.raises(UnknownStation):
        report(scenario, "nowhere", month="2026-11")
    assert issubclass(UnknownStation, LookupError)
