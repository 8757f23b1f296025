"""The cold-chain engine: state machines per probe and cold door, kept in the ledger.

:class:`ColdChainEngine` holds one :class:`~gateway.coldchain.machine.ProbeMachine` per
watched probe and one :class:`~gateway.coldchain.machine.DoorMachine` per configured
cold compartment. Every method that changes them runs inside a ledger transaction the
caller gives it and writes, in that transaction, the machines' new states and the alert
rows their transitions raise, acknowledge, escalate or resolve. So the ledger always
holds states and alerts that agree; if the transaction fails, the caller calls
:meth:`load` to put the machines back to what was committed.

What comes out is a list of :class:`Notice` (an :class:`AlertMessage` as it now stands,
and the change), for the worker to publish and notify after the commit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from contracts import AnyEnvelope
from contracts.alerts import AlertMessage
from contracts.envelope import (
    CommandResultEnvelope,
    DepositEnvelope,
    DoorEnvelope,
    PickupEnvelope,
    TemperatureEnvelope,
)
from contracts.profiles import Limits
from gateway.alerts import alert_message
from gateway.coldchain.config import ColdChainConfig, CompartmentConfig
from gateway.coldchain.machine import (
    Channel,
    ChannelName,
    DoorMachine,
    ProbeMachine,
    ProbeState,
    Transition,
    acknowledge,
)
from gateway.ledger import LedgerTx, ProbeRow

ProbeKey = tuple[str, str, str]
"""(station, device, probe)"""
DoorKey = tuple[str, str, int, int]
"""(station, locker, board, lock)"""

ENGINE = "coldchain"
"""Who the ledger names for what the engine did itself (``resolved_by``)."""


@dataclass(frozen=True, slots=True)
class Notice:
    """An alert as it now stands, and what just happened to it."""

    alert: AlertMessage
    change: str
    source: tuple[str, ...]
    at: datetime


@dataclass(slots=True)
class WatchedProbe:
    machine: ProbeMachine
    profile: str
    limits: Limits
    reported_day: str | None


CHANNELS: tuple[ChannelName, ...] = ("temperature", "offline", "fault")


@dataclass(frozen=True, slots=True)
class _Open:
    """An alarmed channel with an alert, and where it lives."""

    owner: ProbeMachine | DoorMachine
    name: ChannelName
    channel: Channel
    source: tuple[str, ...]
    probe: ProbeKey | None = None
    door: DoorKey | None = None


def _seconds(moment: datetime) -> float:
    return moment.timestamp()


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def probe_state(data: Mapping[str, Any]) -> ProbeState:
    """A :class:`ProbeState` from its stored JSON (an empty mapping: a fresh state)."""
    state = ProbeState()
    for name in CHANNELS:
        if name in data:
            setattr(state, name, Channel(**data[name]))
    for key in ("last_seen", "last_value", "same_since"):
        if key in data:
            setattr(state, key, data[key])
    return state


class ColdChainEngine:
    def __init__(self, config: ColdChainConfig) -> None:
        self.config = config
        self._zone = config.zone()
        self._profiles = config.all_profiles()
        self._compartments: dict[DoorKey, CompartmentConfig] = {
            (c.station, c.locker, c.board, c.lock): c for c in config.compartments
        }
        self.probes: dict[ProbeKey, WatchedProbe] = {}
        self.doors: dict[DoorKey, DoorMachine] = {}

    # -- state --------------------------------------------------------------------------

    def load(self, tx: LedgerTx) -> None:
        """(Re)build every machine from the ledger: at start, and after a failed commit."""
        self.probes = {}
        for row in tx.probe_rows():
            watched = self._watch(row)
            if watched is not None:
                self.probes[row.station, row.device, row.probe] = watched
        self.doors = {}
        for station, device, board, lock, state in tx.door_rows():
            key = (station, device, board, lock)
            if key in self._compartments:
                channel = Channel(**state) if state else Channel()
                self.doors[key] = DoorMachine(
                    self.config.door_rules(self._compartments[key]), channel
                )

    def _profile_of(self, row: ProbeRow) -> tuple[str, Limits] | None:
        """The probe's profile and limits (see :meth:`ColdChainConfig.profile_for`)."""
        chosen = self.config.profile_for(
            row.station, row.device, row.probe, set_by_command=row.profile,
            low_c=row.low_c, high_c=row.high_c,
        )  # fmt: skip
        if chosen is None:
            return None
        name, profile = chosen
        return name, Limits(profile.low_c, profile.high_c)

    def _watch(self, row: ProbeRow) -> WatchedProbe | None:
        chosen = self._profile_of(row)
        if chosen is None:
            return None
        name, limits = chosen
        rules = self._profiles[name].rules(self.config.escalate_after_s, limits)
        return WatchedProbe(
            ProbeMachine(rules, probe_state(row.state)), name, limits, row.reported_day
        )

    def _save(self, tx: LedgerTx, key: ProbeKey) -> None:
        watched = self.probes[key]
        tx.save_probe(*key, state=dataclasses.asdict(watched.machine.state))

    def _save_door(self, tx: LedgerTx, key: DoorKey) -> None:
        tx.save_door(*key, state=dataclasses.asdict(self.doors[key].state))

    # -- input --------------------------------------------------------------------------

    def apply(self, tx: LedgerTx, envelope: AnyEnvelope) -> list[Notice]:
        """One device message; messages the engine has no use for are ignored."""
        if isinstance(envelope, TemperatureEnvelope):
            return self._reading(tx, envelope)
        if isinstance(envelope, DoorEnvelope):
            return self._door(tx, envelope)
        if isinstance(envelope, DepositEnvelope):
            self._deposit(tx, envelope)
        elif isinstance(envelope, PickupEnvelope):
            body = envelope.body
            tx.end_stay(envelope.device, body.board, body.lock, body.waybill, envelope.ts)
        elif isinstance(envelope, CommandResultEnvelope):
            self._profile_set(tx, envelope)
        return []

    def _reading(self, tx: LedgerTx, envelope: TemperatureEnvelope) -> list[Notice]:
        key = (envelope.station, envelope.device, envelope.body.probe)
        watched = self.probes.get(key)
        if watched is None:
            row = ProbeRow(*key, None, None, None, {}, self._day_before(envelope.ts))
            watched = self._watch(row)
            if watched is None:
                return []
            self.probes[key] = watched
            tx.save_probe(*key, state={}, reported_day=watched.reported_day)
        transitions = watched.machine.observe(_seconds(envelope.ts), envelope.body.celsius)
        notices = self._record(tx, key[0], key[1], (key[1], key[2]), watched.machine, transitions)
        self._save(tx, key)
        return notices

    def _day_before(self, moment: datetime) -> str:
        local: date = moment.astimezone(self._zone).date()
        return (local - timedelta(days=1)).isoformat()

    def _door(self, tx: LedgerTx, envelope: DoorEnvelope) -> list[Notice]:
        body = envelope.body
        key = (envelope.station, envelope.device, body.board, body.lock)
        compartment = self._compartments.get(key)
        if compartment is None:
            return []
        door = self.doors.setdefault(key, DoorMachine(self.config.door_rules(compartment)))
        transitions = door.door(_seconds(envelope.ts), is_open=body.door == "open")
        source = (envelope.device, str(body.board), str(body.lock))
        notices = self._record(tx, envelope.station, envelope.device, source, door, transitions)
        self._save_door(tx, key)
        return notices

    def _deposit(self, tx: LedgerTx, envelope: DepositEnvelope) -> None:
        body = envelope.body
        compartment = self._compartments.get(
            (envelope.station, envelope.device, body.board, body.lock)
        )
        if compartment is None or tx.has_open_stay(
            envelope.device, body.board, body.lock, body.waybill
        ):
            return
        tx.add_stay(
            station=envelope.station,
            device=envelope.device,
            board=body.board,
            lock=body.lock,
            waybill=body.waybill,
            probe_device=compartment.probe_device,
            probe=compartment.probe,
            since=envelope.ts,
        )

    def _profile_set(self, tx: LedgerTx, envelope: CommandResultEnvelope) -> None:
        """A device confirmed ``set_profile``: the probe's profile from now on."""
        body = envelope.body
        result = body.result
        if body.command != "set_profile" or not body.ok or body.replayed:
            return
        probe, profile = result.get("probe"), result.get("profile")
        if not isinstance(probe, str) or not isinstance(profile, str):
            return
        if profile not in self._profiles:
            return
        low, high = result.get("low_c"), result.get("high_c")
        low_c = float(low) if isinstance(low, int | float) else None
        high_c = float(high) if isinstance(high, int | float) else None
        key = (envelope.station, envelope.device, probe)
        tx.save_probe(*key, profile=profile, profile_set_at=envelope.ts, low_c=low_c, high_c=high_c)
        old = self.probes.get(key)
        state = old.machine.state if old is not None else ProbeState()
        reported = old.reported_day if old is not None else self._day_before(envelope.ts)
        row = ProbeRow(*key, profile, low_c, high_c, dataclasses.asdict(state), reported)
        watched = self._watch(row)
        if watched is not None:
            self.probes[key] = watched
            self._save(tx, key)

    # -- time and people ------------------------------------------------------------------

    def tick(self, tx: LedgerTx, now: datetime) -> list[Notice]:
        """Delays falling due, silent probes, doors left open, escalations."""
        at = _seconds(now)
        notices: list[Notice] = []
        for key, watched in self.probes.items():
            transitions = watched.machine.tick(at)
            if transitions:
                notices += self._record(
                    tx, key[0], key[1], (key[1], key[2]), watched.machine, transitions
                )
                self._save(tx, key)
        for door_key, door in self.doors.items():
            transitions = door.tick(at)
            if transitions:
                source = (door_key[1], str(door_key[2]), str(door_key[3]))
                notices += self._record(tx, door_key[0], door_key[1], source, door, transitions)
                self._save_door(tx, door_key)
        return notices

    def people(self, tx: LedgerTx, now: datetime) -> list[Notice]:
        """Acknowledgements and resolutions people made in the ledger (the API, the CLI)
        since the machines last looked: an acknowledged alarm stops escalating, a resolved
        one restarts its delay if the condition persists."""
        opened = {item.channel.alert: item for item in self._open_channels()}
        if not opened:
            return []
        ids = [int(str(alert_id).removeprefix("alert:")) for alert_id in opened]
        notices: list[Notice] = []
        for row in tx.alerts(states=("acknowledged", "resolved"), ids=ids):
            item = opened[f"alert:{row.id}"]
            channel = item.channel
            if row.state == "resolved":
                channel.alert = None
                if isinstance(item.owner, ProbeMachine):
                    item.owner.resolve(item.name, _seconds(now))
                else:  # a door still open alarms again after its time
                    item.owner.state = Channel(condition="pending", since=_seconds(now))
            elif not acknowledge(channel):
                continue  # seen on an earlier tick
            notices.append(
                Notice(alert_message(row, {"change": row.state}), row.state, item.source, now)
            )
            if item.probe is not None:
                self._save(tx, item.probe)
            elif item.door is not None:
                self._save_door(tx, item.door)
        return notices

    def _open_channels(self) -> Iterator[_Open]:
        for key, watched in self.probes.items():
            machine = watched.machine
            for name in CHANNELS:
                channel = machine.channel(name)
                if channel.alert is not None and channel.alarmed():
                    yield _Open(machine, name, channel, (key[1], key[2]), probe=key)
        for door_key, door in self.doors.items():
            if door.state.alert is not None and door.state.alarmed():
                source = (door_key[1], str(door_key[2]), str(door_key[3]))
                yield _Open(door, "door", door.state, source, door=door_key)

    # -- transitions into alerts -----------------------------------------------------------

    def _record(
        self,
        tx: LedgerTx,
        station: str,
        device: str,
        source: tuple[str, ...],
        machine: ProbeMachine | DoorMachine,
        transitions: list[Transition],
    ) -> list[Notice]:
        notices: list[Notice] = []
        for transition in transitions:
            channel = (
                machine.channel(transition.channel)
                if isinstance(machine, ProbeMachine)
                else machine.state
            )
            at = _moment(transition.at)
            details: dict[str, Any] = {"change": transition.change, **transition.details}
            if transition.change == "raise":
                alert_id = tx.add_alert(
                    station=station,
                    kind=transition.kind,
                    waybill=None,
                    severity=transition.severity,
                    details=details,
                    raised_at=at,
                    subject="/".join(source),
                    device=device,
                )
                channel.alert = f"alert:{alert_id}"
            else:
                alert_ref = channel.alert
                if transition.change == "resolve":
                    channel.alert = None
                if alert_ref is None:
                    continue
                alert_id = int(alert_ref.removeprefix("alert:"))
                if transition.change == "resolve":
                    tx.resolve_alert(alert_id, by=ENGINE, at=at)
                else:
                    escalated = at if transition.change == "escalate" else None
                    tx.escalate_alert(alert_id, severity=transition.severity, at=escalated)
            row = tx.alert(alert_id)
            assert row is not None
            notices.append(Notice(alert_message(row, details), transition.change, source, at))
        return notices
