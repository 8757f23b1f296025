"""Compliance reports per station and day or month: JSON, CSV and XLSX (the monthly
ledger a supervisor files). The figures are computed in :mod:`cloud_api.reports`."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from cloud_api.context import Reader, ServicesDep, station_in_scope
from cloud_api.reports import (
    ComplianceReport,
    compliance_report,
    period_of,
    report_csv,
    report_xlsx,
)

router = APIRouter(prefix="/api/v1", tags=["reports"])

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@router.get(
    "/reports/compliance",
    response_model=ComplianceReport,
    responses={
        200: {"content": {"text/csv": {}, XLSX: {}}, "description": "The report"},
        403: {"description": "Outside your scopes"},
        404: {"description": "No station"},
        422: {"description": "Give exactly one of day and month"},
    },
)
async def compliance(
    user: Reader,
    services: ServicesDep,
    station: Annotated[str, Query(max_length=64)],
    day: Annotated[
        str | None, Query(pattern=r"^\d{4}-\d{2}-\d{2}$", description="YYYY-MM-DD")
    ] = None,
    month: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$", description="YYYY-MM")] = None,
    format: Annotated[Literal["json", "csv", "xlsx"], Query()] = "json",
) -> ComplianceReport | Response:
    """Real-name and X-ray coverage, holds, exceptions by reason, cold-chain minutes out
    of range and MKT, locker dwell times, device uptime and deliveries per village point,
    for one station and one local day or month (the API's ``timezone``)."""
    station_in_scope(services, user, station)
    try:
        period = period_of(day=day, month=month, tz=services.tz)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    report = await run_in_threadpool(
        compliance_report, services.ledger, services.store, station, period
    )
    if format == "json":
        return report
    name = f"postedge-compliance-{station}-{period.label}"
    if format == "csv":
        body = report_csv(report).encode("utf-8-sig")
        return Response(
            body,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    return Response(
        report_xlsx(report),
        media_type=XLSX,
        headers={"Content-Disposition": f'attachment; filename="{name}.xlsx"'},
    )
