"""``postedge sim <kind>``: every device simulator, standalone.

Each kind's module adds its own subcommand; this module only lists them.
"""

from __future__ import annotations

import argparse

from firmware_bridge.sim import (
    ds18b20_cli,
    idcard_cli,
    lockboard_cli,
    probe_cli,
    scanner_cli,
    sorter_cli,
    xray_cli,
)

KINDS = (
    probe_cli,
    ds18b20_cli,
    scanner_cli,
    lockboard_cli,
    idcard_cli,
    sorter_cli,
    xray_cli,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add one subcommand per device kind to the ``postedge sim`` subparsers."""
    for kind in KINDS:
        kind.add_command(subparsers)
