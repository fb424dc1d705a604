"""The part record reaches its rows by primary key whatever PostgreSQL's statistics say. Taken
while a fresh backlog was all pending, they count no row in flight; a plan through the status
index, or a scan of the table, then reads every row in flight (1,000 at 100 ms API latency) or
more for each write of parts."""

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


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


@pytest.mark.parametrize("plan_cache_mode", ["force_custom_plan", "force_generic_plan"])
async def test_the_part_record_reads_only_its_own_rows_under_stale_statistics(
    database_url: str, plan_cache_mode: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO outbox_messages (recipient, message) "
            "SELECT (923000000000 + i)::text, 'hi' FROM generate_series(1, 5000) AS i"
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
        async with conn.transaction():
            plan = await statement.explain(*[values[name] for name in compiled.positiontup or ()])
    finally:
        await conn.close()
    reads = [
        node
        for node in nodes(plan[0]["Plan"])
        if node.get("Relation Name") == "outbox_messages" and "Scan" in node["Node Type"]
    ]
    assert reads, "the record reads no row"
    assert {node.get("Index Name") for node in reads} == {"pk_outbox_messages"}
