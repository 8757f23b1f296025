"""``postedge sim <kind>``: every device simulator, standalone.

Each kind's module adds its own subcommand; this module only lists them.
"""

from __future__ import annotations

import argparse

from firmware_bridge.sim import probe_cli

KINDS = (probe_cli,)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add one subcommand per device kind to the ``postedge sim`` subparsers."""
    for kind in KINDS:
        kind.add_command(subparsers)
