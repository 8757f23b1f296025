"""The compliance report as files a supervisor files: one CSV with a section after
another, or a workbook with a sheet per section. Both come from :func:`sections`, so
they hold the same rows."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any, NamedTuple

from openpyxl import Workbook  # type: ignore[import-untyped]
from openpyxl.styles import Font  # type: ignore[import-untyped]
from pydantic import BaseModel

from cloud_api.report_model import ComplianceReport, Dwell, ProbeFigures, Uptime, VillageDeliveries


class Section(NamedTuple):
    title: str
    header: list[str]
    rows: list[list[Any]]


def _table(title: str, shape: type[BaseModel], items: list[Any]) -> Section:
    """A section with one column per field of ``shape``, in the JSON's order and names."""
    names = list(shape.model_fields)
    return Section(title, names, [[getattr(item, name) for name in names] for item in items])


def _counts(title: str, key: str, counts: dict[str, int]) -> Section:
    return Section(title, [key, "count"], [[name, count] for name, count in counts.items()])


def sections(report: ComplianceReport) -> Iterator[Section]:
    """The report's sections in order; None values stay None (the writers blank them)."""
    p = report.period
    yield Section(
        "report",
        ["station", "name", "division", "tier", "period", "start", "end", "time zone",
         "generated at"],
        [[report.station, report.name, report.division, report.tier, p.label, p.start, p.end,
          p.timezone, report.generated_at]],
    )  # fmt: skip
    r, x = report.realname, report.xray
    yield Section(
        "coverage",
        ["figure", "parcels", "covered", "ratio"],
        [
            ["real-name records", r.outbound, r.with_record, r.ratio],
            ["X-ray screened", x.outbound, x.screened, x.ratio],
        ],
    )
    yield _counts("xray verdicts", "verdict", x.verdicts)
    h = report.holds
    yield Section(
        "holds", ["opened", "released", "still open"], [[h.opened, h.released, h.still_open]]
    )
    yield _counts("hold reasons", "reason", h.reasons)
    e = report.exceptions
    yield Section(
        "exceptions",
        ["decision", "reason", "count"],
        [["sort", "(routed)", e.routed]]
        + [["sort", reason, count] for reason, count in e.sort.items()]
        + [["deposit refused", reason, count] for reason, count in e.deposit_refused.items()],
    )
    yield _table("cold chain", ProbeFigures, report.coldchain.probes)
    yield _counts("cold-chain alerts", "kind", report.coldchain.alerts)
    yield _table("locker dwell", Dwell, [report.dwell])
    yield _table("device uptime", Uptime, report.uptime)
    yield _table("deliveries", VillageDeliveries, report.deliveries)


def report_csv(report: ComplianceReport) -> str:
    """The report as one CSV: each section a ``# title`` row, a header row, its rows and
    a blank row. Text; the route encodes it as UTF-8 with a BOM for spreadsheet programs."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for section in sections(report):
        writer.writerow([f"# {section.title}"])
        writer.writerow(section.header)
        writer.writerows(["" if value is None else value for value in row] for row in section.rows)
        writer.writerow([])
    return out.getvalue()


def report_xlsx(report: ComplianceReport) -> bytes:
    """The report as a workbook: a sheet per section, named by its title, the header row
    bold and frozen; None is an empty cell."""
    workbook = Workbook()
    workbook.remove(workbook.active)
    bold = Font(bold=True)
    for section in sections(report):
        sheet = workbook.create_sheet(title=section.title[:31])
        sheet.append(section.header)
        for cell in sheet[1]:
            cell.font = bold
        sheet.freeze_panes = "A2"
        for row in section.rows:
            sheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()
