"""Pure converters from typed messages to telemetry points.

Schema (the same on InfluxDB 1.x, 2.x and 3.x and on the SQLite store)::

    temperature    tags station, device, probe   fields celsius, humidity?, seq, msg_id
    device_status  tags station, device          fields state, boot, version, seq, msg_id
    deadletter     tags reason                   fields topic, error, size, sha256

Readings are timestamped with the device timestamp, so a redelivered message rewrites
the same point; dead letters with the gateway's receive time in nanoseconds.
"""

from __future__ import annotations

from contracts import AnyEnvelope, ContractError, StatusEnvelope, TemperatureEnvelope
from contracts.timestamps import to_epoch_ms
from gateway.deadletter import DeadLetter
from gateway.telemetry import TelemetryPoint

TEMPERATURE = "temperature"
DEVICE_STATUS = "device_status"
DEADLETTER = "deadletter"

_NS_PER_MS = 1_000_000


class UnsupportedKind(ContractError):
    """A valid envelope of a kind this gateway does not store (yet)."""

    reason = "unsupported"


def to_points(envelope: AnyEnvelope) -> list[TelemetryPoint]:
    """The points one envelope is stored as."""
    if isinstance(envelope, TemperatureEnvelope):
        return [temperature_point(envelope)]
    if isinstance(envelope, StatusEnvelope):
        return [status_point(envelope)]
    raise UnsupportedKind(f"the gateway does not store {envelope.kind} messages")


def temperature_point(envelope: TemperatureEnvelope) -> TelemetryPoint:
    body = envelope.body
    fields: dict[str, float | int | str | bool] = {
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
        time_ns=to_epoch_ms(envelope.ts) * _NS_PER_MS,
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
        time_ns=to_epoch_ms(envelope.ts) * _NS_PER_MS,
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
