"""``postedge gateway figures``: the cold-chain figures the gateway wrote, per probe and
day or per parcel, read back from the telemetry store of GATEWAY.toml."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from pathlib import Path

from gateway.errors import GatewayError


def add_figures(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    figures = sub.add_parser(
        "figures",
        help="cold-chain figures per probe and day, or per parcel",
        description=(
            "Minutes out of range, min/max/mean and mean kinetic temperature, as the "
            "cold-chain engine wrote them once a local day or a parcel's stay in a cold "
            "compartment had ended. One line per day or stay, tab-separated."
        ),
    )
    figures.add_argument("config", type=Path, metavar="GATEWAY.toml")
    which = figures.add_mutually_exclusive_group(required=True)
    which.add_argument("--probe", metavar="STATION/DEVICE/PROBE", help="a probe's days")
    which.add_argument("--waybill", help="a parcel's stays in cold compartments")
    figures.add_argument("--from", dest="first", type=date.fromisoformat, metavar="YYYY-MM-DD")
    figures.add_argument("--to", dest="last", type=date.fromisoformat, metavar="YYYY-MM-DD")
    figures.set_defaults(func=_figures)


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _figures(args: argparse.Namespace) -> int:
    from gateway.coldchain.exposure import Figures, read_daily, read_parcel
    from gateway.config import load_gateway_config
    from gateway.telemetry import open_store

    config = load_gateway_config(args.config)
    store = open_store(config.store)
    store.open()
    lines: list[tuple[str, Figures]] = []
    try:
        if args.probe is not None:
            parts = str(args.probe).split("/")
            if len(parts) != 3:
                raise GatewayError(f"--probe {args.probe!r} is not STATION/DEVICE/PROBE")
            last = args.last or date.today()
            first = args.first or last
            for day in read_daily(store, parts[0], parts[1], parts[2], first, last):
                lines.append((f"{args.probe}\t{day.day.isoformat()}", day.figures))
        else:
            for stay in read_parcel(store, args.waybill):
                what = f"{stay.waybill}@{stay.station}/{stay.device}/{stay.probe}"
                when = f"{_iso(stay.start_ns)}/{_iso(stay.end_ns)}"
                lines.append((f"{what}\t{when}", stay.figures))
    finally:
        store.close()
    print("what\twhen\tprofile\tout_of_range_min\tmin_c\tmax_c\tmean_c\tmkt_c\tcovered_h")
    for head, fig in lines:
        print(
            f"{head}\t{fig.profile}\t{fig.out_of_range_min:.1f}\t{_number(fig.min_c)}\t"
            f"{_number(fig.max_c)}\t{_number(fig.mean_c)}\t{_number(fig.mkt_c)}\t"
            f"{fig.covered_s / 3600:.2f}"
        )
    if not lines:
        print("no figures (a day is measured once it has ended; see docs/COLDCHAIN.md)")
    return 0
