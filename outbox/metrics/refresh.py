"""A value the daemon shows in /metrics or /readyz, read from the database every few seconds so
that a scrape never touches the database. A failed read keeps the last values and is logged once,
until a read works again; it can neither wedge nor stop the daemon."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod

from outbox.connections import AsyncConnectionLike
from outbox.database import short_error
from outbox.pool import Pool

logger = logging.getLogger("outbox.daemon")
REFRESH_SECONDS = 5.0
REFRESH_TIMEOUT = 10.0  # a read that takes longer is abandoned; the values are kept


class Refresher(ABC):
    """Reads `what` every `interval` seconds until cancelled."""

    what: str

    def __init__(self, *, interval: float = REFRESH_SECONDS) -> None:
        self._interval = interval
        self._failing = False

    async def run(self, pool: Pool) -> None:
        while True:
            await self.refresh(pool)
            await asyncio.sleep(self._interval)

    async def refresh(self, pool: Pool) -> bool:
        """One read; False (values kept) when the database did not answer in time."""
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT), pool.connect() as conn:
                await self._read(conn)
        except Exception as exc:
            if not self._failing:
                logger.warning(
                    "cannot read %s (%s); the last values are kept", self.what, short_error(exc)
                )
            self._failing = True
            return False
        if self._failing:
            logger.info("%s is read again", self.what)
            self._failing = False
        return True

    @abstractmethod
    async def _read(self, conn: AsyncConnectionLike) -> None:
        """Read and keep the new values."""
