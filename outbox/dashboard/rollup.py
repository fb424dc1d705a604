"""Keeps the charts' rollup (outbox_rollup) current while a dashboard runs: every few seconds it
folds the events written since, in bounded batches, and drops minutes older than a week."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox.store import rollup

logger = logging.getLogger("outbox.dashboard")

FOLD_EVERY = 10.0  # seconds between folds
BATCH = 10_000  # events per transaction
# An event is folded once this old, so that one written by a transaction still open (ids are
# handed out before commit) is not passed over; see outbox/store/rollup.py.
SETTLE_SECONDS = 30.0
KEEP_DAYS = 8


async def catch_up(
    engine: AsyncEngine, *, batch: int = BATCH, settle_seconds: float = SETTLE_SECONDS
) -> int:
    """Fold every settled event not folded yet, a batch per transaction; how many."""
    total = 0
    while True:
        async with engine.begin() as conn:
            read = await rollup.fold(conn, batch=batch, settle_seconds=settle_seconds)
        total += read
        if read < batch:
            return total


async def keep_folding(engine: AsyncEngine, every: float = FOLD_EVERY) -> None:
    """Fold and prune until cancelled; a database that is away is tried again next time."""
    while True:
        try:
            folded = await catch_up(engine)
            async with engine.begin() as conn:
                await rollup.prune(conn, KEEP_DAYS)
            if folded:
                logger.debug("rollup: folded %d events", folded)
        except (OSError, TimeoutError, SQLAlchemyError) as exc:
            logger.warning("rollup: could not fold events (%s); trying again", type(exc).__name__)
        await asyncio.sleep(every)
