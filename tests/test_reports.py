"""Compliance reports against a scenario with known counts, on SQLite and PostgreSQL
ledgers and a real SQLite telemetry store; local days and months in Asia/Shanghai."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import openpyxl  # type: ignore[import-untyped]
import pytest

from cloud_api.reports import (
    ComplianceReport,
    UnknownStation,
    compliance_report,
    period_of,
    report_csv,
    report_xlsx,
)
from gateway.coldchain.exposure import COLDCHAIN_DAILY
from gateway.convert import DEVICE_STATUS
from gateway.ledger import DecisionRow, Ledger, LedgerTx, RealnameRow
from gateway.registry import DeviceEntry, Registry, Routing, StationEntry
from gateway.telemetry import TelemetryPoint, TelemetryStore, open_store
from gateway.telemetry.config import SqliteStoreConfig

BEIJING = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 12, 5, tzinfo=UTC)


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=BEIJING).astimezone(UTC)  # type: ignore[misc]


def registry() -> Registry:
    return Registry(
        stations=[
            StationEntry(id="county-01", name="县中心", division="411523000000", tier="county"),
            StationEntry(id="town-05", name="镇站", division="411523105000", tier="township"),
            StationEntry(id="village-23", name="村点23", division="411523105201", tier="village"),
            StationEntry(id="village-24", name="村点24", division="411523105202", tier="village"),
            StationEntry(id="village-99", name="外省", division="320101000001", tier="village"),
        ],
        devices=[
            DeviceEntry(id="counter-1", station="county-01", role="counter"),
            DeviceEntry(id="xray-1", station="county-01", role="xray"),
            DeviceEntry(id="sorter-1", station="county-01", role="sorter",
                        routing=Routing(exception_chute=99, routes={"4115": 3})),
            DeviceEntry(id="locker-23", station="village-23", role="locker"),
            DeviceEntry(id="medbox-23", station="village-23", role="probe"),
            DeviceEntry(id="locker-24", station="village-24", role="locker"),
            DeviceEntry(id="locker-99", station="village-99", role="locker"),
        ],
    )  # fmt: skip


def parcel(tx: LedgerTx, waybill: str, at: datetime, *, realname: bool) -> None:
    tx.add_parcel(waybill=waybill, station="county-01", device="counter-1",
                  destination="411523105201", accepted_at=at, clerk="clerk-1",
                  request=f"counter-1:{waybill}")  # fmt: skip
    if realname:
        tx.add_realname(waybill, RealnameRow("resident", "k1", b"n" * 12, b"c", f"h-{waybill}",
                                             "1101**********002X", "张*", None))  # fmt: skip


def xray(tx: LedgerTx, waybill: str, verdict: str, at: datetime) -> None:
    tx.add_xray(waybill=waybill, verdict=verdict, operator="op-1", image="i.png",
                scanned_at=at, station="county-01", device="xray-1",
                request=f"xray-1:{waybill}:{verdict}")  # fmt: skip


def decision(tx: LedgerTx, n: int, device: str, station: str, kind: str, outcome: str,
             reason: str | None, at: datetime) -> None:  # fmt: skip
    tx.add_decision(DecisionRow(id=f"dec:{n}", station=station, device=device,
                                request=f"r{n}", waybill=None, kind=kind, outcome=outcome,
                                reason=reason, facts={}, body=None, decided_at=at))  # fmt: skip


def code(tx: LedgerTx, n: int, locker: str, station: str, issued: datetime,
         picked: datetime | None) -> None:  # fmt: skip
    tx.add_pickup_code(waybill=f"D{n}", station=station, device=locker, board=1, lock=n % 24 + 1,
                       salt="s", code_hash="h", issued_at=issued, expires_at=None)  # fmt: skip
    if picked is not None:
        tx.close_codes(device=locker, waybill=f"D{n}", at=picked, closed="pickup")


def fill_ledger(ledger: Ledger) -> None:
    ledger.sync_registry(registry())
    with ledger.transaction() as tx:
        parcel(tx, "P1", local(2026, 11, 1, 0, 30), realname=True)  # 31 Oct in UTC
        parcel(tx, "P2", local(2026, 11, 15, 9, 0), realname=True)
        parcel(tx, "P3", local(2026, 11, 30, 23, 30), realname=False)
        parcel(tx, "P4", local(2026, 10, 31, 23, 30), realname=True)  # October
        parcel(tx, "P5", local(2026, 12, 1, 0, 10), realname=True)  # 30 Nov in UTC: December
        xray(tx, "P1", "PASS", local(2026, 11, 1, 1, 0))
        xray(tx, "P3", "FAIL", local(2026, 11, 30, 23, 40))
        xray(tx, "P4", "PASS", local(2026, 10, 31, 23, 50))
        tx.add_hold("P3", "xray_fail", local(2026, 11, 30, 23, 40))
        released = tx.add_hold("P2", "manual", local(2026, 11, 16, 8, 0))
        tx.release_hold(released, by="qa", at=local(2026, 11, 16, 9, 0))
        tx.add_hold("P4", "manual", local(2026, 10, 31, 23, 55))  # October
        sorts = [("routed", None), ("exception", "no_xray"), ("exception", "no_xray"),
                 ("exception", "no_realname")]  # fmt: skip
        for n, (outcome, reason) in enumerate(sorts):
            decision(tx, n, "sorter-1", "county-01", "sort", outcome, reason,
                     local(2026, 11, 20, 10, n))  # fmt: skip
        decision(tx, 10, "sorter-1", "county-01", "sort", "exception", "no_xray",
                 local(2026, 10, 20, 10, 0))  # fmt: skip
        decision(tx, 11, "locker-23", "village-23", "deposit", "refused", "no_realname",
                 local(2026, 11, 3, 10, 0))  # fmt: skip
        code(tx, 1, "locker-23", "village-23", local(2026, 11, 2, 10), local(2026, 11, 2, 13))
        code(tx, 2, "locker-23", "village-23", local(2026, 11, 5, 10), local(2026, 11, 6, 7))
        code(tx, 3, "locker-23", "village-23", local(2026, 11, 20, 10), None)
        code(tx, 4, "locker-23", "village-23", local(2026, 10, 30, 10), None)  # October
        code(tx, 5, "locker-24", "village-24", local(2026, 11, 8, 10), None)
        code(tx, 7, "locker-23", "village-23", local(2026, 11, 21, 10), None)
        tx.close_codes(
            device="locker-23", waybill="D7", at=local(2026, 11, 21, 11), closed="superseded"
        )  # a new code replaced it: neither picked up nor waiting
        code(tx, 6, "locker-99", "village-99", local(2026, 11, 8, 10), None)  # elsewhere
        for kind, at in (("temperature_high", local(2026, 11, 2, 3)),
                         ("probe_offline", local(2026, 11, 9, 3)),
                         ("temperature_high", local(2026, 12, 1, 3))):  # fmt: skip
            tx.add_alert(station="village-23", kind=kind, waybill=None, severity="warning",
                         details={}, raised_at=at, subject="medbox-23/medicine",
                         device="medbox-23")  # fmt: skip


def _ns(at: datetime) -> int:
    return int(at.timestamp()) * 10**9


def daily(day: int, month: int, *, mkt: float, mean: float, low: float, high: float,
          out_min: float) -> TelemetryPoint:  # fmt: skip
    return TelemetryPoint(
        measurement=COLDCHAIN_DAILY,
        tags={"station": "village-23", "device": "medbox-23", "probe": "medicine"},
        fields={"day": f"2026-{month:02d}-{day:02d}", "profile": "pharma", "readings": 100,
                "covered_s": 86_400.0, "out_of_range_min": out_min, "min_c": low,
                "max_c": high, "mean_c": mean, "mkt_c": mkt, "low_c": 2.0, "high_c": 8.0},
        time_ns=_ns(local(2026, month, day)),
    )  # fmt: skip


def status(state: str, at: datetime) -> TelemetryPoint:
    return TelemetryPoint(
        measurement=DEVICE_STATUS,
        tags={"station": "village-23", "device": "medbox-23"},
        fields={"state": state},
        time_ns=_ns(at),
    )


def fill_store(store: TelemetryStore) -> None:
    store.write([
        daily(31, 10, mkt=30.0, mean=30.0, low=30.0, high=30.0, out_min=999.0),  # October
        daily(1, 11, mkt=5.0, mean=5.0, low=4.0, high=6.0, out_min=0.0),
        daily(2, 11, mkt=15.0, mean=14.0, low=12.0, high=16.0, out_min=60.0),
        status("online", local(2026, 10, 25)),  # before the month: its state at the start
        status("offline", local(2026, 11, 10)),
        status("online", local(2026, 11, 11)),
    ])  # fmt: skip


@pytest.fixture
def sources(ledger_url: str, tmp_path: Path) -> Iterator[tuple[Ledger, TelemetryStore]]:
    store = open_store(SqliteStoreConfig(kind="sqlite", path=tmp_path / "telemetry.sqlite"))
    store.open()
    with Ledger(ledger_url) as ledger:
        fill_ledger(ledger)
        fill_store(store)
        yield ledger, store
    store.close()


def report(sources: tuple[Ledger, TelemetryStore], station: str, *, day: str | None = None,
           month: str | None = None) -> ComplianceReport:  # fmt: skip
    period = period_of(day=day, month=month, tz=BEIJING)
    return compliance_report(*sources, station, period, now=NOW)


def test_county_month_coverage_holds_and_exceptions(
    sources: tuple[Ledger, TelemetryStore],
) -> None:
    november = report(sources, "county-01", month="2026-11")
    assert november.period.start == "2026-10-31T16:00:00.000Z"
    assert november.period.end == "2026-11-30T16:00:00.000Z"
    assert (november.realname.outbound, november.realname.with_record) == (3, 2)
    assert november.realname.ratio == pytest.approx(2 / 3)
    assert (november.xray.screened, november.xray.verdicts) == (
        2, {"PASS": 1, "SUSPECT": 0, "FAIL": 1}
    )  # fmt: skip
    assert november.holds.model_dump() == {"opened": 2, "released": 1, "still_open": 1}
    assert november.exceptions.model_dump() == {
        "routed": 1, "sort": {"no_xray": 2, "no_realname": 1}, "deposit_refused": {},
    }  # fmt: skip
    assert [(d.station, d.deliveries) for d in november.deliveries] == [
        ("village-23", 4), ("village-24", 1)
    ]  # fmt: skip
    october = report(sources, "county-01", month="2026-10")
    assert (october.realname.outbound, october.holds.opened, october.exceptions.sort) == (
        1, 1, {"no_xray": 1}
    )  # fmt: skip


def test_a_local_day_ends_at_local_midnight(sources: tuple[Ledger, TelemetryStore]) -> None:
    last = report(sources, "county-01", day="2026-11-30")
    assert (last.realname.outbound, last.realname.with_record, last.realname.ratio) == (1, 0, 0.0)
    first = report(sources, "county-01", day="2026-11-01")
    assert (first.realname.outbound, first.xray.screened) == (1, 1)
    empty = report(sources, "county-01", day="2026-11-02")
    assert (empty.realname.outbound, empty.realname.ratio, empty.xray.ratio) == (0, None, None)


def test_village_month_cold_chain_dwell_uptime_and_refusals(
    sources: tuple[Ledger, TelemetryStore],
) -> None:
    november = report(sources, "village-23", month="2026-11")
    [probe] = november.coldchain.probes
    assert (probe.device, probe.probe, probe.profile, probe.days, probe.readings) == (
        "medbox-23", "medicine", "pharma", 2, 200
    )  # fmt: skip
    assert (probe.covered_h, probe.out_of_range_min, probe.min_c, probe.max_c) == (
        48.0, 60.0, 4.0, 16.0
    )  # fmt: skip
    assert probe.mean_c == pytest.approx(9.5)
    # Two equally long days with MKTs of 5 °C and 15 °C, computed here from the formula.
    ratio = 83_144.0 / 8.314462618
    term = (math.exp(-ratio / 278.15) + math.exp(-ratio / 288.15)) / 2
    assert probe.mkt_c == pytest.approx(ratio / -math.log(term) - 273.15, abs=1e-9)
    assert november.coldchain.alerts == {"temperature_high": 1, "probe_offline": 1}
    assert november.dwell.model_dump() == {
        "deposited": 4, "picked_up": 2, "waiting": 1, "mean_h": 12.0, "median_h": 12.0,
        "max_h": 21.0,
    }  # fmt: skip
    uptime = {u.device: u for u in november.uptime}
    assert uptime["medbox-23"].online_ratio == pytest.approx(29 / 30)
    assert uptime["medbox-23"].online_h == pytest.approx(29 * 24)
    assert uptime["locker-23"].online_ratio is None
    assert november.exceptions.deposit_refused == {"no_realname": 1}
    assert [(d.station, d.deliveries) for d in november.deliveries] == [("village-23", 4)]


def test_township_lists_its_village_points(sources: tuple[Ledger, TelemetryStore]) -> None:
    town = report(sources, "town-05", month="2026-11")
    assert [d.station for d in town.deliveries] == ["village-23", "village-24"]


def test_csv_and_xlsx_hold_the_same_figures(sources: tuple[Ledger, TelemetryStore]) -> None:
    november = report(sources, "county-01", month="2026-11")
    rows = list(csv.reader(io.StringIO(report_csv(november))))
    assert ["# coverage"] in rows
    coverage = rows[rows.index(["# coverage"]) + 2 : rows.index(["# coverage"]) + 4]
    assert coverage == [
        ["real-name records", "3", "2", str(2 / 3)], ["X-ray screened", "3", "2", str(2 / 3)]
    ]  # fmt: skip
    workbook = openpyxl.load_workbook(io.BytesIO(report_xlsx(november)), read_only=True)
    try:
        sheets = {sheet.title: list(sheet.iter_rows(values_only=True)) for sheet in workbook}
    finally:
        workbook.close()
    assert sheets["coverage"][1] == ("real-name records", 3, 2, pytest.approx(2 / 3))
    assert sheets["exceptions"][1:] == [
        ("sort", "(routed)", 1), ("sort", "no_realname", 1), ("sort", "no_xray", 2)
    ]  # fmt: skip
    assert sheets["report"][1][:5] == ("county-01", "县中心", "411523000000", "county", "2026-11")


def test_bad_periods_and_stations(sources: tuple[Ledger, TelemetryStore]) -> None:
    for day, month in ((None, None), ("2026-11-01", "2026-11"), ("2026-02-30", None),
                       (None, "2026-13")):  # fmt: skip
        with pytest.raises(ValueError, match=r"day|month"):
            period_of(day=day, month=month, tz=BEIJING)
    with pytest.raises(UnknownStation):
        report(sources, "nowhere", month="2026-11")
    december = period_of(day=None, month="2026-12", tz=BEIJING)
    assert december.end == datetime(2027, 1, 1, tzinfo=BEIJING)
    assert december.start + timedelta(days=31) == december.end
