"""Pure converters from typed messages to telemetry points.

Schema (the same on InfluxDB 1.x, 2.x and 3.x and on the SQLite store)::

    temperature     tags station, device, probe   fields celsius, humidity?, seq, msg_id
    device_status   tags station, device          fields state, boot, version, seq, msg_id
    agent_health    tags station, device          fields uptime_s, cpu_percent, rss_bytes,
                                                  disk_free_bytes, outbox_depth, outbox_bytes,
                                                  oldest_unconfirmed_s?, thinned, links_up,
                                                  links_down, links, warnings?, seq, msg_id
    event           tags station, device, kind    fields body, seq, msg_id
    command_result  tags station, device          fields command_id, command, ok, error?,
                                                  reason?, result, replayed, seq, msg_id
    deadletter      tags reason                   fields topic, error, size, sha256
    alert           tags station, kind            fields id, change, state, severity,
                                                  subject, details

(``?``: only when the message has it.) JSON-valued fields (``event.body``,
``command_result.result``, ``agent_health.links``) are compact JSON strings, so that a
new body field never changes a measurement's schema.

Time: readings, statuses and health are stamped with the device timestamp (ms), so a
redelivered message rewrites the same point. Events and command results are stamped
``ts_ms * 1_000_000 + seq % 1_000_000`` ns: a device can send several of them within one
millisecond, and InfluxDB keeps one point per measurement, tags and time; the sequence
number in the sub-millisecond digits keeps them apart while a redelivery still lands on
the same point. Dead letters carry the gateway's receive time in nanoseconds; an alert
change its own time in whole microseconds, plus the alert's number modulo 1000 in the
last digits, so simultaneous changes of different alerts do not overwrite each other.
"""

from __future__ import annotations

import json
from datetime import datetime

from contracts import (
    AnyEnvelope,
    CommandResultEnvelope,
    ContractError,
    DivertEnvelope,
    DoorEnvelope,
    HealthEnvelope,
    InductionEnvelope,
    ScanEnvelope,
    StatusEnvelope,
    TemperatureEnvelope,
    XrayEnvelope,
)
from contracts.alerts import AlertMessage
from contracts.envelope import (
    AcceptanceEnvelope,
    DepositEnvelope,
    DepositRequestEnvelope,
    DoorAlarmEnvelope,
    PickupEnvelope,
    SortMissEnvelope,
)
from contracts.timestamps import to_epoch_ms, to_epoch_ns
from gateway.deadletter import DeadLetter
from gateway.telemetry import FieldValue, TelemetryPoint

TEMPERATURE = "temperature"
DEVICE_STATUS = "device_status"
AGENT_HEALTH = "agent_health"
EVENT = "event"
COMMAND_RESULT = "command_result"
DEADLETTER = "deadletter"
ALERT = "alert"

_NS_PER_MS = 1_000_000

EventEnvelope = (
    ScanEnvelope
    | DoorEnvelope
    | InductionEnvelope
    | DivertEnvelope
    | XrayEnvelope
    | DepositRequestEnvelope
    | DepositEnvelope
    | PickupEnvelope
    | DoorAlarmEnvelope
    | SortMissEnvelope
)
"""Events stored as they came: none of them carries personal data. An acceptance does
(the sender's identity) and is not an event of this kind."""
EVENT_ENVELOPES = (
    ScanEnvelope,
    DoorEnvelope,
    InductionEnvelope,
    DivertEnvelope,
    XrayEnvelope,
    DepositRequestEnvelope,
    DepositEnvelope,
    PickupEnvelope,
    DoorAlarmEnvelope,
    SortMissEnvelope,
)


class UnsupportedKind(ContractError):
    """A valid envelope of a kind this gateway does not store (yet)."""

    reason = "unsupported"


def to_points(envelope: AnyEnvelope) -> list[TelemetryPoint]:
    """The points one envelope is stored as."""
    if isinstance(envelope, TemperatureEnvelope):
        return [temperature_point(envelope)]
    if isinstance(envelope, StatusEnvelope):
        return [status_point(envelope)]
    if isinstance(envelope, HealthEnvelope):
        return [health_point(envelope)]
    if isinstance(envelope, EVENT_ENVELOPES):
        return [event_point(envelope)]
    if isinstance(envelope, CommandResultEnvelope):
        return [command_result_point(envelope)]
    if isinstance(envelope, AcceptanceEnvelope):
        return [acceptance_point(envelope)]
    raise UnsupportedKind(f"the gateway does not store {envelope.kind} messages")


def device_time_ns(envelope: AnyEnvelope) -> int:
    """The device timestamp in ns: for series where one point per millisecond suffices."""
    return to_epoch_ms(envelope.ts) * _NS_PER_MS


def unique_time_ns(envelope: AnyEnvelope) -> int:
    """The device timestamp plus ``seq % 1_000_000`` ns: unique per message of a device,
    and the same for every redelivery of it."""
    return to_epoch_ms(envelope.ts) * _NS_PER_MS + envelope.seq % _NS_PER_MS


