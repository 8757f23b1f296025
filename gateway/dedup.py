"""The message ids a worker stored recently, to skip rewriting a resent message.

An edge resends what no receipt confirmed (a receipt lost, a gateway restarted before
acknowledging), sometimes in bursts. Rewriting is harmless, since a point is keyed by its
tags and device timestamp, but costs a store write per message; this bounded memory of
recent ids turns most resends into a receipt without a write. It is per worker and
forgotten on restart, which only costs those rewrites.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

DEFAULT_CAPACITY = 200_000


class RecentIds:
    """A bounded set of message ids that forgets the least recently seen first."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids

    def seen(self, message_id: str) -> bool:
        """Whether ``message_id`` is held; a hit counts as a fresh use (it is resent again
        soon in a storm, so it should stay)."""
        if message_id in self._ids:
            self._ids.move_to_end(message_id)
            return True
        return False

    def add(self, message_ids: Iterable[str]) -> None:
        """Remember ``message_ids`` (call only once they are durably stored)."""
        ids = self._ids
        for message_id in message_ids:
            ids[message_id] = None
            ids.move_to_end(message_id)
        while len(ids) > self.capacity:
            ids.popitem(last=False)
