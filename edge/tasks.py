"""Running a set of coroutines until a stop event, the way every edge component does."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


async def run_until(stop: asyncio.Event, work: list[Coroutine[Any, Any, None]]) -> None:
    """Run ``work`` until ``stop`` is set, then cancel what still runs; a failure is raised."""
    tasks = {asyncio.create_task(coroutine) for coroutine in work}
    stopper = asyncio.create_task(stop.wait())
    try:
        pending = {stopper, *tasks}
        while stopper in pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stopper}:
                error = task.exception()
                if error is not None:
                    raise error
    finally:
        for task in [stopper, *tasks]:
            task.cancel()
        await asyncio.gather(stopper, *tasks, return_exceptions=True)
