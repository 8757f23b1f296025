"""The supervisor API over a real SQLite telemetry store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cloud_api.app import create_app
from cloud_api.config import ApiConfig
from contracts import StatusBody, TemperatureBody, make_envelope
from gateway.convert import to_points
from gateway.telemetry import open_store
from gateway.telemetry.config import SqliteStoreConfig

T0 = datetime(2025, 1, 10, 0, 0, tzinfo=UTC)


def store_readings(config: SqliteStoreConfig) -> None:
    """Two stations: one with two probes and an online status, one offline without readings."""
    envelopes = [
        make_envelope(
            station="village-23",
            device="medbox",
            boot=1,
            seq=seq,
            ts=T0 + timedelta(minutes=seq),
            body=TemperatureBody(probe=probe, celsius=celsius, humidity=50.0),
        )
        for seq, (probe, celsius) in enumerate(
            [("medicine", 5.0), ("produce", 7.5), ("medicine", 5.5), ("medicine", 9.25)], start=1
        )
    ]
    envelopes.append(
        make_envelope(
            station="village-23",
            device="medbox",
            boot=1,
            seq=10,
            ts=T0,
            body=StatusBody(state="online", boot=1, version="test"),
        )
    )
    envelopes.append(
        make_envelope(
            station="county-01",
            device="coldroom",
            boot=4,
            seq=1,
            ts=T0,
            body=StatusBody(state="offline", boot=4, version="test"),
        )
    )
    store = open_store(config)
    store.open()
    try:
        store.write([point for envelope in envelopes for point in to_points(envelope)])
    finally:
        store.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    config = SqliteStoreConfig(kind="sqlite", path=tmp_path / "telemetry.sqlite")
    store_readings(config)
    with TestClient(create_app(ApiConfig(store=config))) as client:
        yield client


MEDICINE = "/api/v1/probes/village-23/medbox/medicine/temperature"
DAY = {"start": "2025-01-10T00:00:00Z", "end": "2025-01-11T00:00:00Z"}


def test_healthz(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}


def test_stations_list_devices_online_state_and_probes(api: TestClient) -> None:
    assert api.get("/api/v1/stations").json() == [
        {"id": "county-01", "devices": [{"id": "coldroom", "online": False, "probes": []}]},
        {
            "id": "village-23",
            "devices": [{"id": "medbox", "online": True, "probes": ["medicine", "produce"]}],
        },
    ]


def test_temperature_series_in_range_with_device_timestamps(api: TestClient) -> None:
    assert api.get(MEDICINE, params=DAY).json() == {
        "points": [
            {"ts": "2025-01-10T00:01:00.000Z", "celsius": 5.0},
            {"ts": "2025-01-10T00:03:00.000Z", "celsius": 5.5},
            {"ts": "2025-01-10T00:04:00.000Z", "celsius": 9.25},
        ]
    }


def test_range_is_start_inclusive_end_exclusive_and_time_zones_count(api: TestClient) -> None:
    # 08:03+08:00 is 00:03Z: the reading at 00:03 is in, the one at 00:04 is out.
    params = {"start": "2025-01-10T08:03:00+08:00", "end": "2025-01-10T00:04:00Z"}
    assert api.get(MEDICINE, params=params).json() == {
        "points": [{"ts": "2025-01-10T00:03:00.000Z", "celsius": 5.5}]
    }


def test_limit(api: TestClient) -> None:
    points = api.get(MEDICINE, params={**DAY, "limit": 2}).json()["points"]
    assert [p["celsius"] for p in points] == [5.0, 5.5]


def test_default_range_is_the_last_day(api: TestClient) -> None:
    assert api.get(MEDICINE).json() == {"points": []}  # the readings are from 2025
    params = {"end": "2025-01-10T12:00:00Z"}
    assert len(api.get(MEDICINE, params=params).json()["points"]) == 3


def test_unknown_probe_is_404_problem(api: TestClient) -> None:
    response = api.get("/api/v1/probes/village-23/medbox/nothing/temperature", params=DAY)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "no probe village-23/medbox/nothing"


@pytest.mark.parametrize(
    ("path", "params", "fragment"),
    [
        ("/api/v1/probes/bad%20id/medbox/medicine/temperature", DAY, "station"),
        (MEDICINE, {"start": "yesterday"}, "start"),
        (MEDICINE, {"start": "2025-01-10T00:00:00"}, "time zone"),
        (MEDICINE, {"start": "2025-01-11T00:00:00Z", "end": "2025-01-10T00:00:00Z"}, "before"),
        (MEDICINE, {**DAY, "limit": 0}, "limit"),
    ],
)
def test_bad_requests_are_422_problems(
    api: TestClient, path: str, params: dict[str, object], fragment: str
) -> None:
    response = api.get(path, params=params)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422
    assert fragment in (problem.get("detail", "") + problem["title"])


def test_openapi_documents_the_routes(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    assert set(paths) >= {
        "/healthz",
        "/api/v1/stations",
        "/api/v1/probes/{station}/{device}/{probe}/temperature",
    }


def test_store_down_is_503_problem(tmp_path: Path) -> None:
    from gateway.telemetry.config import InfluxStoreConfig
    from postedge.localservers import free_port

    config = InfluxStoreConfig(kind="influxdb", url=f"http://127.0.0.1:{free_port()}", timeout_s=1)
    with TestClient(create_app(ApiConfig(store=config))) as client:
        response = client.get("/api/v1/stations")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
