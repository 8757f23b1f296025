"""The gateway's error root; callers catch these, never paho's or a storage client's."""

from __future__ import annotations


class GatewayError(Exception):
    """Something the gateway could not do."""
