"""The cold-chain engine on a real ledger (SQLite and PostgreSQL): a replayed day with
known excursions, restarts, people acknowledging and resolving, profiles set by command,
cold doors and parcel stays."""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import pytest

from contracts import AnyBody, AnyEnvelope, make_envelope
from contracts.commands import CommandResultBody
from contracts.envelope import TemperatureEnvelope
from contracts.events import DoorBody
from contracts.station import DepositBody, PickupBody
from contracts.telemetry import TemperatureBody
from gateway.coldchain.config import ColdChainConfig, CompartmentConfig, ProbeAssignment
from gateway.coldchain.engine import ColdChainEngine, Notice
from gateway.coldchain.exposure import read_daily
from gateway.coldchain.reporting import CATCH_UP_DAYS, Reporter
from gateway.convert import temperature_point
from gateway.ledger import Ledger
from gateway.metrics import Counters
from gateway.registry import DeviceEntry, Registry, StationEntry
from gateway.telemetry import open_store
from gateway.telemetry.config import SqliteStoreConfig
from gateway.telemetry.model import TelemetryStore

STATION = "village-1"
PROBE = ("medbox", "medicine")
DAY = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)  # 2026-11-25 00:00 in Asia/Shanghai

CONFIG = ColdChainConfig(
    probes=[ProbeAssignment(station=STATION, device="medbox", probe="medicine", profile="pharma")],
    compartments=[
        CompartmentConfig(
            station=STATION,
            locker="locker-1",
            board=0,
            lock=3,
            probe_device="locker-1",
            probe="cold-1",
            door_open_max_s=120,
        )
    ],
)


def registry() -> Registry:
    return Registry(
        stations=[
            StationEntry(id=STATION, name="村服务站", division="410523101001", tier="village")
        ],
        devices=[
            DeviceEntry(id="medbox", station=STATION, role="probe"),
            DeviceEntry(id="locker-1", station=STATION, role="locker"),
        ],
    )


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    with Ledger(ledger_url) as opened:
        opened.sync_registry(registry())
        yield opened


@dataclass
class Replay:
    """Feeds envelopes and minute ticks through an engine, as the worker would."""

    ledger: Ledger
    engine: ColdChainEngine = field(default_factory=lambda: ColdChainEngine(CONFIG))
    notices: list[Notice] = field(default_factory=list)
    seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    sent: list[AnyEnvelope] = field(default_factory=list)
    store: TelemetryStore | None = None

    def __post_init__(self) -> None:
        with self.ledger.transaction() as tx:
            self.engine.load(tx)

    def envelope(self, device: str, at: datetime, body: AnyBody) -> AnyEnvelope:
        envelope = make_envelope(
            station=STATION, device=device, boot=1, seq=next(self.seq), ts=at, body=body
        )
        self.sent.append(envelope)
        return envelope

    def apply(self, envelope: AnyEnvelope) -> None:
        with self.ledger.transaction() as tx:
            self.notices += self.engine.apply(tx, envelope)

    def reading(self, at: datetime, celsius: float, probe: tuple[str, str] = PROBE) -> None:
        envelope = self.envelope(probe[0], at, TemperatureBody(probe=probe[1], celsius=celsius))
        if self.store is not None:  # as the telemetry path stores it
            assert isinstance(envelope, TemperatureEnvelope)
            self.store.write([temperature_point(envelope)])
        self.apply(envelope)

    def tick(self, now: datetime) -> None:
        with self.ledger.transaction() as tx:
            self.notices += self.engine.people(tx, now) + self.engine.tick(tx, now)

    def changes(self) -> list[tuple[str, str, str]]:
        return [(n.change, n.alert.kind, n.alert.id) for n in self.notices]


def day_readings() -> Iterator[tuple[datetime, float | None]]:
    """One reading a minute for a day (None: silent), alternating 5.0/5.1 when normal.

    Known excursions: 08:00-08:04 at 9.0 (shorter than the delay: no alert); 10:00-10:29
    at 9.5 (an alert, acknowledged); 14:00-14:59 at 9.0 (an alert nobody acknowledges:
    escalated); 18:00 at 13.0 (critical at once); 20:00-20:19 silent (offline).
    """
    for minute in range(24 * 60):
        hour, at = minute // 60, DAY + timedelta(minutes=minute)
        celsius: float | None = 5.0 + 0.1 * (minute % 2)
        if 8 * 60 <= minute < 8 * 60 + 5 or hour == 14:
            celsius = 9.0
        elif 10 * 60 <= minute < 10 * 60 + 30:
            celsius = 9.5
        elif minute == 18 * 60:
            celsius = 13.0
        elif 20 * 60 <= minute < 20 * 60 + 20:
            celsius = None
        yield at, celsius


EXPECTED_ALERTS = [
    ("raise", "temperature_high", "10:10"),
    ("acknowledged", "temperature_high", "10:15"),
    ("resolve", "temperature_high", "10:35"),
    ("raise", "temperature_high", "14:10"),
    ("escalate", "temperature_high", "14:40"),
    ("resolve", "temperature_high", "15:05"),
    ("raise", "temperature_high", "18:00"),
    ("resolve", "temperature_high", "18:06"),
    ("raise", "probe_offline", "20:14"),
    ("resolve", "probe_offline", "20:20"),
]