def compact_json(value: object) -> str:
    """JSON without spaces, keys sorted: the same value always gives the same text."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def temperature_point(envelope: TemperatureEnvelope) -> TelemetryPoint:
    body = envelope.body
    fields: dict[str, FieldValue] = {
        "celsius": float(body.celsius),
        "seq": envelope.seq,
        "msg_id": envelope.id,
    }
    if body.humidity is not None:
        fields["humidity"] = float(body.humidity)
    return TelemetryPoint(
        measurement=TEMPERATURE,
        tags={"station": envelope.station, "device": envelope.device, "probe": body.probe},
        fields=fields,
        time_ns=device_time_ns(envelope),
    )


def status_point(envelope: StatusEnvelope) -> TelemetryPoint:
    body = envelope.body
    return TelemetryPoint(
        measurement=DEVICE_STATUS,
        tags={"station": envelope.station, "device": envelope.device},
        fields={
            "state": body.state,
            "boot": body.boot,
            "version": body.version,
            "seq": envelope.seq,
            "msg_id": envelope.id,
        },
        time_ns=device_time_ns(envelope),
    )


def health_point(envelope: HealthEnvelope) -> TelemetryPoint:
    body = envelope.body
    states = list(body.links.values())
    fields: dict[str, FieldValue] = {
        "uptime_s": float(body.uptime_s),
        "cpu_percent": float(body.cpu_percent),
        "rss_bytes": body.rss_bytes,
        "disk_free_bytes": body.disk_free_bytes,
        "outbox_depth": body.outbox_depth,
        "outbox_bytes": body.outbox_bytes,
        "thinned": body.thinned,
        "links_up": states.count("up"),
        "links_down": states.count("down"),
        "links": compact_json(body.links),
        "seq": envelope.seq,
        "msg_id": envelope.id,
    }
    if body.oldest_unconfirmed_s is not None:
        fields["oldest_unconfirmed_s"] = float(body.oldest_unconfirmed_s)
    if body.warnings:
        fields["warnings"] = "; ".join(body.warnings)
    return TelemetryPoint(
        measurement=AGENT_HEALTH,
        tags={"station": envelope.station, "device": envelope.device},
        fields=fields,
        time_ns=device_time_ns(envelope),
    )


def event_point(envelope: EventEnvelope) -> TelemetryPoint:
    return TelemetryPoint(
        measurement=EVENT,
        tags={"station": envelope.station, "device": envelope.device, "kind": envelope.kind},
        fields={
            # As on the wire: absent optional fields are left out, not null.
            "body": envelope.body.model_dump_json(exclude_none=True),
            "seq": envelope.seq,
            "msg_id": envelope.id,
        },
        time_ns=unique_time_ns(envelope),
    )


def acceptance_point(envelope: AcceptanceEnvelope) -> TelemetryPoint:
    """An acceptance as an ``event`` point *without* the sender's identity and phone:
    personal data goes only to the ledger, encrypted; the telemetry store never sees it."""
    body = envelope.body.model_dump_json(exclude_none=True, exclude={"sender", "sender_phone"})
    return TelemetryPoint(
        measurement=EVENT,
        tags={"station": envelope.station, "device": envelope.device, "kind": envelope.kind},
        fields={"body": body, "seq": envelope.seq, "msg_id": envelope.id},
        time_ns=unique_time_ns(envelope),
    )


def command_result_point(envelope: CommandResultEnvelope) -> TelemetryPoint:
    body = envelope.body
    fields: dict[str, FieldValue] = {
        "command_id": body.command_id or "",
        "command": body.command or "",
        "ok": body.ok,
        "result": compact_json(body.result),
        "replayed": body.replayed,
        "seq": envelope.seq,
        "msg_id": envelope.id,
    }
    if body.error is not None:
        fields["error"] = body.error
    if body.reason is not None:
        fields["reason"] = body.reason
    return TelemetryPoint(
        measurement=COMMAND_RESULT,
        tags={"station": envelope.station, "device": envelope.device},
        fields=fields,
        time_ns=unique_time_ns(envelope),
    )


def deadletter_point(record: DeadLetter) -> TelemetryPoint:
    return TelemetryPoint(
        measurement=DEADLETTER,
        tags={"reason": record.reason},
        fields={
            "topic": record.topic,
            "error": record.error,
            "size": record.size,
            "sha256": record.sha256,
        },
        time_ns=record.received_ns,
    )


def alert_point(alert: AlertMessage, change: str, at: datetime) -> TelemetryPoint:
    """One change of an alert (``raise``, ``acknowledged``, ``resolve`` ...) at ``at``."""
    digits = alert.id.rsplit(":", 1)[-1]  # alert:N
    number = int(digits) if digits.isdigit() else 0
    return TelemetryPoint(
        measurement=ALERT,
        tags={"station": alert.station, "kind": alert.kind},
        fields={
            "id": alert.id,
            "change": change,
            "state": alert.state,
            "severity": alert.severity,
            "subject": alert.subject,
            "details": compact_json(alert.details),
        },
        time_ns=to_epoch_ns(at) + number % 1000,
    )
