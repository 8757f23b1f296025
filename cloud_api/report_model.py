"""The compliance report's JSON shape, field by field (the OpenAPI document shows these
descriptions). How each figure is computed: :mod:`cloud_api.reports`."""

from __future__ import annotations

from pydantic import BaseModel, Field


class PeriodOut(BaseModel):
    kind: str = Field(description="day or month")
    label: str = Field(description="the day (YYYY-MM-DD) or month (YYYY-MM) asked for")
    start: str = Field(description="local midnight of the first day, ISO 8601 in UTC")
    end: str = Field(description="local midnight after the last day (exclusive), ISO 8601 UTC")
    timezone: str = Field(description="the IANA zone whose days these are")


class RealnameCoverage(BaseModel):
    outbound: int = Field(description="parcels accepted at the station in the period")
    with_record: int = Field(description="of those, parcels with a real-name record")
    ratio: float | None = Field(description="with_record / outbound; null without parcels")


class XrayCoverage(BaseModel):
    outbound: int = Field(description="parcels accepted at the station in the period")
    screened: int = Field(
        description="of those, parcels with at least one X-ray verdict (any station, any time)"
    )
    ratio: float | None = Field(description="screened / outbound; null without parcels")
    verdicts: dict[str, int] = Field(
        description="verdicts given at this station in the period: PASS, SUSPECT, FAIL"
    )


class Holds(BaseModel):
    opened: int = Field(
        description="holds opened in the period on parcels accepted or X-rayed at the station"
    )
    released: int = Field(description="of those, released by now")
    still_open: int = Field(description="of those, still holding the parcel now")
    reasons: dict[str, int] = Field(
        description="opened holds by reason (xray_suspect, xray_fail, or a supervisor's)"
    )


class Exceptions(BaseModel):
    routed: int = Field(description="sort decisions at the station to a destination chute")
    sort: dict[str, int] = Field(
        description="sort decisions to the exception chute by reason, every reason listed"
    )
    deposit_refused: dict[str, int] = Field(
        description="send-deposit requests the station's lockers refused, by reason"
    )


class ProbeFigures(BaseModel):
    device: str = Field(description="the device the probe is on")
    probe: str = Field(description="the probe's name on its device")
    profile: str | None = Field(description="its temperature profile on the last measured day")
    low_c: float | None = Field(description="the profile's lower limit then, °C (null: none)")
    high_c: float | None = Field(description="the profile's upper limit then, °C (null: none)")
    days: int = Field(description="local days of the period with stored daily figures")
    readings: int = Field(
        description="readings the days' figures used, summed (one across midnight: twice)"
    )
    covered_h: float = Field(description="hours a reading vouched for (gaps left out)")
    out_of_range_min: float = Field(description="covered minutes outside the limits")
    min_c: float | None = Field(description="lowest reading, °C")
    max_c: float | None = Field(description="highest reading, °C")
    mean_c: float | None = Field(description="time-weighted mean, °C")
    mkt_c: float | None = Field(
        description="mean kinetic temperature over the covered time (ΔH = 83.144 kJ/mol), °C"
    )


class ColdChain(BaseModel):
    probes: list[ProbeFigures] = Field(description="per probe of the station")
    alerts: dict[str, int] = Field(
        description="cold-chain alerts raised at the station in the period, by kind"
    )


class Dwell(BaseModel):
    deposited: int = Field(
        description="delivery deposits at the station's lockers in the period (codes issued)"
    )
    picked_up: int = Field(description="of those, picked up by now")
    superseded: int = Field(description="of those, whose code a later deposit replaced")
    waiting: int = Field(description="of those, still in the locker now")
    mean_h: float | None = Field(description="mean hours from deposit to pickup")
    median_h: float | None = Field(description="median hours from deposit to pickup")
    max_h: float | None = Field(description="longest hours from deposit to pickup")


class Uptime(BaseModel):
    device: str = Field(description="a device registered at the station")
    role: str = Field(description="its role (counter, sorter, locker, probe ...)")
    online_ratio: float | None = Field(
        description="share of the period (up to now) its latest status said online, the "
        "time before its first status not online; null without any status"
    )
    online_h: float = Field(description="hours online in the period")


class VillageDeliveries(BaseModel):
    station: str = Field(description="a village service point under the station's division")
    name: str = Field(description="its name")
    division: str = Field(description="its 12-digit division code")
    deliveries: int = Field(description="parcels deposited there for pickup in the period")


class ComplianceReport(BaseModel):
    """One station's compliance figures for one local day or month."""

    station: str = Field(description="station id")
    name: str = Field(description="station name")
    division: str = Field(description="its 12-digit administrative division code")
    tier: str = Field(description="county, township or village")
    period: PeriodOut = Field(description="the local day or month reported")
    generated_at: str = Field(description="when the report was made, ISO 8601 UTC")
    realname: RealnameCoverage = Field(description="real-name coverage of outbound parcels")
    xray: XrayCoverage = Field(description="X-ray coverage of outbound parcels and verdicts")
    holds: Holds = Field(description="holds opened in the period")
    exceptions: Exceptions = Field(description="sort exceptions and locker refusals by reason")
    coldchain: ColdChain = Field(description="cold-chain figures per probe and alerts")
    dwell: Dwell = Field(description="locker dwell times of delivery deposits")
    uptime: list[Uptime] = Field(description="per device registered at the station")
    deliveries: list[VillageDeliveries] = Field(
        description="delivery deposits per village point under the station's division"
    )
