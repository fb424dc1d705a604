"""The delivery history (outbox_events) belongs to its rows without locking them: appending a
batch of events takes no lock on the rows they name (no foreign key's KEY SHARE lock, which
dirtied every sent row's page a second time and could make the part record wait or share a
MultiXact), yet a row deleted, pruned or truncated takes its history with it. Real transactions
on a real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from outbox import store
from outbox.connections import fetch_all
from outbox.delivery.events import Event, append_values

CUSTOMER = "923001234567"


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


async def a_row(conn: asyncpg.Connection, text: str = "hello") -> int:
    row_id: int = await conn.fetchval(
        "INSERT INTO outbox_messages (recipient, message) VALUES ($1, $2) RETURNING id",
        CUSTOMER,
        text,
    )
    return row_id


async def append(conn: asyncpg.Connection, *row_ids: int) -> int:
    """One batch of `accepted` events, as the daemon's history writer appends them."""
    batch = [
        Event(row_id, 0, "accepted", 200, detail="wamid.x", latency_ms=1.5) for row_id in row_ids
    ]
    rows = await fetch_all(conn, store.APPEND_EVENTS, append_values(batch))
    appended: int = rows[0]["appended"]
    return appended


async def history(conn: asyncpg.Connection, row_id: int) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM outbox_events WHERE message_id = $1", row_id
    )
    return count


async def test_appending_history_leaves_the_rows_it_names_unlocked(
    conn: asyncpg.Connection,
) -> None:
    row_id = await a_row(conn)
    before = await conn.fetchval("SELECT xmax::text FROM outbox_messages WHERE id = $1", row_id)
    assert await append(conn, row_id) == 1
    after = await conn.fetchval("SELECT xmax::text FROM outbox_messages WHERE id = $1", row_id)
    assert after == before == "0"


async def test_appending_history_does_not_wait_for_a_row_held_for_update(
    conn: asyncpg.Connection, database_url: str
) -> None:
    row_id = await a_row(conn)
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM outbox_messages WHERE id = $1 FOR UPDATE", row_id)
            await conn.execute("SET lock_timeout = '2s'")
            assert await append(conn, row_id) == 1
    finally:
        await holder.close()
    assert await history(conn, row_id) == 1


async def test_history_of_a_row_that_is_gone_is_not_appended(conn: asyncpg.Connection) -> None:
    kept, gone = await a_row(conn), await a_row(conn)
    await conn.execute("DELETE FROM outbox_messages WHERE id = $1", gone)
    assert await append(conn, kept, gone) == 1
    assert await history(conn, gone) == 0


async def test_deleting_rows_deletes_their_history_and_only_theirs(
    conn: asyncpg.Connection,
) -> None:
    first, second, kept = await a_row(conn), await a_row(conn), await a_row(conn)
    await append(conn, first, second, kept, kept)
    await conn.execute("DELETE FROM outbox_messages WHERE id = ANY($1::bigint[])", [first, second])
    assert [await history(conn, row) for row in (first, second, kept)] == [0, 0, 2]


async def test_truncating_the_rows_truncates_their_history(conn: asyncpg.Connection) -> None:
    # RESTART IDENTITY gives the next rows the same ids: a history left behind would be theirs.
    await append(conn, await a_row(conn))
    await conn.execute("TRUNCATE outbox_messages RESTART IDENTITY CASCADE")
    assert await conn.fetchval("SELECT count(*) FROM outbox_events") == 0
    assert await history(conn, await a_row(conn)) == 0


async def test_truncating_the_rows_and_their_history_together_works(
    conn: asyncpg.Connection,
) -> None:
    # What a fixture resetting every table does; the history's trigger must not truncate twice.
    await append(conn, await a_row(conn))
    await conn.execute("TRUNCATE outbox_messages, outbox_events RESTART IDENTITY CASCADE")
    assert await conn.fetchval("SELECT count(*) FROM outbox_events") == 0


async def test_a_role_that_may_delete_rows_deletes_their_history_without_rights_on_it(
    conn: asyncpg.Connection,
) -> None:
    # As the foreign key's cascade did: it ran as the tables' owner.
    row_id = await a_row(conn)
    await append(conn, row_id)
    role = f"outbox_app_{uuid.uuid4().hex[:12]}"
    await conn.execute(f"CREATE ROLE {role}")
    try:
        await conn.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON outbox_messages TO {role}; "
            f"GRANT USAGE ON SCHEMA public TO {role}"
        )
        async with conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {role}")
            await conn.execute("DELETE FROM outbox_messages WHERE id = $1", row_id)
        assert await history(conn, row_id) == 0
    finally:
        await conn.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")