def replay_day(replay: Replay, *, restart_at: Collection[str] = ()) -> Replay:
    for at, celsius in day_readings():
        clock = (at + timedelta(hours=8)).strftime("%H:%M")
        if clock in restart_at:
            replay = Replay(
                replay.ledger, notices=replay.notices, seq=replay.seq, store=replay.store
            )
        if celsius is not None:
            replay.reading(at, celsius)
        if clock == "10:15":
            ack_open_alert(replay.ledger, at)
        replay.tick(at)
    return replay


def ack_open_alert(ledger: Ledger, at: datetime) -> None:
    with ledger.transaction() as tx:
        [alert] = tx.alerts(states=("open",))
        assert tx.acknowledge_alert(alert.id, by="qa-1", at=at)


def local(notice: Notice) -> str:
    at = notice.at + timedelta(hours=8)
    return at.strftime("%H:%M")


def test_a_replayed_day_raises_exactly_the_known_alerts(ledger: Ledger) -> None:
    replay = replay_day(Replay(ledger))
    seen = [(n.change, n.alert.kind, local(n)) for n in replay.notices]
    assert seen == EXPECTED_ALERTS
    with ledger.transaction(write=False) as tx:
        rows = sorted(tx.alerts(states=("open", "acknowledged", "resolved")), key=lambda r: r.id)
    assert [(r.kind, r.state, r.severity) for r in rows] == [
        ("temperature_high", "resolved", "warning"),
        ("temperature_high", "resolved", "critical"),  # escalated
        ("temperature_high", "resolved", "critical"),
        ("probe_offline", "resolved", "warning"),
    ]
    assert rows[0].acknowledged_by == "qa-1"
    assert {r.resolved_by for r in rows} == {"coldchain"}
    assert rows[1].escalated_at is not None
    assert all(r.subject == "medbox/medicine" for r in rows)


def test_a_replayed_day_gives_exact_excursion_minutes_and_mkt(
    ledger: Ledger, tmp_path: Path
) -> None:
    """The day's figures, read back from the telemetry store: 96 minutes out of range
    (5 + 30 + 60 + 1), six minutes not covered (the 19:59 reading holds for the
    15-minute offline gap of the 21-minute silence), and the MKT of those durations."""
    store = open_store(SqliteStoreConfig(kind="sqlite", path=tmp_path / "telemetry.sqlite"))
    store.open()
    try:
        replay = replay_day(Replay(ledger, store=store))
        counters = Counters()
        end_of_day = DAY + timedelta(days=1, seconds=CONFIG.settle_s)
        reporter = Reporter(CONFIG, store, counters)
        assert reporter.report(ledger, replay.engine, end_of_day - timedelta(seconds=1)) == 0
        assert counters.snapshot().get("coldchain.days_measured", 0) == 0  # not settled yet
        assert reporter.report(ledger, replay.engine, end_of_day) == 1
        assert reporter.report(ledger, replay.engine, end_of_day) == 0  # measured once
        [daily] = read_daily(store, STATION, *PROBE, date(2026, 11, 25), date(2026, 11, 26))
    finally:
        store.close()
    figures = daily.figures
    assert figures.out_of_range_min == 96
    assert figures.covered_s == (24 * 60 - 6) * 60
    assert (figures.min_c, figures.max_c) == (5.0, 13.0)
    assert figures.profile == "pharma"
    held: dict[float, float] = {}
    readings = [(at, c) for at, c in day_readings() if c is not None]
    for (at, celsius), (following, _) in zip(
        readings, [*readings[1:], (DAY + timedelta(days=1), 0)], strict=True
    ):
        held[celsius] = held.get(celsius, 0.0) + min((following - at).total_seconds(), 900.0)
    ratio = 83144.0 / 8.314462618
    mean = sum(w * math.exp(-ratio / (c + 273.15)) for c, w in held.items()) / sum(held.values())
    assert figures.mkt_c == pytest.approx(ratio / -math.log(mean) - 273.15, abs=1e-6)
    assert figures.mkt_c is not None
    assert 5.0 < figures.mkt_c < 6.0


def test_a_probe_clock_years_behind_costs_at_most_the_catch_up_window(
    ledger: Ledger, tmp_path: Path
) -> None:
    store = open_store(SqliteStoreConfig(kind="sqlite", path=tmp_path / "telemetry.sqlite"))
    store.open()
    try:
        replay = Replay(ledger, store=store)
        replay.reading(DAY - timedelta(days=3 * 365), 5.0)
        reporter = Reporter(CONFIG, store, Counters())
        assert reporter.report(ledger, replay.engine, DAY) == 20  # one pass
        reported = replay.engine.probes[STATION, *PROBE].reported_day
    finally:
        store.close()
    assert reported is not None
    first_measured = date.fromisoformat(reported) - timedelta(days=19)
    assert first_measured == date(2026, 11, 24) - timedelta(days=CATCH_UP_DAYS)


