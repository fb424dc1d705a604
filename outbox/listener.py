"""LISTEN on the `outbox` channel over a dedicated connection that reconnects on its own.

Every (re)connection also wakes the daemon, since notifications sent while it was away are lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from outbox.retry import expo_delays
from outbox.schema import NOTIFY_CHANNEL

logger = logging.getLogger(__name__)


class NotificationListener:
    def __init__(self, dsn: str, on_notify: Callable[[], None]) -> None:
        self._dsn = dsn
        self._on_notify = on_notify
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _notified(self, *_: Any) -> None:
        self._on_notify()

    async def _run(self) -> None:
        delays = expo_delays(0.5, 10.0)
        failed = False
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self._dsn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                delay = next(delays)
                logger.warning("LISTEN connection failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                failed = True
                continue
            try:
                conn.add_termination_listener(lambda _, lost=lost: lost.set())
                await conn.add_listener(NOTIFY_CHANNEL, self._notified)
                if failed:
                    logger.info("LISTEN connection restored")
                delays, failed = expo_delays(0.5, 10.0), False
                self._on_notify()
                while not lost.is_set() and not conn.is_closed():
                    # A silent network can hide a dead socket: ask it now and then.
                    try:
                        await asyncio.wait_for(lost.wait(), 15)
                    except TimeoutError:
                        await conn.execute("SELECT 1", timeout=5)
                logger.warning("LISTEN connection lost; reconnecting")
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                logger.warning("LISTEN connection failed (%s); reconnecting", exc)
            finally:
                conn.terminate()
