"""Enqueue throughput: single-row transactions through SQLAlchemy async, asyncpg and raw SQL.

Prints figures, never pass/fail. Runs in a scratch database created on the server named by
OUTBOX_DATABASE_URL (else the embedded one) and dropped afterwards.

    python -m benchmarks.enqueue [--rows 3000] [--concurrency 1 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

import outbox
from benchmarks.scratch import scratch_database
from outbox.database import create_engine

RAW_INSERT = "INSERT INTO outbox_messages (recipient, message, media) VALUES ($1, $2, $3::jsonb)"
MEDIA = {"images": ["https://cdn.example.com/listing/42/front.jpg"]}


async def timed(rows: int, workers: int, one: Callable[[int], Awaitable[None]]) -> float:
    """Rows per second for `rows` calls of `one`, spread over `workers` concurrent tasks."""
    counter = iter(range(rows))

    async def worker() -> None:
        for index in counter:
            await one(index)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return rows / (time.perf_counter() - started)


async def bench(dsn: str, rows: int, workers: int) -> dict[str, float]:
    engine = create_engine(dsn, pool_size=workers)
    pool = await asyncpg.create_pool(dsn, min_size=workers, max_size=workers)
    assert pool is not None
    media_json = json.dumps([{"type": "image", "url": MEDIA["images"][0]}])

    async def through_sqlalchemy(i: int) -> None:
        async with AsyncSession(engine) as session, session.begin():
            await outbox.enqueue(
                session, "923001234567", f"Booking {i} confirmed", media_urls=MEDIA
            )

    async def through_asyncpg(i: int) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await outbox.enqueue(conn, "923001234567", f"Booking {i} confirmed", media_urls=MEDIA)

    async def through_raw_sql(i: int) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(RAW_INSERT, "923001234567", f"Booking {i} confirmed", media_json)

    try:
        return {
            "sqlalchemy async (outbox.enqueue)": await timed(rows, workers, through_sqlalchemy),
            "asyncpg (outbox.enqueue)": await timed(rows, workers, through_asyncpg),
            "raw SQL INSERT (asyncpg)": await timed(rows, workers, through_raw_sql),
        }
    finally:
        await pool.close()
        await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()

    async with scratch_database() as (scratch, version):
        print(f"PostgreSQL {version}, {args.rows} single-row transactions per figure")
        for workers in args.concurrency:
            for label, rate in (await bench(scratch, args.rows, workers)).items():
                print(f"  concurrency {workers:>2}  {label:<36} {rate:>8.0f} rows/s")


if __name__ == "__main__":
    asyncio.run(main())
