"""Recipient lanes on a real PostgreSQL: a claim looks at a bounded window of ready rows, marks
the ones queued behind an older row to their recipient, and a trigger frees the next ones when a
row finishes, so one long lane never slows the claim nor holds back other recipients."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox import store
from outbox.connections import fetch_all

LANE = "923009999999"


async def insert(engine: AsyncEngine, recipient: str, count: int, **columns: str) -> None:
    """`count` rows to `recipient`, with extra columns as SQL expressions."""
    names = "".join(f", {name}" for name in columns)
    values = "".join(f", {value}" for value in columns.values())
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                f"INSERT INTO outbox_messages (recipient, message{names}) "
                f"SELECT :recipient, 'm' || i{values} FROM generate_series(1, :count) AS i"
            ),
            {"recipient": recipient, "count": count},
        )


def claim_values(limit: int = 10, window: int = 40) -> dict[str, Any]:
    """CLAIM_BATCH's parameters for a daemon with nothing in flight."""
    return {
        "limit": limit,
        "window": window,
        "token": uuid.uuid4(),
        "lease": 30,
        "mine": [],
        "tokens": [],
        "max_age": 0,
        "default_sender": "1234567890",
        "stopped": [],
        "only": None,
        "fresh": False,
        "grace": 0,
        "takeover": True,
    }


async def claim(engine: AsyncEngine, limit: int = 10, window: int = 40) -> list[dict[str, Any]]:
    async with engine.begin() as conn:
        return await fetch_all(conn, store.CLAIM_BATCH, claim_values(limit, window))


async def finish(engine: AsyncEngine, row_id: int, status: str = "sent") -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE outbox_messages SET status = :status WHERE id = :id"),
            {"status": status, "id": row_id},
        )