@pytest.mark.parametrize("restart_at", [{"10:05"}, {"10:12", "14:30"}, {"20:16"}])
def test_a_restart_neither_duplicates_nor_misses_an_alert(
    ledger: Ledger, restart_at: set[str]
) -> None:
    """The engine rebuilt from the ledger mid-excursion (pending, alarmed, offline) goes
    on as if nothing happened."""
    replay = replay_day(Replay(ledger), restart_at=restart_at)
    assert [(n.change, n.alert.kind, local(n)) for n in replay.notices] == EXPECTED_ALERTS


def test_redelivered_readings_have_no_second_effect(ledger: Ledger) -> None:
    replay = Replay(ledger)
    for minute in range(12):
        replay.reading(DAY + timedelta(minutes=minute), 9.5)
    assert [c for c, _, _ in replay.changes()] == ["raise"]
    again = Replay(ledger, seq=replay.seq)
    for envelope in replay.sent[-5:]:
        again.apply(envelope)
    assert again.notices == []


def test_a_resolved_alert_whose_excursion_persists_comes_back_after_the_delay(
    ledger: Ledger,
) -> None:
    replay = Replay(ledger)
    for minute in range(11):
        replay.reading(DAY + timedelta(minutes=minute), 9.5)
    with ledger.transaction() as tx:
        [alert] = tx.alerts()
        tx.resolve_alert(alert.id, by="qa-1", at=DAY + timedelta(minutes=11))
    replay.tick(DAY + timedelta(minutes=11))
    for minute in range(12, 21):
        replay.reading(DAY + timedelta(minutes=minute), 9.5)
    assert [c for c, _, _ in replay.changes()] == ["raise", "resolved"]
    replay.reading(DAY + timedelta(minutes=21), 9.5)  # the delay again, from the resolution
    assert [c for c, _, _ in replay.changes()] == ["raise", "resolved", "raise"]


def test_a_confirmed_set_profile_command_changes_the_probe_limits(ledger: Ledger) -> None:
    """A custom 15-25 °C profile set by command: 5 °C, fine for the probe's configured
    pharma profile, is too cold for it."""
    replay = Replay(ledger)
    result = CommandResultBody(
        command_id="c-1",
        command="set_profile",
        ok=True,
        result={"probe": "medicine", "profile": "custom", "low_c": 15.0, "high_c": 25.0},
    )
    replay.apply(replay.envelope("medbox", DAY, result))
    for minute in range(1, 12):
        replay.reading(DAY + timedelta(minutes=minute), 5.0 + 0.1 * (minute % 2))
    assert [(c, k) for c, k, _ in replay.changes()] == [("raise", "temperature_low")]
    restarted = Replay(ledger, seq=replay.seq)
    assert restarted.engine.probes[STATION, *PROBE].profile == "custom"


def test_an_unassigned_probe_takes_the_default_profile(ledger: Ledger) -> None:
    replay = Replay(ledger)
    replay.reading(DAY, 9.0, probe=("locker-1", "cold-1"))  # chilled: 0-4, critical 8
    assert [(c, k) for c, k, _ in replay.changes()] == [("raise", "temperature_high")]
    assert replay.notices[0].alert.severity == "critical"


def test_a_cold_door_left_open_alarms_and_a_parcel_stay_is_recorded(ledger: Ledger) -> None:
    replay = Replay(ledger)

    def door(at: datetime, state: Literal["open", "closed"]) -> None:
        body = DoorBody(board=0, lock=3, door=state, cause="report")
        replay.apply(replay.envelope("locker-1", at, body))

    deposit = DepositBody(waybill="WB-COLD-1", purpose="delivery", board=0, lock=3)
    replay.apply(replay.envelope("locker-1", DAY, deposit))
    replay.apply(replay.envelope("locker-1", DAY, deposit))  # redelivered: one stay
    door(DAY + timedelta(minutes=1), "open")
    replay.tick(DAY + timedelta(minutes=2))
    assert replay.changes() == []
    replay.tick(DAY + timedelta(minutes=3))
    door(DAY + timedelta(minutes=4), "closed")
    assert [(c, k) for c, k, _ in replay.changes()] == [
        ("raise", "door_open"),
        ("resolve", "door_open"),
    ]
    assert replay.notices[0].source == ("locker-1", "0", "3")
    assert replay.notices[0].alert.subject == "locker-1/0/3"
    pickup = PickupBody(waybill="WB-COLD-1", board=0, lock=3)
    replay.apply(replay.envelope("locker-1", DAY + timedelta(hours=2), pickup))
    with ledger.transaction(write=False) as tx:
        [stay] = tx.stays_to_report(DAY + timedelta(hours=3))
    assert (stay.waybill, stay.probe_device, stay.probe) == ("WB-COLD-1", "locker-1", "cold-1")
    assert (stay.since, stay.until) == (DAY, DAY + timedelta(hours=2))
