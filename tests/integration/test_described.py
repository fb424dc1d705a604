"""The daemon's connections run each statement in one round trip once they have seen it, and
still keep nothing prepared on the server (PgBouncer's transaction pooling needs that), unless
OUTBOX_PREPARED_STATEMENTS says the connection may keep them prepared."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.described import DescribedConnection
from outbox.pool import Pool
from outbox.simulator import Simulator
from tests.daemon_helpers import IMAGE, drain, enqueue, script, sent, status

PREPARED = "SELECT count(*) FROM pg_prepared_statements"


async def test_a_statement_is_described_once_per_connection_and_never_left_prepared(
    pool: Pool,
) -> None:
    async with pool.connect() as conn:
        assert isinstance(conn._con, DescribedConnection)  # type: ignore[attr-defined]
        described = conn._con._described  # type: ignore[attr-defined]
        for value in (1, 2, 3):
            assert await conn.fetchval("SELECT CAST($1 AS int) + 1 AS n", value) == value + 1
        assert [key[0] for key in described].count("SELECT CAST($1 AS int) + 1 AS n") == 1
        assert await conn.fetchval(PREPARED) == 0
        rows = await conn.fetch("SELECT x FROM generate_series(1, $1) AS x", 3)
        assert [row["x"] for row in rows] == [1, 2, 3]
        rows = await conn.fetch("SELECT x FROM generate_series(1, $1) AS x", 2)
        assert [row["x"] for row in rows] == [1, 2]
        assert await conn.fetchval(PREPARED) == 0


async def test_forgetting_asyncpg_statements_forgets_the_descriptions(pool: Pool) -> None:
    async with pool.connect() as conn:
        await conn.fetchval("SELECT 1")
        inner = conn._con  # type: ignore[attr-defined]
        assert inner._described
        inner._drop_local_statement_cache()
        assert not inner._described
        assert await conn.fetchval("SELECT 1") == 1


async def test_a_pool_told_so_keeps_its_statements_prepared(database_url: str) -> None:
    pool = Pool(database_url, prepared=True)
    try:
        async with pool.connect() as conn:
            for value in (1, 2, 3, 4, 5, 6, 7):
                assert await conn.fetchval("SELECT CAST($1 AS int) + 1 AS n", value) == value + 1
            assert await conn.fetchval(PREPARED) >= 1
    finally:
        await pool.close(5)


async def test_a_daemon_with_prepared_statements_keeps_lanes_parts_and_retries(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    settings = replace(settings, prepared_statements=True)
    script(simulator, "923001234567", "ok", {"error": 131016, "times": 3})
    first = await enqueue(engine, "923001234567", "text", media_urls={"images": [IMAGE, IMAGE]})
    rows = [first, *[await enqueue(engine, "923001234567", f"m{i}") for i in range(6)]]
    others = [await enqueue(engine, f"92300765432{i}", "another") for i in range(8)]
    assert await drain(settings) == 0
    mine = sent(simulator, lambda a: a["to"] == "923001234567")
    assert mine == [f"outbox:{first}:{part}" for part in range(3)] + [
        f"outbox:{row}:0" for row in rows[1:]
    ]
    assert (await status(engine, first)).attempts == 2
    for row in rows + others:
        delivery = await status(engine, row)
        assert delivery.status == "sent"
        assert None not in delivery.part_ids
