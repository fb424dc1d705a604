"""A conversation's pacing clock (GCRA's theoretical arrival time for Meta's pair rate) lives on
its rows: each recorded part advances its row's clock, and the claim of the conversation's next
row starts from the latest clock its earlier rows left, whichever daemon sent them. No entry per
conversation elsewhere: that was an insert per message and a table to prune. Statements on a real
PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from outbox import store
from outbox.connections import fetch_all
from tests.integration.test_in_flight_plans import record_values
from tests.integration.test_lanes import claim_values

CUSTOMER, OTHER = "923001234567", "923007654321"
INTERVAL = 6.0


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


async def a_row(conn: asyncpg.Connection, recipient: str, sender: str | None = None) -> int:
    row_id: int = await conn.fetchval(
        "INSERT INTO outbox_messages (recipient, message, sender) VALUES ($1, 'hi', $2) "
        "RETURNING id",
        recipient,
        sender,
    )
    return row_id


async def claimed(conn: asyncpg.Connection) -> dict[int, dict[str, Any]]:
    return {row["id"]: row for row in await fetch_all(conn, store.CLAIM_BATCH, claim_values())}


async def record(conn: asyncpg.Connection, row_id: int, index: int = 0, final: bool = True) -> None:
    token = await conn.fetchval("SELECT lease_token FROM outbox_messages WHERE id = $1", row_id)
    values = record_values([row_id], token) | {"indexes": [index], "finals": [final]}
    assert [row["id"] for row in await fetch_all(conn, store.RECORD_PARTS, values)] == [row_id]


async def clock(conn: asyncpg.Connection, row_id: int) -> float | None:
    due_in = await conn.fetchval(
        "SELECT extract(epoch FROM pair_tat - now())::float8 FROM outbox_messages WHERE id = $1",
        row_id,
    )
    return None if due_in is None else float(due_in)


async def test_a_first_row_is_claimed_without_a_clock(conn: asyncpg.Connection) -> None:
    first = await a_row(conn, CUSTOMER)
    assert (await claimed(conn))[first]["pair_due_in"] is None


async def test_each_recorded_part_advances_its_rows_clock_by_one_interval(
    conn: asyncpg.Connection,
) -> None:
    row = await a_row(conn, CUSTOMER)
    await claimed(conn)
    await record(conn, row, index=0, final=False)
    after_one = await clock(conn, row)
    await record(conn, row, index=1, final=True)
    after_two = await clock(conn, row)
    assert after_one is not None
    assert after_two is not None
    assert INTERVAL - 1 < after_one <= INTERVAL
    assert after_two - after_one == pytest.approx(INTERVAL, abs=0.5)


async def test_the_next_row_of_a_conversation_is_claimed_with_the_clock_its_last_row_left(
    conn: asyncpg.Connection,
) -> None:
    first = await a_row(conn, CUSTOMER)
    await claimed(conn)
    await record(conn, first)
    following = await a_row(conn, CUSTOMER)
    due_in = (await claimed(conn))[following]["pair_due_in"]
    assert due_in is not None
    assert INTERVAL - 1 < float(due_in) <= INTERVAL
    await record(conn, following)
    following_clock = await clock(conn, following)
    assert following_clock is not None
    assert following_clock > 2 * INTERVAL - 1


async def test_another_recipients_or_another_senders_clock_is_not_theirs(
    conn: asyncpg.Connection,
) -> None:
    first = await a_row(conn, CUSTOMER)
    await claimed(conn)
    await record(conn, first)
    other_recipient = await a_row(conn, OTHER)
    other_sender = await a_row(conn, CUSTOMER, sender="5550001111")
    rows = await claimed(conn)
    assert rows[other_recipient]["pair_due_in"] is None
    assert rows[other_sender]["pair_due_in"] is None


async def test_a_row_without_a_sender_shares_the_clock_of_the_default_senders_rows(
    conn: asyncpg.Connection,
) -> None:
    # Meta paces the pair (number, person): a null sender is the default number.
    first = await a_row(conn, CUSTOMER, sender=claim_values()["default_sender"])
    await claimed(conn)
    await record(conn, first)
    following = await a_row(conn, CUSTOMER)
    assert (await claimed(conn))[following]["pair_due_in"] is not None