async def queued(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        result = await conn.execute(
            sa.text("SELECT id FROM outbox_messages WHERE queued_behind ORDER BY id")
        )
        return [row.id for row in result]


def claimed_ids(rows: list[dict[str, Any]]) -> list[int]:
    return [row["id"] for row in rows if row["id"] is not None]


async def test_a_claim_marks_the_rows_it_finds_queued_behind_their_lane(
    engine: AsyncEngine,
) -> None:
    await insert(engine, LANE, 5)
    rows = await claim(engine)
    assert claimed_ids(rows) == [1]
    assert rows[0]["marked"] == 4
    assert await queued(engine) == [2, 3, 4, 5]


async def test_a_long_lane_does_not_hold_back_other_recipients(engine: AsyncEngine) -> None:
    await insert(engine, LANE, 1000)
    await insert(engine, "923001111111", 1)
    await insert(engine, "923002222222", 1)
    taken: list[int] = []
    for _ in range(30):  # each claim looks at 40 rows: the lane's are marked and left behind
        taken += claimed_ids(await claim(engine))
        if 1001 in taken and 1002 in taken:
            break
    assert taken == [1, 1001, 1002]


async def test_a_claim_that_only_marks_rows_says_so_with_a_null_row(engine: AsyncEngine) -> None:
    await insert(engine, LANE, 100)
    await claim(engine)  # takes the lane's first row, marks the next 39
    rows = await claim(engine)
    assert rows == [{**rows[0], "id": None, "marked": 40}]


async def test_finishing_a_row_frees_the_next_in_its_lane_and_no_further(
    engine: AsyncEngine,
) -> None:
    await insert(engine, LANE, 4)
    await claim(engine)
    await finish(engine, 1)
    assert await queued(engine) == [3, 4]
    assert claimed_ids(await claim(engine)) == [2]


@pytest.mark.parametrize("how", ["failed", "cancelled", "deleted"])
async def test_any_way_a_row_leaves_its_lane_frees_the_next(engine: AsyncEngine, how: str) -> None:
    await insert(engine, LANE, 3)
    await claim(engine)
    if how == "deleted":
        async with engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM outbox_messages WHERE id = 1"))
    else:
        await finish(engine, 1, how)
    assert claimed_ids(await claim(engine)) == [2]


async def test_a_row_scheduled_for_later_in_a_lane_frees_the_due_row_after_it(
    engine: AsyncEngine,
) -> None:
    await insert(engine, LANE, 1)
    await insert(engine, LANE, 1, available_at="now() + interval '1 day'")
    await insert(engine, LANE, 1)
    assert claimed_ids(await claim(engine)) == [1]
    assert await queued(engine) == [3]
    await finish(engine, 1)
    assert await queued(engine) == []
    assert claimed_ids(await claim(engine)) == [3]


async def test_a_row_waiting_for_a_retry_keeps_its_lane_queued(engine: AsyncEngine) -> None:
    await insert(engine, LANE, 1, available_at="now() + interval '1 hour'", last_error="'HTTP 500'")
    await insert(engine, LANE, 2)
    assert claimed_ids(await claim(engine)) == []
    assert await queued(engine) == [2, 3]


async def test_the_sweep_frees_a_lane_whose_mark_outlived_its_reason(engine: AsyncEngine) -> None:
    await insert(engine, LANE, 3)
    await claim(engine)
    async with engine.begin() as conn:  # the first row leaves without the trigger (a race)
        await conn.execute(sa.text("ALTER TABLE outbox_messages DISABLE TRIGGER USER"))
        await conn.execute(sa.text("UPDATE outbox_messages SET status = 'sent' WHERE id = 1"))
        await conn.execute(sa.text("ALTER TABLE outbox_messages ENABLE TRIGGER USER"))
    assert claimed_ids(await claim(engine)) == []
    async with engine.begin() as conn:
        released = await fetch_all(conn, store.RELEASE_LANES)
    assert [row["id"] for row in released] == [2]
    assert claimed_ids(await claim(engine)) == [2]


async def test_a_row_another_transaction_is_changing_is_not_marked(engine: AsyncEngine) -> None:
    await insert(engine, LANE, 3)
    async with engine.connect() as other:
        await other.execute(sa.text("BEGIN"))
        await other.execute(sa.text("UPDATE outbox_messages SET message = 'edited' WHERE id = 2"))
        rows = await claim(engine)  # does not wait for the other transaction
        await other.execute(sa.text("ROLLBACK"))
    assert claimed_ids(rows) == [1]
    assert await queued(engine) == [3]


# What the daemon writes for a row Meta holds for hours: its template paused (132015, migration
# 0008), or marketing to this customer deferred (131049, migration 0021).
HELD_BY_META = {"paused template": 132015, "deferred marketing": 131049}


async def hold_for_hours(engine: AsyncEngine, row_id: int, code: int = 132015) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE outbox_messages SET status = 'pending', error_code = :code, "
                "last_error = 'waiting: held by Meta', lease_token = NULL, "
                "available_at = now() + interval '1 hour' WHERE id = :id"
            ),
            {"id": row_id, "code": code},
        )


@pytest.mark.parametrize("code", HELD_BY_META.values(), ids=HELD_BY_META.keys())
async def test_a_row_meta_holds_for_hours_frees_the_rows_behind_it(
    engine: AsyncEngine, code: int
) -> None:
    await insert(engine, LANE, 3)
    await claim(engine)
    await hold_for_hours(engine, 1, code)
    assert await queued(engine) == [3]
    assert claimed_ids(await claim(engine)) == [2]


@pytest.mark.parametrize("code", HELD_BY_META.values(), ids=HELD_BY_META.keys())
async def test_a_row_meta_holds_for_hours_stops_no_release_behind_it(
    engine: AsyncEngine, code: int
) -> None:
    await insert(engine, LANE, 3)
    await claim(engine)  # 1 sending; 2 and 3 queued behind it
    await finish(engine, 1)  # frees 2 (3 stays behind 2)
    assert claimed_ids(await claim(engine)) == [2]
    await hold_for_hours(engine, 2, code)
    assert claimed_ids(await claim(engine)) == [3]


async def test_a_row_held_for_its_paused_template_holds_its_lane_again_once_due(
    engine: AsyncEngine,
) -> None:
    await insert(engine, LANE, 1, available_at="now() - interval '1 second'", error_code="132015")
    await insert(engine, LANE, 1)
    assert claimed_ids(await claim(engine)) == [1]
