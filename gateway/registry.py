"""The device registry: which stations and devices exist, and what each device may say.

The registry is a TOML file the operator keeps (``postedge gateway provision`` turns it
into broker credentials; the gateway checks every envelope against it)::

    [[stations]]
    id = "county-410523"
    name = "汤阴县分拣中心"
    division = "410523000000"
    tier = "county"

    [[devices]]
    id = "sorter-1"
    station = "county-410523"
    role = "sorter"
    [devices.routing]
    exception_chute = 99
    routes = { "4105" = 1, "410523" = 2, "41" = 3 }

Validation is strict and every error names the file and the key: unknown keys, duplicate
ids, a device of a station that is not listed, routing on a device that is not a sorter
(or a sorter without it), bad route prefixes or chutes, a division code whose structure
does not fit the station's tier (see :func:`tier_problem`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Literal, NoReturn, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from contracts.configfile import load_toml_model
from contracts.envelope import AnyEnvelope, Kind
from contracts.errors import ContractError
from contracts.ids import Identifier
from contracts.station import DivisionCode

Role = Literal["locker", "sorter", "xray", "counter", "probe", "camera", "scanner"]
ROLES: tuple[Role, ...] = get_args(Role)
Tier = Literal["county", "township", "village"]

_MODEL = ConfigDict(strict=True, extra="forbid", frozen=True)

RoutePrefix = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,12}$")]
"""The leading 1 to 12 digits of a division code, e.g. ``41`` (a province) or ``410523``."""

Chute = Annotated[int, Field(ge=0, le=0xFFFF)]


def _fail(title: str, problems: list[tuple[tuple[str | int, ...], str]]) -> NoReturn:
    """Raise a validation error whose problems sit at the keys they concern.

    A plain ``ValueError`` from a model validator is reported at the model itself; the
    operator wants ``devices.2.station``, not ``(top level)``.
    """
    details = [
        InitErrorDetails(
            type=PydanticCustomError("registry", "{message}", {"message": message}),
            loc=loc,
            input=None,
        )
        for loc, message in problems
    ]
    raise ValidationError.from_exception_data(title, details)


def tier_problem(division: str, tier: Tier) -> str | None:
    """Why ``division`` cannot be a station of ``tier``, or None if it can.

    A 统计用区划代码 is 2 digits province, 2 city, 2 county, 3 township, 3 village. The
    rules enforced:

    - every tier: the province digits are not ``00``;
    - county: the township and village digits (7-12) are zero, and the city and county
      digits (3-6) are not both zero. A county digit pair of ``00`` is accepted because
      prefecture-level cities without counties (东莞 441900, 中山 442000, 儋州 460400,
      嘉峪关 620200) serve as their own county level;
    - township: the village digits (10-12) are zero and the township digits (7-9) are not
      (the county digits may be ``00``, as for 东莞's towns);
    - village: the village digits (10-12) are not zero.
    """
    if division[:2] == "00":
        return "a division code's province digits (1-2) cannot be 00"
    if tier == "county":
        if division[6:] != "000000":
            return "a county's division code ends in six zeros (no township or village part)"
        if division[2:6] == "0000":
            return "a county's division code has city or county digits (3-6); this is a province"
    elif tier == "township":
        if division[9:] != "000":
            return "a township's division code ends in three zeros (no village part)"
        if division[6:9] == "000":
            return "a township's division code has township digits (7-9); this is a county or above"
    elif division[9:] == "000":
        return "a village's division code has village digits (10-12); this is a township or above"
    return None


class StationEntry(BaseModel):
    """A station of the three-tier network: a county sorting centre, a township service
    station or a village service point."""

    model_config = _MODEL

    id: Identifier
    name: str = Field(min_length=1, max_length=200)
    division: DivisionCode
    tier: Tier

    @model_validator(mode="after")
    def _tier_fits_division(self) -> StationEntry:
        problem = tier_problem(self.division, self.tier)
        if problem is not None:
            _fail("StationEntry", [(("division",), problem)])
        return self


class Routing(BaseModel):
    """A sorter's routing table: division-code prefix -> chute, and the exception chute.

    A parcel goes to the chute of the longest prefix of its destination code (see
    :func:`longest_prefix_route`); write prefixes without padding zeros (``4105``, not
    ``410500000000``, which matches only that one code).
    """

    model_config = _MODEL

    exception_chute: Chute
    routes: dict[RoutePrefix, Chute] = Field(min_length=1)

    @model_validator(mode="after")
    def _exception_chute_is_its_own(self) -> Routing:
        shared = sorted(
            prefix for prefix, chute in self.routes.items() if chute == self.exception_chute
        )
        if shared:
            message = (
                f"chute {self.exception_chute} is also the chute of route(s) {', '.join(shared)}"
            )
            _fail("Routing", [(("exception_chute",), message)])
        return self


class DeviceEntry(BaseModel):
    """A device: its id (also its MQTT username and certificate CN), station and role."""

    model_config = _MODEL

    id: Identifier
    station: Identifier
    role: Role
    routing: Routing | None = None

    @model_validator(mode="after")
    def _routing_iff_sorter(self) -> DeviceEntry:
        if self.role == "sorter" and self.routing is None:
            _fail("DeviceEntry", [(("routing",), "a sorter needs a [devices.routing] table")])
        if self.role != "sorter" and self.routing is not None:
            _fail("DeviceEntry", [(("routing",), f"only sorters have routing, not a {self.role}")])
        return self


class Registry(BaseModel):
    """Every station and device a gateway serves."""

    model_config = _MODEL

    stations: list[StationEntry] = Field(min_length=1)
    devices: list[DeviceEntry] = Field(default_factory=list)
    _stations: dict[str, StationEntry] = PrivateAttr(default_factory=dict)
    _devices: dict[str, DeviceEntry] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Registry:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        problems += _duplicates("stations", [station.id for station in self.stations])
        problems += _duplicates("devices", [device.id for device in self.devices])
        known = {station.id for station in self.stations}
        for index, device in enumerate(self.devices):
            if device.station not in known:
                message = f"station {device.station!r} is not one of the [[stations]]"
                problems.append((("devices", index, "station"), message))
        if problems:
            _fail("Registry", problems)
        self._stations = {station.id: station for station in self.stations}
        self._devices = {device.id: device for device in self.devices}
        return self

    def device(self, device_id: str) -> DeviceEntry | None:
        """The device called ``device_id``, or None if the registry does not list it."""
        return self._devices.get(device_id)

    def station(self, station_id: str) -> StationEntry | None:
        """The station called ``station_id``, or None if the registry does not list it."""
        return self._stations.get(station_id)


def _duplicates(key: str, ids: list[str]) -> list[tuple[tuple[str | int, ...], str]]:
    first: dict[str, int] = {}
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for index, item in enumerate(ids):
        if item in first:
            message = f"id {item!r} is already used by {key}.{first[item]}"
            problems.append(((key, index, "id"), message))
        else:
            first[item] = index
    return problems


def load_registry(path: Path) -> Registry:
    """Read and validate a registry file; raise ``ConfigFileError`` naming file and key."""
    return load_toml_model(path, Registry)


_ANY: frozenset[Role] = frozenset(ROLES)

KIND_SENDERS: Mapping[Kind, frozenset[Role]] = MappingProxyType(
    {
        Kind.STATUS: _ANY,
        Kind.HEALTH: _ANY,
        Kind.COMMAND_RESULT: _ANY,
        Kind.SCAN: frozenset({"scanner", "camera", "counter", "locker", "sorter", "xray"}),
        Kind.TEMPERATURE: frozenset({"probe", "locker"}),
        Kind.DOOR: frozenset({"locker"}),
        Kind.DEPOSIT_REQUEST: frozenset({"locker"}),
        Kind.DEPOSIT: frozenset({"locker"}),
        Kind.PICKUP: frozenset({"locker"}),
        Kind.DOOR_ALARM: frozenset({"locker"}),
        Kind.SORT_MISS: frozenset({"sorter"}),
        Kind.INDUCTION: frozenset({"sorter"}),
        Kind.DIVERT: frozenset({"sorter"}),
        Kind.XRAY: frozenset({"xray"}),
        Kind.ACCEPTANCE: frozenset({"counter"}),
    }
)
"""Which roles may send each envelope kind; every kind is listed, so a new kind fails
the tests until someone decides who may send it.

The rule: every device reports its own ``status``, ``health`` and ``command_result``.
Beyond that a device speaks only for the hardware its role has: a ``scan`` comes from
anything with a barcode reader (scanner, camera, counter, locker, sorter, X-ray machine;
never a probe); ``temperature`` from a probe or a locker (a refrigerated locker has
probes); the locker workflow (``door``, ``deposit_request``, ``deposit``, ``pickup``) only
from a locker; ``induction`` and ``divert`` only from a sorter; ``xray`` verdicts only from
an X-ray machine; ``acceptance``, which carries a sender's identity, only from a counter.
So a compromised probe cannot clear a parcel with a forged X-ray pass.
"""

ROLE_KINDS: Mapping[Role, frozenset[Kind]] = MappingProxyType(
    {
        role: frozenset(kind for kind, senders in KIND_SENDERS.items() if role in senders)
        for role in ROLES
    }
)
"""The same table by role: the envelope kinds a device of each role may send."""


class RegistryMismatch(ContractError):
    """An envelope the registry says this device may not send. Messages name ids and
    kinds only, never payload content."""

    reason = "identity"


def check_identity(registry: Registry, envelope: AnyEnvelope) -> DeviceEntry:
    """The registry's entry for the envelope's device, if it may send this envelope.

    Raises :class:`RegistryMismatch` for an unknown device, an envelope whose station is
    not the device's registered station, or a kind the device's role may not send.
    """
    device = registry.device(envelope.device)
    if device is None:
        raise RegistryMismatch(f"device {envelope.device!r} is not in the registry")
    if device.station != envelope.station:
        raise RegistryMismatch(
            f"device {device.id!r} belongs to station {device.station!r}, not {envelope.station!r}"
        )
    kind = Kind(envelope.kind)
    if kind not in ROLE_KINDS[device.role]:
        raise RegistryMismatch(
            f"device {device.id!r} is a {device.role}, which may not send {kind.value!r}"
        )
    return device


def longest_prefix_route(routing: Routing, division: str) -> int | None:
    """The chute of the longest route prefix ``division`` starts with, or None if none does.

    Pure and O(12): tries the prefixes of ``division`` from the longest down.
    """
    for length in range(min(len(division), 12), 0, -1):
        chute = routing.routes.get(division[:length])
        if chute is not None:
            return chute
    return None
