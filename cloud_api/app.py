"""The API's composition root: a FastAPI app over the telemetry store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from cloud_api import problems
from cloud_api.config import ApiConfig
from contracts import ID_PATTERN, format_utc_ms
from contracts.mqtt import software_version
from gateway.convert import DEVICE_STATUS, TEMPERATURE
from gateway.telemetry import StoreError, StoreUnavailable, TelemetryStore, open_store

DEFAULT_RANGE = timedelta(hours=24)
MAX_POINTS = 100_000

IdPath = Annotated[str, Path(pattern=ID_PATTERN)]


class DeviceOut(BaseModel):
    id: str
    online: bool
    probes: list[str]


class StationOut(BaseModel):
    id: str
    devices: list[DeviceOut]


class TemperaturePointOut(BaseModel):
    ts: str
    celsius: float


class TemperatureSeriesOut(BaseModel):
    points: list[TemperaturePointOut]


def create_app(config: ApiConfig, store: TelemetryStore | None = None) -> FastAPI:
    """The API app; the store is opened on start-up and closed on shutdown."""
    store = store if store is not None else open_store(config.store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store.open()
        try:
            yield
        finally:
            store.close()

    app = FastAPI(
        title="postedge supervisor API",
        version=software_version(),
        description="Stations, devices and cold-chain temperature series of postedge.",
        lifespan=lifespan,
    )
    problems.install(app)

    @app.exception_handler(StoreError)
    async def store_problem(request: Request, exc: StoreError) -> JSONResponse:
        status = 503 if isinstance(exc, StoreUnavailable) else 500
        return problems.problem(status, "Telemetry store unavailable", str(exc))

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: the process serves requests."""
        return {"status": "ok"}

    @app.get("/api/v1/stations", response_model=list[StationOut], tags=["stations"])
    def stations() -> list[StationOut]:
        """Every station with its devices, their online state and their probes."""
        return list_stations(store)

    @app.get(
        "/api/v1/probes/{station}/{device}/{probe}/temperature",
        response_model=TemperatureSeriesOut,
        tags=["cold chain"],
        responses={404: {"description": "No such probe"}},
    )
    def temperature(
        station: IdPath,
        device: IdPath,
        probe: IdPath,
        start: Annotated[
            datetime | None, Query(description="ISO 8601 with time zone; default: end − 24 h")
        ] = None,
        end: Annotated[
            datetime | None, Query(description="ISO 8601 with time zone; default: now")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_POINTS)] = MAX_POINTS,
    ) -> TemperatureSeriesOut:
        """The probe's readings in ``[start, end)``, oldest first, with device timestamps."""
        tags = {"station": station, "device": device, "probe": probe}
        end_at = _aware(end, "end") if end else datetime.now(UTC)
        start_at = _aware(start, "start") if start else end_at - DEFAULT_RANGE
        if start_at >= end_at:
            raise HTTPException(422, "start must be before end")
        values = store.query_series(
            TEMPERATURE, "celsius", tags, _ns(start_at), _ns(end_at), limit=limit
        )
        if not values and tags not in store.series(TEMPERATURE):
            raise HTTPException(404, f"no probe {station}/{device}/{probe}")
        return TemperatureSeriesOut(
            points=[
                TemperaturePointOut(ts=format_utc_ms(_from_ns(v.time_ns)), celsius=float(v.value))
                for v in values
            ]
        )

    return app


def list_stations(store: TelemetryStore) -> list[StationOut]:
    probes: dict[tuple[str, str], list[str]] = {}
    for tags in store.series(TEMPERATURE):
        probes.setdefault((tags["station"], tags["device"]), []).append(tags["probe"])
    online = {
        (last.tags["station"], last.tags["device"]): last.value == "online"
        for last in store.last(DEVICE_STATUS, "state", ["station", "device"])
    }
    devices: dict[str, list[DeviceOut]] = {}
    for station, device in sorted(probes.keys() | online.keys()):
        devices.setdefault(station, []).append(
            DeviceOut(
                id=device,
                online=online.get((station, device), False),
                probes=sorted(probes.get((station, device), [])),
            )
        )
    return [StationOut(id=station, devices=items) for station, items in devices.items()]


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise HTTPException(422, f"{name} must carry a time zone, e.g. 2026-11-25T08:00:00+08:00")
    return value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ns(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(microseconds=1) * 1000


def _from_ns(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)
