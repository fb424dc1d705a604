"""A lane's head leaving (its last part recorded) writes the lane's next pending row even when
that row is not queued: a claim deciding from a snapshot taken before the head left then sees the
row changed (its xmin), or waits for its lock, and never leaves it queued behind a sent row. With
nothing queued anywhere yet, this is the write that keeps the next row from waiting for the lanes'
sweep (RELEASE_LANES, every few seconds). Real transactions on a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from outbox import store
from outbox.connections import fetch_all
from tests.integration.test_in_flight_plans import record_values
from tests.integration.test_lanes import claim_values

CUSTOMER = "923001234567"


@pytest.fixture
async def connections(database_url: str) -> AsyncIterator[tuple[asyncpg.Connection, ...]]:
    first, second = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


async def head_in_flight_and_next(conn: asyncpg.Connection) -> tuple[int, int]:
    """The lane's head claimed (sending), then its next row enqueued: nothing queued anywhere."""
    head = await conn.fetchval(
        "INSERT INTO outbox_messages (recipient, message) VALUES ($1, 'a') RETURNING id", CUSTOMER
    )
    assert [row["id"] for row in await fetch_all(conn, store.CLAIM_BATCH, claim_values())] == [head]
    following = await conn.fetchval(
        "INSERT INTO outbox_messages (recipient, message) VALUES ($1, 'b') RETURNING id", CUSTOMER
    )
    return head, following


async def record_last_part(conn: asyncpg.Connection, row_id: int) -> None:
    token = await conn.fetchval("SELECT lease_token FROM outbox_messages WHERE id = $1", row_id)
    await fetch_all(conn, store.RECORD_PARTS, record_values([row_id], token))


async def test_the_heads_last_part_writes_the_lanes_next_row_though_none_is_queued(
    connections: tuple[asyncpg.Connection, ...],
) -> None:
    conn, daemon = connections
    head, following = await head_in_flight_and_next(conn)
    version = "SELECT xmin::text FROM outbox_messages WHERE id = $1"
    before = await conn.fetchval(version, following)
    await record_last_part(daemon, head)
    assert await conn.fetchval(version, following) != before


async def test_a_claim_that_queued_the_next_row_is_undone_once_the_head_is_recorded(
    connections: tuple[asyncpg.Connection, ...],
) -> None:
    """The claim marks the next row queued (its head is sending) and has not committed when the
    head's last part is recorded: the record waits for it, then frees the row."""
    conn, daemon = connections
    head, following = await head_in_flight_and_next(conn)
    async with conn.transaction():
        [row] = await fetch_all(conn, store.CLAIM_BATCH, claim_values())
        assert row["marked"] == 1
        recording = asyncio.create_task(record_last_part(daemon, head))
        await asyncio.sleep(0.5)
        assert not recording.done()  # waiting for the claim's lock on the next row
    await recording
    queued = await conn.fetchval(
        "SELECT queued_behind FROM outbox_messages WHERE id = $1", following
    )
    assert queued is False
    claimed = await fetch_all(conn, store.CLAIM_BATCH, claim_values())
    assert [row["id"] for row in claimed] == [following]
