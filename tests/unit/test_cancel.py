"""Background tasks end at shutdown even when one swallows a cancellation (Python 3.11's
asyncio.wait_for can, when its inner awaitable completes as the cancellation arrives)."""

from __future__ import annotations

import asyncio
import contextlib

from outbox.cancel import cancel_and_wait


async def _swallows_one_cancellation(ended: list[str]) -> None:
    with contextlib.suppress(asyncio.CancelledError):  # as wait_for may: the task runs on
        await asyncio.sleep(3600)
    try:
        await asyncio.sleep(3600)
    finally:
        ended.append("ended")


async def test_a_task_that_swallowed_a_cancellation_is_cancelled_again_until_it_ends() -> None:
    ended: list[str] = []
    task = asyncio.create_task(_swallows_one_cancellation(ended))
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait([task]), 5)
    assert ended == ["ended"]
    assert task.cancelled()


async def test_tasks_already_done_or_failed_are_waited_for_quietly() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    done = asyncio.create_task(asyncio.sleep(0))
    failed = asyncio.create_task(fails())
    await asyncio.sleep(0.01)
    await cancel_and_wait([done, failed])
    assert done.done()
    assert failed.done()
