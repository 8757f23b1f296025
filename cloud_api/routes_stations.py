"""Stations with their devices' online state, and probe temperature series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from sqlalchemy import func, select

from cloud_api.context import (
    Reader,
    Services,
    ServicesDep,
    StationRef,
    station_in_scope,
    stations_in_scope,
)
from cloud_api.schemas import (
    DeviceOut,
    Page,
    ProfileOut,
    StationOut,
    TemperaturePointOut,
    TemperatureSeriesOut,
    iso,
)
from contracts import ID_PATTERN
from contracts.timestamps import from_epoch_ns, to_epoch_ns
from gateway.convert import DEVICE_STATUS, TEMPERATURE
from gateway.ledger import schema as t

router = APIRouter(prefix="/api/v1")

DEFAULT_RANGE = timedelta(hours=24)
MAX_POINTS = 100_000
EVERY = {"1m": 60, "5m": 300, "1h": 3600}

IdPath = Annotated[str, Path(pattern=ID_PATTERN)]
Every = Literal["1m", "5m", "1h"]


@router.get(
    "/stations",
    response_model=Page[StationOut],
    tags=["stations"],
    responses={401: {"description": "Not authenticated"}},
)
def stations(
    user: Reader,
    services: ServicesDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page[StationOut]:
    """The stations in the user's scopes, with devices, online state and open alerts."""
    refs = stations_in_scope(services, user)
    chosen = refs[(page - 1) * per_page : page * per_page]
    return Page[StationOut](
        items=describe(services, chosen), page=page, per_page=per_page, total=len(refs)
    )


@router.get(
    "/stations/{station}",
    response_model=StationOut,
    tags=["stations"],
    responses={403: {"description": "Outside your scopes"}, 404: {"description": "No station"}},
)
def station(station: IdPath, user: Reader, services: ServicesDep) -> StationOut:
    ref = station_in_scope(services, user, station)
    return describe(services, [ref])[0]


def describe(services: Services, refs: list[StationRef]) -> list[StationOut]:
    """Stations with their registered devices (and devices seen only in telemetry)."""
    if not refs:
        return []
    wanted = {ref.id for ref in refs}
    with services.ledger.transaction(write=False) as tx:
        devices = tx.connection.execute(
            select(t.devices.c.id, t.devices.c.station, t.devices.c.role).where(
                t.devices.c.station.in_(wanted)
            )
        ).all()
        alerts: dict[str, int] = dict(
            tx.connection.execute(
                select(t.alerts.c.station, func.count())
                .where(t.alerts.c.station.in_(wanted), t.alerts.c.state != "resolved")
                .group_by(t.alerts.c.station)
            ).all()
        )
    roles = {(row.station, row.id): row.role for row in devices}
    probes: dict[tuple[str, str], list[str]] = {}
    for tags in services.store.series(TEMPERATURE):
        if tags.get("station") in wanted:
            probes.setdefault((tags["station"], tags["device"]), []).append(tags["probe"])
    status = {
        (last.tags["station"], last.tags["device"]): last
        for last in services.store.last(DEVICE_STATUS, "state", ["station", "device"])
        if last.tags.get("station") in wanted
    }
    out = []
    for ref in refs:
        keys = sorted(
            key for key in roles.keys() | probes.keys() | status.keys() if key[0] == ref.id
        )
        items = [
            DeviceOut(
                id=device,
                role=roles.get((ref.id, device)),
                online=key in status and status[key].value == "online",
                last_seen=iso(from_epoch_ns(status[key].time_ns)) if key in status else None,
                probes=sorted(probes.get(key, [])),
            )
            for key in keys
            for device in [key[1]]
        ]
        out.append(
            StationOut(
                id=ref.id,
                name=ref.name,
                division=ref.division,
                tier=ref.tier,
                online=sum(item.online for item in items),
                open_alerts=int(alerts.get(ref.id, 0)),
                devices=items,
            )
        )
    return out


@router.get(
    "/probes/{station}/{device}/{probe}/temperature",
    response_model=TemperatureSeriesOut,
    tags=["cold chain"],
    responses={
        403: {"description": "Outside your scopes"},
        404: {"description": "No such probe"},
        422: {"description": "Bad range"},
    },
)
def temperature(
    station: IdPath,
    device: IdPath,
    probe: IdPath,
    user: Reader,
    services: ServicesDep,
    start: Annotated[
        datetime | None, Query(description="ISO 8601 with time zone; default: end − 24 h")
    ] = None,
    end: Annotated[
        datetime | None, Query(description="ISO 8601 with time zone; default: now")
    ] = None,
    every: Annotated[
        Every | None, Query(description="downsample to the mean (min, max) per 1m, 5m or 1h")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_POINTS)] = MAX_POINTS,
) -> TemperatureSeriesOut:
    """The probe's readings in ``[start, end)``, oldest first, with device timestamps;
    with ``every``, one point per period (InfluxQL ``GROUP BY time``, or SQL on SQLite)
    holding the mean, min and max, stamped with the period's start."""
    station_in_scope(services, user, station)
    tags = {"station": station, "device": device, "probe": probe}
    end_at = aware(end, "end") if end else datetime.now(UTC)
    start_at = aware(start, "start") if start else end_at - DEFAULT_RANGE
    if start_at >= end_at:
        raise HTTPException(422, "start must be before end")
    if every is not None:
        try:
            buckets = services.store.query_buckets(
                TEMPERATURE,
                "celsius",
                tags,
                to_epoch_ns(start_at),
                to_epoch_ns(end_at),
                EVERY[every] * 10**9,
            )
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        points = [
            TemperaturePointOut(
                ts=iso(from_epoch_ns(b.time_ns)) or "", celsius=b.mean, min=b.min, max=b.max
            )
            for b in buckets[:limit]
        ]
    else:
        values = services.store.query_series(
            TEMPERATURE, "celsius", tags, to_epoch_ns(start_at), to_epoch_ns(end_at), limit=limit
        )
        points = [
            TemperaturePointOut(ts=iso(from_epoch_ns(v.time_ns)) or "", celsius=float(v.value))
            for v in values
        ]
    if not points and tags not in services.store.series(TEMPERATURE):
        raise HTTPException(404, f"no probe {station}/{device}/{probe}")
    return TemperatureSeriesOut(
        station=station,
        device=device,
        probe=probe,
        every=every,
        profile=profile_of(services, station, device, probe),
        points=points,
    )


def profile_of(services: Services, station: str, device: str, probe: str) -> ProfileOut | None:
    """The probe's profile as the cold-chain engine chooses it (needs ``[coldchain]``)."""
    if services.coldchain is None:
        return None
    with services.ledger.transaction(write=False) as tx:
        row = tx.connection.execute(
            select(t.coldchain_probes).where(
                t.coldchain_probes.c.station == station,
                t.coldchain_probes.c.device == device,
                t.coldchain_probes.c.probe == probe,
            )
        ).first()
    chosen = services.coldchain.profile_for(
        station,
        device,
        probe,
        set_by_command=row.profile if row is not None else None,
        low_c=row.low_c if row is not None else None,
        high_c=row.high_c if row is not None else None,
    )
    if chosen is None:
        return None
    name, rules = chosen
    return ProfileOut(
        name=name,
        low_c=rules.low_c,
        high_c=rules.high_c,
        critical_low_c=rules.critical_low_c,
        critical_high_c=rules.critical_high_c,
    )


def aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise HTTPException(422, f"{name} must carry a time zone, e.g. 2026-11-25T08:00:00+08:00")
    return value
