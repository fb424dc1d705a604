"""The daemon's writes to its rows in flight (the part record, the lease extension, the release)
reach them by primary key, and each of their values once, whatever PostgreSQL's statistics say.
Taken while a fresh backlog was all pending, they count no row in flight: a plan through the
status index, or a scan of the table, then reads every row in flight (1,000 at 100 ms API
latency) or more for each write; and a plan that takes the rows for one joins them to the
values in a nested loop, comparing every row with every value (a million pairs at 1,000)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from outbox import store
from outbox.connections import _compiled_for_asyncpg

TABLE_ROWS = 20000
IN_FLIGHT = 1000
RECORDED = 100


def record_values(ids: list[int], token: uuid.UUID) -> dict[str, Any]:
    return {
        "ids": ids,
        "tokens": [token] * len(ids),
        "indexes": [0] * len(ids),
        "wamids": [f"wamid.{uuid.uuid4().hex}" for _ in ids],
        "finals": [True] * len(ids),
        "lease": 30.0,
        "pair_interval": 6.0,
        "default_sender": "1234567890",
    }


def lease_values(ids: list[int], token: uuid.UUID) -> dict[str, Any]:
    return {"ids": ids, "tokens": [token] * len(ids), "lease": 30.0}


def release_values(ids: list[int], token: uuid.UUID) -> dict[str, Any]:
    return {"ids": ids, "tokens": [token] * len(ids)}


# name: (statement, rows it writes, its values for those rows and their lease token)
STATEMENTS: dict[str, tuple[sa.TextClause, int, Callable[[list[int], uuid.UUID], Any]]] = {
    "the part record": (store.RECORD_PARTS, RECORDED, record_values),
    "a lease extension": (store.EXTEND_LEASES, IN_FLIGHT, lease_values),
    "a release": (store.RELEASE, IN_FLIGHT, release_values),
}
PLAN_CACHE_MODES = ["force_custom_plan", "force_generic_plan"]
CASES = [
    pytest.param(name, mode, id=f"{name}, {mode}")
    for name in STATEMENTS
    for mode in PLAN_CACHE_MODES
]


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


async def in_flight_plan(database_url: str, name: str, plan_cache_mode: str, analyze: bool) -> Any:
    """The plan of the statement `name` over its rows among IN_FLIGHT in flight, with statistics
    taken while every row was pending; run (and rolled back) when `analyze`."""
    statement, count, values_for = STATEMENTS[name]
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
        compiled = _compiled_for_asyncpg(statement)
        values = compiled.construct_params(values_for([row["id"] for row in ids[:count]], token))
        await conn.execute(f"SET plan_cache_mode = {plan_cache_mode}")
        prepared = await conn.prepare(compiled.string)
        arguments = [values[name] for name in compiled.positiontup or ()]
        async with conn.transaction():
            plan = await prepared.explain(*arguments, analyze=analyze)
    finally:
        await conn.close()
    return plan[0]["Plan"]


@pytest.mark.parametrize(("name", "plan_cache_mode"), CASES)
async def test_a_write_in_flight_reads_only_its_own_rows_under_stale_statistics(
    database_url: str, name: str, plan_cache_mode: str
) -> None:
    plan = await in_flight_plan(database_url, name, plan_cache_mode, analyze=False)
    reads = [
        node
        for node in nodes(plan)
        if node.get("Relation Name") == "outbox_messages" and "Scan" in node["Node Type"]
    ]
    assert reads, "the statement reads no row"
    assert {node.get("Index Name") for node in reads} == {"pk_outbox_messages"}


@pytest.mark.parametrize(("name", "plan_cache_mode"), CASES)
async def test_a_write_in_flight_reads_each_of_its_rows_and_values_once(
    database_url: str, name: str, plan_cache_mode: str
) -> None:
    count = STATEMENTS[name][1]
    plan = await in_flight_plan(database_url, name, plan_cache_mode, analyze=True)
    written = [node for node in nodes(plan) if node.get("Operation") == "Update"]
    assert [node["Actual Rows"] for node in written] == [count]
    values = [node for node in nodes(plan) if node["Node Type"] == "Function Scan"]
    assert values, "the statement reads no value"
    assert all(node["Actual Loops"] == 1 for node in values)
    rows_read = sum(
        (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
        for node in nodes(plan)
        if node.get("Relation Name") == "outbox_messages" and "Scan" in node["Node Type"]
    )
    assert rows_read <= 2 * count
