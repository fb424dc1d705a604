"""The daemon's connections run each statement in one round trip once they have seen it, and
still keep nothing prepared on the server (PgBouncer's transaction pooling needs that)."""

from __future__ import annotations

from outbox.described import DescribedConnection
from outbox.pool import Pool

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
