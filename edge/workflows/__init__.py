"""Station workflows at the edge: what a clerk, a courier, a recipient and a belt sorter
do, in order, with the devices of one edge device identity.

A workflow is driven by its device's drivers and by the gateway's decisions. It never
publishes itself: it hands each body to ``emit`` (which commits it to the outbox and
returns the envelope, whose ``id`` a later decision names in ``request``), and the
device runtime calls :meth:`Workflow.on_decision` on the event loop's thread for every
:class:`contracts.DecisionMessage` that arrives on the device's ``decision`` topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from contracts import AnyBody, AnyEnvelope, DecisionMessage, ScanBody

Emit = Callable[[AnyBody], AnyEnvelope | None]
"""Commit one body to the outbox as the device's next envelope; None if it could not be
kept (the failure is logged and counted by the runtime)."""


class Workflow(Protocol):
    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set."""
        ...

    def on_decision(self, message: DecisionMessage) -> None:
        """A decision for this device arrived (event loop thread; must not block)."""
        ...


class DecisionWaiter:
    """Futures for decisions by request id: ``expect(id)`` before the request is
    published, then ``await`` the future with a deadline; ``deliver`` resolves it."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[DecisionMessage]] = {}

    def expect(self, request: str) -> asyncio.Future[DecisionMessage]:
        future: asyncio.Future[DecisionMessage] = asyncio.get_running_loop().create_future()
        self._waiting[request] = future
        future.add_done_callback(lambda _: self._waiting.pop(request, None))
        return future

    def deliver(self, message: DecisionMessage) -> bool:
        """Resolve the future waiting for ``message.request``; False if none waits."""
        future = self._waiting.get(message.request or "")
        if future is None or future.done():
            return False
        future.set_result(message)
        return True


class ScanSource(Protocol):
    """Where barcodes come from: a serial scanner (``SerialScanner``) or a camera reader."""

    def scans(self) -> AsyncIterator[ScanBody]: ...
