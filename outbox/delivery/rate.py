"""A sender's requests per second, held across every daemon on the database.

Each sender has one token bucket in PostgreSQL (outbox_take_tokens: GCRA, `--rate` per second,
a burst of a twentieth of it). A daemon takes tokens for all the requests waiting at that moment
in one statement, so a round trip paces many sends; tokens not used within TOKEN_TTL are
dropped, so that no daemon hoards a burst and spends it later. The database grants at most
rate + burst tokens in any second, to all daemons together; a token spent up to TOKEN_TTL after
its grant can put one or two more requests into a one-second window of arrivals (22 at --rate 20
in the chaos runs, against Meta's allowance of the rate over longer windows).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from typing import Any

from outbox import store
from outbox.connections import fetch_one
from outbox.database import persistently
from outbox.pool import Pool

logger = logging.getLogger("outbox.daemon")

TOKEN_TTL = 0.25  # seconds a granted token may wait to be spent
SLOW_SECONDS = 60.0  # how long a 130429 slows the sender down


def burst_for(rate: float) -> float:
    """The bucket's burst: a twentieth of a second's worth, plus half a slot of tolerance so that
    a request a few milliseconds late does not lose its slot: 1.5 tokens at --rate 20, 4.5 at
    80."""
    return max(1.0, rate / 20) + 0.5


@dataclass
class _Bucket:
    tokens: int = 0
    expires: float = 0.0
    waiting: int = 0
    expected: int = 0  # requests soon to ask (rows just claimed): taken with the waiting ones
    retry_at: float = 0.0  # the database said: nothing before this (loop time)
    refills: int = 0  # refills done: a waiter woken by the one it waited for spends its token
    refill: asyncio.Future[None] | None = None  # the one take in the air, for every waiter


class SharedRate:
    """Paces requests per sender through the database, for all daemons at once."""

    def __init__(self, pool: Pool, rate: float) -> None:
        self._pool = pool
        self._interval = 1.0 / rate
        self._burst = burst_for(rate)
        self._buckets: dict[str, _Bucket] = {}

    async def acquire(self, sender: str) -> None:
        """Wait for this sender's next request slot. A token in hand is taken at once; else
        the caller joins the sender's one refill, which asks the database for every waiter's
        token in one statement and wakes them all together."""
        bucket = self._buckets.setdefault(sender, _Bucket())
        loop = asyncio.get_running_loop()
        while True:
            if bucket.tokens > 0 and loop.time() < bucket.expires:
                bucket.tokens -= 1
                return
            refill = bucket.refill
            if refill is None or refill.done():  # done: it served others, and awaiting it
                refill = self._start_refill(sender, bucket)  # would never yield to the loop
            bucket.waiting += 1
            done = bucket.refills
            try:
                await asyncio.shield(refill)  # a caller cancelled leaves it to the rest
            finally:
                bucket.waiting -= 1
            if bucket.refills == done + 1 and bucket.tokens > 0:
                # Taken for this caller: spent however long the loop took to wake it.
                bucket.tokens -= 1
                return

    def expect(self, sender: str, requests: int) -> None:
        """`requests` are about to ask (the rows of a claim, still being read): their tokens
        are asked for now, so that the round trip overlaps the rest of their start."""
        bucket = self._buckets.setdefault(sender, _Bucket())
        loop = asyncio.get_running_loop()
        if bucket.refill is not None and not bucket.refill.done():
            return
        if bucket.tokens >= requests and loop.time() < bucket.expires:
            return
        bucket.expected = requests
        self._start_refill(sender, bucket)

    def _start_refill(self, sender: str, bucket: _Bucket) -> asyncio.Future[None]:
        """The sender's one take, run from the loop's next turn: the rows started with the
        caller ask first, and are counted in it."""
        refill = bucket.refill = asyncio.ensure_future(self._refill(sender, bucket))
        refill.add_done_callback(functools.partial(_refilled, bucket))
        return refill

    def stop(self) -> None:
        """At shutdown: the takes under way serve no one any more (one retrying while the
        database is away would otherwise outlive the daemon's pool)."""
        for bucket in self._buckets.values():
            if bucket.refill is not None:  # a bucket's only one not done, if any
                bucket.refill.cancel()

    async def _refill(self, sender: str, bucket: _Bucket) -> None:
        loop = asyncio.get_running_loop()
        pause = bucket.retry_at - loop.time()
        if pause > 0:
            await asyncio.sleep(pause)
        want = max(bucket.waiting, bucket.expected, 1)
        bucket.expected = 0
        granted, wait = await persistently(self._take, sender, want, what="taking rate tokens")
        now = loop.time()
        bucket.tokens, bucket.expires = granted, now + TOKEN_TTL
        bucket.retry_at = now + wait if granted < want else now
        bucket.refills += 1

    async def slow_down(self, sender: str) -> None:
        """Meta said 130429: every daemon sends slower to this number for a while (once the
        database answers, if it is away)."""
        row = await persistently(self._slow_down, sender, what="slowing the sender down")
        factor = float(row["factor"]) if row else 0.5
        logger.warning(
            "Meta throttled sender %s (130429): sending at %.0f%% of the rate for %.0fs",
            sender,
            factor * 100,
            SLOW_SECONDS,
        )

    async def _slow_down(self, sender: str) -> dict[str, Any] | None:
        async with self._pool.connect() as conn:
            return await fetch_one(
                conn, store.SLOW_DOWN, {"key": _key(sender), "seconds": SLOW_SECONDS}
            )

    async def _take(self, sender: str, want: int) -> tuple[int, float]:
        async with self._pool.connect() as conn:
            row = await fetch_one(
                conn,
                store.TAKE_TOKENS,
                {
                    "key": _key(sender),
                    "want": want,
                    "interval": self._interval,
                    "burst": self._burst,
                },
            )
        assert row is not None
        return int(row["granted"]), float(row["wait"])


def _refilled(bucket: _Bucket, refill: asyncio.Future[None]) -> None:
    if bucket.refill is refill:  # not a newer one
        bucket.refill = None
    if not refill.cancelled():
        refill.exception()  # its waiters raise it; none may be left to (all cancelled)


def _key(sender: str) -> str:
    return f"rate:{sender}"
