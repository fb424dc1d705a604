"""Stop background tasks for good, even when one swallows a cancellation.

On Python 3.11 `asyncio.wait_for` can swallow a cancellation that arrives as its inner awaitable
completes (fixed in 3.12): a task cancelled once may run on, and awaiting it would hang a
shutdown. Cancelled again until done, each task ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

RECANCEL_EVERY = 0.5  # seconds between cancellations of a task still running


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and wait until every one has ended, cancelling again those that go on."""
    every = list(tasks)
    pending = {task for task in every if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_EVERY)
    for task in every:
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" at exit
