"""The edge agent's error root."""

from __future__ import annotations


class EdgeError(Exception):
    """Something the edge agent could not do."""
