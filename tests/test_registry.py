"""The device registry: strict validation, the role table, identity checks, routing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import (
    AnyBody,
    AnyEnvelope,
    HealthBody,
    Kind,
    ScanBody,
    StatusBody,
    TemperatureBody,
    XrayBody,
    make_envelope,
)
from contracts.configfile import ConfigFileError
from gateway.registry import (
    KIND_SENDERS,
    ROLE_KINDS,
    ROLES,
    Registry,
    RegistryMismatch,
    Routing,
    check_identity,
    load_registry,
    longest_prefix_route,
    tier_problem,
)

REGISTRY = """\
[[stations]]
id = "county-410523"
name = "汤阴县分拣中心"
division = "410523000000"
tier = "county"

[[stations]]
id = "town-410523100"
name = "城关镇服务站"
division = "410523100000"
tier = "township"

[[devices]]
id = "sorter-1"
station = "county-410523"
role = "sorter"
[devices.routing]
exception_chute = 99
routes = { "4105" = 1, "410523" = 2, "41" = 3 }

[[devices]]
id = "probe-1"
station = "town-410523100"
role = "probe"

[[devices]]
id = "xray-1"
station = "county-410523"
role = "xray"
"""

NOW = dt.datetime(2026, 11, 25, 8, 0, tzinfo=dt.UTC)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registry.toml"
    path.write_text(text)
    return path


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return load_registry(write(tmp_path, REGISTRY))


def test_the_example_registry_loads_and_finds_devices(registry: Registry) -> None:
    sorter = registry.device("sorter-1")
    assert sorter is not None
    assert sorter.station == "county-410523"
    assert sorter.routing is not None
    assert sorter.routing.routes == {"4105": 1, "410523": 2, "41": 3}
    assert registry.device("nobody") is None
    station = registry.station("town-410523100")
    assert station is not None
    assert (station.name, station.tier) == ("城关镇服务站", "township")
    assert registry.station("nowhere") is None


def test_a_station_without_devices_is_a_valid_registry(tmp_path: Path) -> None:
    text = REGISTRY.split("[[devices]]")[0]
    assert load_registry(write(tmp_path, text)).devices == []


SORTER_ROUTING = (
    '[devices.routing]\nexception_chute = 99\nroutes = { "4105" = 1, "410523" = 2, "41" = 3 }'
)

BAD = [
    # (replace this, with this, expected "key: message" fragment)
    ('tier = "county"', 'tier = "county"\nmanager = "x"', "stations.0.manager: Extra inputs"),
    ('role = "probe"', 'role = "probe"\nserial = 1', "devices.1.serial: Extra inputs"),
    ('"41" = 3 }', '"41" = 3 }\nfallback = 1', "devices.0.routing.fallback: Extra inputs"),
    (
        'id = "town-410523100"',
        'id = "county-410523"',
        "stations.1.id: id 'county-410523' is already",
    ),
    (
        'id = "probe-1"',
        'id = "sorter-1"',
        "devices.1.id: id 'sorter-1' is already used by devices.0",
    ),
    (
        'station = "town-410523100"',
        'station = "town-9"',
        "devices.1.station: station 'town-9' is not",
    ),
    ('role = "probe"', 'role = "probe"\n' + SORTER_ROUTING, "devices.1.routing: only sorters"),
    (SORTER_ROUTING, "", "devices.0.routing: a sorter needs a [devices.routing] table"),
    ('"41" = 3', '"4x" = 3', "devices.0.routing.routes.4x.[key]: String should match"),
    ('"41" = 3', '"4105231000001" = 3', "routes.4105231000001.[key]: String should match"),
    ('"41" = 3', '"" = 3', "devices.0.routing.routes..[key]: String should match"),
    ('"41" = 3', '"41" = 65536', "devices.0.routing.routes.41: Input should be less than or"),
    ('"41" = 3', '"41" = -1', "devices.0.routing.routes.41: Input should be greater than"),
    ("exception_chute = 99", "exception_chute = 65536", "devices.0.routing.exception_chute: Input"),
    (
        "exception_chute = 99",
        "exception_chute = 2",
        "exception_chute: chute 2 is also the chute of",
    ),
    ('routes = { "4105" = 1, "410523" = 2, "41" = 3 }', "routes = {}", "routes: Dictionary should"),
    ('"41" = 3', '"41" = "3"', "devices.0.routing.routes.41: Input should be a valid integer"),
    ('division = "410523000000"', 'division = "41052300000"', "stations.0.division: String should"),
    ('role = "probe"', 'role = "thermometer"', "devices.1.role: Input should be 'locker'"),
    ('tier = "township"', 'tier = "hamlet"', "stations.1.tier: Input should be 'county'"),
    ('name = "城关镇服务站"', 'name = ""', "stations.1.name: String should have at least 1"),
    ('id = "xray-1"', 'id = "xray 1"', "devices.2.id: String should match pattern"),
    # Tiers that do not fit the structure of the division code.
    ('tier = "county"', 'tier = "township"', "stations.0.division: a township's division code has"),
    ('tier = "township"', 'tier = "county"', "stations.1.division: a county's division code ends"),
    ('division = "410523100000"', 'division = "410523100201"', "stations.1.division: a township's"),
    ('division = "410523000000"', 'division = "410000000000"', "stations.0.division: a county's "),
]


@pytest.mark.parametrize(("old", "new", "expected"), BAD, ids=[case[2][:40] for case in BAD])
def test_invalid_registries_name_file_and_key(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    assert old in REGISTRY
    path = write(tmp_path, REGISTRY.replace(old, new, 1))
    with pytest.raises(ConfigFileError) as raised:
        load_registry(path)
    assert f"{path}: " in str(raised.value)
    assert expected in str(raised.value)


def test_an_empty_registry_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="stations: Field required"):
        load_registry(write(tmp_path, ""))


@pytest.mark.parametrize(
    ("division", "tier"),
    [
        ("410523000000", "county"),  # 汤阴县
        ("110101000000", "county"),  # 北京市东城区 (a district is county level)
        ("441900000000", "county"),  # 东莞市: a city without counties is its own county level
        ("410523100000", "township"),
        ("441900003000", "township"),  # 东莞市东城街道: county digits 00
        ("410523100201", "village"),
        ("410523100001", "village"),
    ],
)
def test_divisions_that_fit_their_tier(division: str, tier: str) -> None:
    assert tier_problem(division, tier) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("division", "tier", "problem"),
    [
        ("000523000000", "county", "province digits"),
        ("410000000000", "county", "this is a province"),
        ("410523100000", "county", "ends in six zeros"),
        ("410523000001", "county", "ends in six zeros"),
        ("410523000000", "township", "this is a county or above"),
        ("410523100201", "township", "ends in three zeros"),
        ("410523100000", "village", "this is a township or above"),
        ("410523000000", "village", "this is a township or above"),
    ],
)
def test_divisions_that_do_not_fit_their_tier(division: str, tier: str, problem: str) -> None:
    found = tier_problem(division, tier)  # type: ignore[arg-type]
    assert found is not None
    assert problem in found


# The rule from the issue, written out once more by hand: a change to either side fails.
EXPECTED_SENDERS = {
    Kind.STATUS: set(ROLES),
    Kind.HEALTH: set(ROLES),
    Kind.COMMAND_RESULT: set(ROLES),
    Kind.TEMPERATURE: {"probe", "locker"},
    Kind.SCAN: {"scanner", "camera", "counter", "locker", "sorter", "xray"},
    Kind.DOOR: {"locker"},
    Kind.DEPOSIT_REQUEST: {"locker"},
    Kind.DEPOSIT: {"locker"},
    Kind.PICKUP: {"locker"},
    Kind.DOOR_ALARM: {"locker"},
    Kind.SORT_MISS: {"sorter"},
    Kind.INDUCTION: {"sorter"},
    Kind.DIVERT: {"sorter"},
    Kind.XRAY: {"xray"},
    Kind.ACCEPTANCE: {"counter"},
}


def test_every_kind_has_its_senders_listed() -> None:
    assert set(KIND_SENDERS) == set(Kind)
    assert {kind: set(roles) for kind, roles in KIND_SENDERS.items()} == EXPECTED_SENDERS


def test_role_kinds_is_the_same_table_by_role() -> None:
    assert set(ROLE_KINDS) == set(ROLES)
    for role, kinds in ROLE_KINDS.items():
        assert kinds == {kind for kind, roles in EXPECTED_SENDERS.items() if role in roles}
    assert Kind.XRAY not in ROLE_KINDS["probe"]
    assert Kind.TEMPERATURE in ROLE_KINDS["locker"]


def envelope(station: str, device: str, body: AnyBody) -> AnyEnvelope:
    return make_envelope(station=station, device=device, boot=1, seq=7, ts=NOW, body=body)


XRAY_PASS = XrayBody(
    waybill="SF1234567890",
    verdict="PASS",
    operator="op-1",
    image="img/0001.png",
    scanned_at=NOW,
)
STATUS = StatusBody(state="online", boot=1, version="0.1.0")


@pytest.mark.parametrize(
    ("station", "device", "body"),
    [
        ("county-410523", "xray-1", XRAY_PASS),
        ("county-410523", "xray-1", ScanBody(reader="r1", code="SF1234567890")),
        ("town-410523100", "probe-1", TemperatureBody(probe="p1", celsius=4.5)),
        ("town-410523100", "probe-1", STATUS),
        (
            "county-410523",
            "sorter-1",
            HealthBody(
                uptime_s=1, cpu_percent=1, rss_bytes=1, disk_free_bytes=1, outbox_depth=0,
                outbox_bytes=0, thinned=0, links={},
            ),
        ),
    ],
)  # fmt: skip
def test_registered_devices_may_send_what_their_role_sends(
    registry: Registry, station: str, device: str, body: AnyBody
) -> None:
    entry = check_identity(registry, envelope(station, device, body))
    assert entry.id == device


def test_an_unknown_device_is_refused(registry: Registry) -> None:
    with pytest.raises(RegistryMismatch, match="device 'ghost' is not in the registry") as raised:
        check_identity(registry, envelope("county-410523", "ghost", STATUS))
    assert raised.value.reason == "identity"


def test_a_device_speaking_for_another_station_is_refused(registry: Registry) -> None:
    with pytest.raises(
        RegistryMismatch,
        match="device 'probe-1' belongs to station 'town-410523100', not 'county-410523'",
    ):
        check_identity(
            registry, envelope("county-410523", "probe-1", TemperatureBody(probe="p", celsius=1))
        )


def test_a_probe_cannot_send_an_xray_verdict(registry: Registry) -> None:
    with pytest.raises(RegistryMismatch) as raised:
        check_identity(registry, envelope("town-410523100", "probe-1", XRAY_PASS))
    message = str(raised.value)
    assert message == "device 'probe-1' is a probe, which may not send 'xray'"
    assert "SF1234567890" not in message  # names ids and kinds, never the payload
    assert raised.value.reason == "identity"


def test_a_sorter_cannot_report_temperatures(registry: Registry) -> None:
    with pytest.raises(RegistryMismatch, match="is a sorter, which may not send 'temperature'"):
        check_identity(
            registry, envelope("county-410523", "sorter-1", TemperatureBody(probe="p", celsius=1))
        )


ROUTING = Routing(exception_chute=99, routes={"4105": 1, "410523": 2, "41": 3, "11": 4})


@pytest.mark.parametrize(
    ("division", "chute"),
    [
        ("410523100201", 2),  # longest: 410523
        ("410523000000", 2),
        ("410522000000", 1),  # 410523 does not match; 4105 does
        ("410100000000", 3),  # only the province
        ("110101000000", 4),
        ("120101000000", None),  # no prefix matches
        ("4", None),  # shorter than every prefix
        ("", None),
    ],
)
def test_longest_prefix_route(division: str, chute: int | None) -> None:
    assert longest_prefix_route(ROUTING, division) == chute


def test_a_full_twelve_digit_route_matches_only_that_code() -> None:
    routing = Routing(exception_chute=0, routes={"410523100201": 7, "4105": 1})
    assert longest_prefix_route(routing, "410523100201") == 7
    assert longest_prefix_route(routing, "410523100202") == 1


def test_a_prefix_longer_than_the_code_never_matches() -> None:
    routing = Routing(exception_chute=0, routes={"410523": 5})
    assert longest_prefix_route(routing, "4105") is None


@given(
    division=st.from_regex(r"[0-9]{12}", fullmatch=True),
    lengths=st.sets(st.integers(1, 12)),
    others=st.dictionaries(st.from_regex(r"[0-9]{1,12}", fullmatch=True), st.integers(1, 99)),
)
def test_longest_prefix_route_agrees_with_brute_force(
    division: str, lengths: set[int], others: dict[str, int]
) -> None:
    routes = {**others, **{division[:length]: 100 + length for length in lengths}}
    routing = Routing.model_construct(exception_chute=0, routes=routes)
    matching = [prefix for prefix in routes if division.startswith(prefix)]
    expected = routes[max(matching, key=len)] if matching else None
    assert longest_prefix_route(routing, division) == expected
