"""Whether a connection reaches PostgreSQL itself (outbox/direct.py): only then does the
daemon's pool, left to decide (OUTBOX_PREPARED_STATEMENTS unset), keep its statements prepared
on the server. A proxy or pooler in between is never taken for PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from outbox.described import DescribedConnection
from outbox.direct import reaches_postgres_itself
from outbox.pool import Pool
from tests.proxy import PostgresProxy

PREPARED = "SELECT count(*) FROM pg_prepared_statements"


@pytest.fixture
async def proxied_url(database_url: str) -> AsyncIterator[str]:
    proxy = PostgresProxy(database_url)
    try:
        yield await proxy.start()
    finally:
        await proxy.close()


async def _direct(url: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        return await reaches_postgres_itself(conn)
    finally:
        await conn.close()


async def test_a_connection_to_postgresql_itself_is_proved_direct(database_url: str) -> None:
    assert await _direct(database_url)


async def test_a_connection_to_postgresqls_unix_socket_is_proved_direct(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        directories = await conn.fetchval("SHOW unix_socket_directories")
        port = await conn.fetchval("SHOW port")
    finally:
        await conn.close()
    directory = next((d.strip() for d in directories.split(",") if d.strip()), "")
    if not _is_socket(directory, port):
        pytest.skip("the test server has no unix socket here")
    parts = urlsplit(database_url)
    user = parts.username or "postgres"
    url = urlunsplit(("postgresql", f"{user}@", parts.path, f"host={directory}&port={port}", ""))
    assert await _direct(url)


def _is_socket(directory: str, port: str) -> bool:
    return bool(directory) and Path(directory, f".s.PGSQL.{port}").is_socket()


async def test_a_connection_through_a_proxy_is_not_proved_direct(proxied_url: str) -> None:
    assert not await _direct(proxied_url)


async def test_a_pool_left_to_decide_keeps_statements_prepared_on_a_direct_connection(
    database_url: str,
) -> None:
    pool = Pool(database_url, prepared=None)
    try:
        async with pool.connect() as conn:
            await conn.fetchval("SELECT CAST($1 AS int) + 1 AS n", 1)
            assert await conn.fetchval(PREPARED) > 0
        assert pool.last_direct is True
    finally:
        await pool.close(5)


async def test_a_pool_left_to_decide_keeps_nothing_prepared_through_a_proxy(
    proxied_url: str,
) -> None:
    pool = Pool(proxied_url, prepared=None)
    try:
        async with pool.connect() as conn:
            await conn.fetchval("SELECT CAST($1 AS int) + 1 AS n", 1)
            assert await conn.fetchval(PREPARED) == 0
        assert pool.last_direct is False
    finally:
        await pool.close(5)


async def test_each_connection_proves_itself_a_later_one_through_a_proxy_keeps_nothing(
    database_url: str, proxied_url: str
) -> None:
    """A reconnect may land elsewhere (a failover to a pooler, another of several hosts): a
    connection through a proxy keeps nothing prepared after a direct one proved direct."""
    pool = Pool(database_url, prepared=None)
    try:
        for url, prepared in ((database_url, True), (proxied_url, False)):
            conn = await asyncpg.connect(  # as the pool opens them
                url, statement_cache_size=0, connection_class=DescribedConnection
            )
            try:
                await pool._init(conn)
                await conn.fetchval("SELECT CAST($1 AS int) + 2 AS n", 1)
                assert (await conn.fetchval(PREPARED) > 0) is prepared, url
            finally:
                await conn.close()
    finally:
        await pool.close(5)
