"""The part record reaches its rows by primary key whatever PostgreSQL's statistics say. Taken
while a fresh backlog was all pending, they count no row in flight; a plan through the status
index, or a scan of the table, then reads every row in flight (1,000 at 100 ms API latency) or
more for each write of parts; and a plan that takes the rows for one joins them to the parts in a
nested loop, comparing every row with every part."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from outbox import store
from outbox.connections import _compiled_for_asyncpg

IN_FLIGHT = 1000
RECORDED = 100
TABLE_ROWS = 20000


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


async def record_plan(database_url: str, plan_cache_mode: str, *, analyze: bool) -> Any:
    """The plan of recording one part of each of RECORDED rows among IN_FLIGHT in flight, with
    statistics taken while every row was pending; run (and rolled back) when `analyze`."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO outbox_messages (recipient, message) "
            "SELECT (923000000000 + i)::text, 'hi' FROM generate_series(1, $1) AS i",
            TABLE_ROWS,
        )
        await conn.execute("ANALYZE outbox_messages")  # every row pending, as autovacuum saw it
        token = uuid.uuid4()
        ids = await conn.fetch(
            "UPDATE outbox_messages SET status = 'sending', lease_token = $1, "
            "locked_until = now() + interval '30 seconds' "
            "WHERE id IN (SELECT id FROM outbox_messages ORDER BY id LIMIT $2) RETURNING id",
            token,
            IN_FLIGHT,
        )
        compiled = _compiled_for_asyncpg(store.RECORD_PARTS)
        values = compiled.construct_params(
            {
                "ids": [row["id"] for row in ids[:RECORDED]],
                "tokens": [token] * RECORDED,
                "indexes": [0] * RECORDED,
                "wamids": [f"wamid.{uuid.uuid4().hex}" for _ in range(RECORDED)],
                "finals": [True] * RECORDED,
                "lease": 30.0,
                "pair_interval": 6.0,
                "default_sender": "1234567890",
            }
        )
        await conn.execute(f"SET plan_cache_mode = {plan_cache_mode}")
        statement = await conn.prepare(compiled.string)
        arguments = [values[name] for name in compiled.positiontup or ()]
        async with conn.transaction():
            plan = await statement.explain(*arguments, analyze=analyze)
    finally:
        await conn.close()
    return plan[0]["Plan"]


PLAN_CACHE_MODES = ["force_custom_plan", "force_generic_plan"]


@pytest.mark.parametrize("plan_cache_mode", PLAN_CACHE_MODES)
async def test_the_part_record_reads_only_its_own_rows_under_stale_statistics(
    database_url: str, plan_cache_mode: str
) -> None:
    plan = await record_plan(database_url, plan_cache_mode, analyze=False)
    reads = [
        node
        for node in nodes(plan)
        if node.get("Relation Name") == "outbox_messages" and "Scan" in node["Node Type"]
    ]
    assert reads, "the record reads no row"
    assert {node.get("Index Name") for node in reads} == {"pk_outbox_messages"}


@pytest.mark.parametrize("plan_cache_mode", PLAN_CACHE_MODES)
async def test_the_part_record_reads_each_part_once(
    database_url: str, plan_cache_mode: str
) -> None:
    """Not once per row: a nested loop with the parts inside compared every row with every
    part (10,000 comparisons for 100 parts, on a table of TABLE_ROWS)."""
    plan = await record_plan(database_url, plan_cache_mode, analyze=True)
    written = [node for node in nodes(plan) if node.get("Operation") == "Update"]
    assert [node["Actual Rows"] for node in written] == [RECORDED]
    parts = [node for node in nodes(plan) if node["Node Type"] == "Function Scan"]
    assert parts, "the record reads no part"
    assert all(node["Actual Loops"] == 1 for node in parts)
