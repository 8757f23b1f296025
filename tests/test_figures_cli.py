"""``postedge gateway figures`` prints the cold-chain figures stored for a probe or a parcel."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from contracts.profiles import Limits
from gateway.coldchain.exposure import daily_point, parcel_point
from gateway.coldchain.metrics import Reading, day_window, exposure
from gateway.telemetry import open_store
from gateway.telemetry.config import SqliteStoreConfig
from postedge.cli import main

DAY = date(2026, 11, 25)
PHARMA = Limits(2.0, 8.0)


def test_figures_of_a_probe_day_and_of_a_parcel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start, end = day_window(DAY, ZoneInfo("Asia/Shanghai"))
    hour = 3600 * 10**9
    # 20 h at 5 °C then 4 h at 15 °C: the check, MKT 7.70 °C, 240 minutes out.
    readings = [Reading(start, 5.0), Reading(start + 20 * hour, 15.0)]
    day = exposure(readings, start, end, PHARMA, max_gap_s=24 * 3600)
    stay = exposure(readings, start + 19 * hour, start + 21 * hour, PHARMA, max_gap_s=24 * 3600)
    store = open_store(SqliteStoreConfig(kind="sqlite", path=tmp_path / "telemetry.sqlite"))
    store.open()
    store.write(
        [
            daily_point("village-23", "medbox", "medicine", DAY, "pharma", PHARMA, day),
            parcel_point("village-23", "medbox", "medicine", "WB1", "pharma", PHARMA, stay),
        ]
    )
    store.close()
    config = tmp_path / "gateway.toml"
    config.write_text('[store]\nkind = "sqlite"\npath = "telemetry.sqlite"\n')

    assert (
        main(
            [
                "gateway",
                "figures",
                str(config),
                "--probe",
                "village-23/medbox/medicine",
                "--from",
                "2026-11-24",
                "--to",
                "2026-11-26",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[1].split("\t") == [
        "village-23/medbox/medicine",
        "2026-11-25",
        "pharma",
        "240.0",
        "5.00",
        "15.00",
        "6.67",
        "7.70",
        "24.00",
    ]
    assert main(["gateway", "figures", str(config), "--waybill", "WB1"]) == 0
    [_, line] = capsys.readouterr().out.splitlines()
    assert line.split("\t")[0] == "WB1@village-23/medbox/medicine"
    assert line.split("\t")[3:] == ["60.0", "5.00", "15.00", "10.00", "11.39", "2.00"]
    assert main(["gateway", "figures", str(config), "--waybill", "WB2"]) == 0
    assert "no figures" in capsys.readouterr().out
