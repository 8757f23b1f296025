"""The supervisor API over a real ledger (SQLite and PostgreSQL) and a real SQLite
telemetry store: auth, scopes, stations, temperatures, alerts, parcels, reveal, audit."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cloud_api.app import create_app
from cloud_api.auth import ROLES, LoginThrottle, password_matches
from cloud_api.config import ApiConfig
from gateway.coldchain.config import ColdChainConfig
from postedge.apiusers import ROLES as CLI_ROLES
from tests.apiworld import NAME, NUMBER, PASSWORD, WAYBILL, World, world_at


@pytest.fixture
def world(ledger_url: str, tmp_path: Path) -> Iterator[World]:
    with world_at(ledger_url, tmp_path) as built:
        yield built


@pytest.fixture
def api(world: World) -> Iterator[TestClient]:
    config = ApiConfig(coldchain=ColdChainConfig(default_profile="pharma"))
    app = create_app(config, world.store, ledger=world.ledger, keyring=world.keyring)
    with TestClient(app) as client:
        yield client


MEDICINE = "/api/v1/probes/village-23/village-23-medbox/medicine/temperature"
DAY = {"start": "2025-01-10T00:00:00Z", "end": "2025-01-11T00:00:00Z"}


# -- auth ------------------------------------------------------------------------------


def test_healthz_needs_no_token(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}


def test_login_sets_a_session_cookie_that_authenticates(api: TestClient, world: World) -> None:
    response = api.post("/api/v1/login", json={"username": "sup", "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["user"] == {
        "name": "sup",
        "role": "supervisor",
        "scopes": ["division:411523"],
        "permissions": ["alerts", "read"],
        "active": True,
    }
    assert "httponly" in response.headers["set-cookie"].lower()
    assert api.get("/api/v1/me").json()["name"] == "sup"  # the cookie alone
    assert api.post("/api/v1/logout").status_code == 204
    api.cookies.set("postedge_session", body["token"])  # the ended session, sent again
    assert api.get("/api/v1/me").status_code == 401


@pytest.mark.parametrize(
    ("username", "password"), [("sup", "wrong password"), ("nobody", PASSWORD)]
)
def test_bad_login_is_401_with_the_same_message(
    api: TestClient, username: str, password: str
) -> None:
    response = api.post("/api/v1/login", json={"username": username, "password": password})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "unknown user or wrong password"


def test_tokens_and_passwords_are_stored_hashed(api: TestClient, world: World) -> None:
    with world.ledger.transaction(write=False) as tx:
        user = tx.user("sup")
        stored = tx.connection.exec_driver_sql("SELECT token_hash FROM api_tokens").scalars()
        hashes = set(stored)
    assert user is not None
    assert PASSWORD not in user.password_hash
    assert password_matches(user.password_hash, PASSWORD)
    assert not password_matches(user.password_hash, PASSWORD + "x")
    assert not set(world.tokens.values()) & hashes


def test_a_revoked_or_disabled_users_token_is_401(api: TestClient, world: World) -> None:
    admin = world.auth("admin")
    tokens = api.get("/api/v1/users/op/tokens", headers=admin).json()
    assert api.delete(f"/api/v1/tokens/{tokens[0]['id']}", headers=admin).status_code == 204
    assert api.get("/api/v1/me", headers=world.auth("op")).status_code == 401
    body = {"name": "sup", "role": "supervisor", "scopes": ["*"], "active": False}
    assert api.put("/api/v1/users/sup", json=body, headers=admin).status_code == 200
    assert api.get("/api/v1/me", headers=world.auth("sup")).status_code == 401


def test_admin_makes_a_user_and_a_token_that_works_and_both_are_audited(
    api: TestClient, world: World
) -> None:
    admin = world.auth("admin")
    body = {"name": "qa", "role": "supervisor", "scopes": ["station:village-23"],
            "password": "another long one"}  # fmt: skip
    assert api.put("/api/v1/users/qa", json=body, headers=admin).status_code == 200
    made = api.post("/api/v1/users/qa/tokens", json={"label": "script"}, headers=admin)
    assert made.status_code == 201
    token = made.json()["token"]
    stations = api.get("/api/v1/stations", headers={"Authorization": f"Bearer {token}"}).json()
    assert [s["id"] for s in stations["items"]] == ["village-23"]
    actions = [a["action"] for a in api.get("/api/v1/audit", headers=admin).json()["items"]]
    assert actions[:2] == ["token_created", "user_created"]


def test_bad_roles_and_scopes_are_422(api: TestClient, world: World) -> None:
    admin = world.auth("admin")
    for role, scopes in (("boss", ["*"]), ("supervisor", ["county-01"]), ("supervisor", [])):
        body = {"name": "x1", "role": role, "scopes": scopes, "password": "long enough!"}
        assert api.put("/api/v1/users/x1", json=body, headers=admin).status_code == 422


def test_the_command_line_knows_every_role() -> None:
    assert CLI_ROLES == ROLES


# -- every route: 401 without a token, 403 where the user may not -------------------------

SAMPLES = {
    "station": "village-23",
    "device": "village-23-medbox",
    "probe": "medicine",
    "waybill": WAYBILL,
    "name": "sup",
    "token_id": "1",
}
BODIES = {
    "/api/v1/parcels/{waybill}/realname/reveal": {"reason": "court order 7"},
    "/api/v1/commands": {
        "station": "village-23",
        "device": "village-23-locker",
        "command": "open_slot",
        "args": {"board": 1, "lock": 2},
    },
    "/api/v1/users/{name}": {"name": "sup", "role": "supervisor", "scopes": ["*"]},
    "/api/v1/users/{name}/tokens": {"label": "x"},
}
OPEN_ROUTES = {("POST", "/api/v1/login")}
NEVER_FORBIDDEN = {
    ("POST", "/api/v1/logout"): "anyone may end their own session",
    ("GET", "/api/v1/me"): "anyone may see who they are",
}
# (method, path template, query): (user who is refused, why)
FORBIDDEN = {
    ("GET", "/api/v1/stations", ""): None,  # a list: filtered by scope, checked below
    ("GET", "/api/v1/stations/{station}", ""): ("outsider", "scope"),
    ("GET", "/api/v1/probes/{station}/{device}/{probe}/temperature", ""): ("outsider", "scope"),
    ("GET", "/api/v1/alerts", "?station=village-23"): ("outsider", "scope"),
    ("POST", "/api/v1/alerts/{alert_id}/acknowledge", ""): ("aud", "role"),
    ("POST", "/api/v1/alerts/{alert_id}/resolve", ""): ("outsider", "scope"),
    ("GET", "/api/v1/parcels", "?station=county-01"): ("op", "scope"),
    ("GET", "/api/v1/parcels/{waybill}/trace", ""): ("outsider", "scope"),
    ("POST", "/api/v1/parcels/{waybill}/realname/reveal", ""): ("admin", "role"),
    ("POST", "/api/v1/commands", ""): ("sup", "role"),
    ("GET", "/api/v1/reports/compliance", "?station=county-01&day=2025-01-10"): ("op", "scope"),
    ("GET", "/api/v1/events", ""): None,  # a stream filtered by scope: tests/test_live.py
    ("GET", "/api/v1/users", ""): ("sup", "role"),
    ("PUT", "/api/v1/users/{name}", ""): ("op", "role"),
    ("GET", "/api/v1/users/{name}/tokens", ""): ("aud", "role"),
    ("POST", "/api/v1/users/{name}/tokens", ""): ("sup", "role"),
    ("DELETE", "/api/v1/tokens/{token_id}", ""): ("op", "role"),
    ("GET", "/api/v1/audit", ""): ("sup", "role"),
}


def api_routes() -> set[tuple[str, str]]:
    """Every (method, path) under /api/ that the app documents."""
    document = create_app(ApiConfig()).openapi()
    return {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        if path.startswith("/api/")
        for method in operations
    }


def test_every_route_is_in_the_401_and_403_tables() -> None:
    tabled = {(method, path) for method, path, _ in FORBIDDEN}
    assert api_routes() == tabled | set(NEVER_FORBIDDEN) | OPEN_ROUTES


def _url(path: str, query: str, world: World) -> str:
    samples = SAMPLES | {"alert_id": str(world.alerts["village-23"])}
    return re.sub(r"\{(\w+)\}", lambda m: samples[m.group(1)], path) + query


@pytest.mark.parametrize(
    ("method", "path", "query"),
    sorted(set(FORBIDDEN) | {(m, p, "") for m, p in NEVER_FORBIDDEN}),
)
def test_every_route_without_a_token_is_401(
    api: TestClient, world: World, method: str, path: str, query: str
) -> None:
    for headers in ({}, {"Authorization": "Bearer pe_not-a-token"}):
        response = api.request(
            method, _url(path, query, world), json=BODIES.get(path), headers=headers
        )
        assert response.status_code == 401, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("method", "path", "query"), sorted(k for k, v in FORBIDDEN.items() if v is not None)
)
def test_every_route_refuses_the_wrong_role_or_scope_with_403(
    api: TestClient, world: World, method: str, path: str, query: str
) -> None:
    user, why = FORBIDDEN[method, path, query]  # type: ignore[misc]
    response = api.request(
        method, _url(path, query, world), json=BODIES.get(path), headers=world.auth(user)
    )
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert ("scopes" if why == "scope" else "may not") in response.json()["title"]


def test_lists_show_only_stations_in_scope(api: TestClient, world: World) -> None:
    def ids(user: str, path: str, key: str) -> list[str]:
        items = api.get(path, headers=world.auth(user)).json()["items"]
        return sorted({item[key] for item in items})

    assert ids("admin", "/api/v1/stations", "id") == [
        "county-01", "other-99", "town-05", "village-23"
    ]  # fmt: skip
    assert ids("sup", "/api/v1/stations", "id") == ["county-01", "town-05", "village-23"]
    assert ids("op", "/api/v1/stations", "id") == ["village-23"]
    assert ids("outsider", "/api/v1/stations", "id") == ["other-99"]
    assert ids("sup", "/api/v1/alerts", "station") == ["village-23"]
    assert ids("admin", "/api/v1/alerts", "station") == ["other-99", "village-23"]
    assert ids("op", "/api/v1/parcels", "waybill") == []
    assert ids("sup", "/api/v1/parcels", "waybill") == [WAYBILL]


# -- stations and temperatures ---------------------------------------------------------


def test_station_shows_devices_online_state_last_seen_probes_and_open_alerts(
    api: TestClient, world: World
) -> None:
    station = api.get("/api/v1/stations/village-23", headers=world.auth("op")).json()
    assert {k: station[k] for k in ("name", "division", "tier", "online", "open_alerts")} == {
        "name": "村服务点", "division": "411523105201", "tier": "village",
        "online": 1, "open_alerts": 1,
    }  # fmt: skip
    assert station["devices"] == [
        {"id": "village-23-locker", "role": "locker", "online": False, "last_seen": None,
         "probes": []},
        {"id": "village-23-medbox", "role": "probe", "online": True,
         "last_seen": "2025-01-10T00:00:00.000Z", "probes": ["medicine", "produce"]},
    ]  # fmt: skip


def test_stations_are_paginated(api: TestClient, world: World) -> None:
    page = api.get("/api/v1/stations?page=2&per_page=3", headers=world.auth("admin")).json()
    assert (page["total"], page["page"], page["per_page"]) == (4, 2, 3)
    assert [s["id"] for s in page["items"]] == ["village-23"]


def test_temperature_series_with_profile_limits(api: TestClient, world: World) -> None:
    body = api.get(MEDICINE, params=DAY, headers=world.auth("sup")).json()
    assert body["points"] == [
        {"ts": "2025-01-10T00:01:00.000Z", "celsius": 5.0, "min": None, "max": None},
        {"ts": "2025-01-10T00:03:00.000Z", "celsius": 5.5, "min": None, "max": None},
        {"ts": "2025-01-10T00:04:00.000Z", "celsius": 9.25, "min": None, "max": None},
    ]
    assert body["profile"] == {
        "name": "pharma", "low_c": 2.0, "high_c": 8.0, "critical_low_c": 0.0,
        "critical_high_c": 12.0,
    }  # fmt: skip


def test_temperature_downsampled_to_five_minutes(api: TestClient, world: World) -> None:
    params = DAY | {"every": "5m"}
    body = api.get(MEDICINE, params=params, headers=world.auth("sup")).json()
    assert body["every"] == "5m"
    assert body["points"] == [
        {"ts": "2025-01-10T00:00:00.000Z", "celsius": pytest.approx(19.75 / 3),
         "min": 5.0, "max": 9.25},
    ]  # fmt: skip


def test_range_is_start_inclusive_end_exclusive_and_time_zones_count(
    api: TestClient, world: World
) -> None:
    # 08:03+08:00 is 00:03Z: the reading at 00:03 is in, the one at 00:04 is out.
    params = {"start": "2025-01-10T08:03:00+08:00", "end": "2025-01-10T00:04:00Z"}
    points = api.get(MEDICINE, params=params, headers=world.auth("sup")).json()["points"]
    assert [p["ts"] for p in points] == ["2025-01-10T00:03:00.000Z"]


def test_unknown_probe_is_404_problem(api: TestClient, world: World) -> None:
    path = "/api/v1/probes/village-23/village-23-medbox/nothing/temperature"
    response = api.get(path, params=DAY, headers=world.auth("sup"))
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("path", "params", "fragment"),
    [
        ("/api/v1/probes/bad%20id/medbox/medicine/temperature", DAY, "station"),
        (MEDICINE, {"start": "yesterday"}, "start"),
        (MEDICINE, {"start": "2025-01-10T00:00:00"}, "time zone"),
        (MEDICINE, {"start": "2025-01-11T00:00:00Z", "end": "2025-01-10T00:00:00Z"}, "before"),
        (MEDICINE, {**DAY, "limit": 0}, "limit"),
        (MEDICINE, {**DAY, "every": "2m"}, "every"),
        ("/api/v1/alerts", {"state": "closed"}, "state"),
    ],
)
def test_bad_requests_are_422_problems(
    api: TestClient, world: World, path: str, params: dict[str, str | int], fragment: str
) -> None:
    response = api.get(path, params=params, headers=world.auth("admin"))
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert fragment in (problem.get("detail", "") + problem["title"])


# -- alerts ----------------------------------------------------------------------------


def test_alert_acknowledge_then_resolve_is_stored_and_audited(
    api: TestClient, world: World
) -> None:
    number = world.alerts["village-23"]
    op = world.auth("op")
    acked = api.post(f"/api/v1/alerts/alert:{number}/acknowledge", headers=op)
    assert acked.status_code == 200
    assert (acked.json()["state"], acked.json()["acknowledged_by"]) == ("acknowledged", "op")
    again = api.post(f"/api/v1/alerts/{number}/acknowledge", headers=op)
    assert again.status_code == 409
    assert api.post(f"/api/v1/alerts/{number}/resolve", headers=op).json()["state"] == "resolved"
    with world.ledger.transaction(write=False) as tx:
        row = tx.alert(number)
    assert row is not None
    assert (row.state, row.resolved_by) == ("resolved", "op")
    audit = api.get("/api/v1/audit", headers=world.auth("aud")).json()["items"]
    assert [(a["action"], a["target"]) for a in audit[:2]] == [
        ("alert_resolve", f"alert:{number}"), ("alert_acknowledge", f"alert:{number}")
    ]  # fmt: skip


def test_alerts_filter_by_state_and_kind(api: TestClient, world: World) -> None:
    admin = world.auth("admin")
    api.post(f"/api/v1/alerts/{world.alerts['other-99']}/resolve", headers=admin)
    open_ = api.get("/api/v1/alerts?state=open", headers=admin).json()
    assert [a["station"] for a in open_["items"]] == ["village-23"]
    assert open_["items"][0]["ref"] == f"alert:{world.alerts['village-23']}"
    assert api.get("/api/v1/alerts?kind=door_open", headers=admin).json()["total"] == 0
    assert api.get("/api/v1/alerts?since=2025-01-11T00:00:00Z", headers=admin).json()["items"] == []


def test_unknown_alert_is_404(api: TestClient, world: World) -> None:
    assert api.post("/api/v1/alerts/99999/resolve", headers=world.auth("admin")).status_code == 404


# -- parcels ---------------------------------------------------------------------------


def test_trace_shows_events_in_order_clearance_and_masked_identity(
    api: TestClient, world: World
) -> None:
    trace = api.get(f"/api/v1/parcels/{WAYBILL}/trace", headers=world.auth("sup")).json()
    assert [e["kind"] for e in trace["events"]] == ["acceptance", "xray"]
    assert trace["clearance"] == {"cleared": True, "realname": True, "xray": "PASS", "hold": None}
    assert trace["realname"]["masked_number"].startswith("1101")
    assert NUMBER not in str(trace)
    assert NAME not in str(trace)


def test_reveal_is_for_auditors_and_every_reveal_is_audited(api: TestClient, world: World) -> None:
    path = f"/api/v1/parcels/{WAYBILL}/realname/reveal"
    response = api.post(path, json={"reason": "court order 7"}, headers=world.auth("aud"))
    assert response.json() == {"id_type": "resident", "number": NUMBER, "name": NAME}
    records = api.get("/api/v1/audit?action=realname_reveal", headers=world.auth("aud")).json()
    [record] = records["items"]
    assert (record["user"], record["target"], record["details"]) == (
        "aud", WAYBILL, {"reason": "court order 7"}
    )  # fmt: skip
    assert NUMBER not in str(records)
    assert NAME not in str(records)


@pytest.mark.parametrize(
    "reason",
    [f"asked about {NUMBER}", "caller 138 0013 8000 disputes it", "old id 110105491231002"],
    ids=["resident-id", "spaced-mobile", "legacy-15-digit-id"],
)
def test_a_reveal_reason_with_an_id_or_phone_number_is_refused_and_not_kept(
    api: TestClient, world: World, reason: str
) -> None:
    path = f"/api/v1/parcels/{WAYBILL}/realname/reveal"
    response = api.post(path, json={"reason": reason}, headers=world.auth("aud"))
    assert response.status_code == 422
    assert "must not hold an identity document or phone number" in response.json()["detail"]
    assert NAME not in response.text
    records = api.get("/api/v1/audit?action=realname_reveal", headers=world.auth("aud")).json()
    assert records["items"] == []  # nothing revealed, nothing written


def test_a_reveal_reason_may_name_a_short_case_number(api: TestClient, world: World) -> None:
    path = f"/api/v1/parcels/{WAYBILL}/realname/reveal"
    response = api.post(path, json={"reason": "case 2026-1204 (police)"}, headers=world.auth("aud"))
    assert response.status_code == 200


def test_unknown_waybill_is_404(api: TestClient, world: World) -> None:
    response = api.get("/api/v1/parcels/NOPE1/trace", headers=world.auth("admin"))
    assert response.status_code == 404


# -- commands (no broker configured here; with a broker: tests/test_api_commands.py) ---


def test_commands_without_a_broker_are_503_and_audited(api: TestClient, world: World) -> None:
    body = BODIES["/api/v1/commands"]
    response = api.post("/api/v1/commands", json=body, headers=world.auth("op"))
    assert response.status_code == 503
    [record] = api.get("/api/v1/audit", headers=world.auth("admin")).json()["items"]
    assert (record["action"], record["target"]) == ("command_failed", "village-23-locker")


def test_openapi_documents_the_routes_and_bearer_auth(api: TestClient) -> None:
    document = api.get("/openapi.json").json()
    tabled = {path for _, path, _ in FORBIDDEN} | {path for _, path in NEVER_FORBIDDEN}
    assert tabled | {"/healthz", "/api/v1/login"} <= set(document["paths"])
    assert {"HTTPBearer", "APIKeyCookie"} <= set(document["components"]["securitySchemes"])
    unsecured = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if path.startswith("/api/") and not operation.get("security")
    }
    assert unsecured == OPEN_ROUTES  # every other operation says it needs a token


def test_repeated_failed_logins_are_refused_for_a_while(api: TestClient) -> None:
    wrong = {"username": "sup", "password": "not it at all"}
    assert [api.post("/api/v1/login", json=wrong).status_code for _ in range(5)] == [401] * 5
    refused = api.post("/api/v1/login", json={"username": "sup", "password": PASSWORD})
    assert refused.status_code == 429  # even the right password, until the window passes
    assert 800 <= int(refused.headers["retry-after"]) <= 901
    # Another user name is not affected.
    other = api.post("/api/v1/login", json={"username": "op", "password": PASSWORD})
    assert other.status_code == 200


def test_the_login_throttle_forgets_old_failures() -> None:
    throttle = LoginThrottle(limit=2, window=timedelta(minutes=10))
    start = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
    throttle.failed("a", start)
    throttle.failed("a", start + timedelta(minutes=1))
    assert throttle.wait("a", start + timedelta(minutes=2)) == timedelta(minutes=8)
    assert throttle.wait("a", start + timedelta(minutes=10)) is None  # the first expired
    throttle.failed("a", start + timedelta(minutes=10))
    throttle.succeeded("a")
    assert throttle.wait("a", start + timedelta(minutes=10)) is None
