"""The lanes' trigger reads each row a statement changed a bounded number of times, however many
rows the statement changed: a claim, a lease extension or a release of a thousand rows in flight
must not cost the trigger a million reads (migration 0023). Read off auto_explain's plans of the
trigger's own statements, not timed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

ROWS = 400


@pytest.fixture
async def explained(database_url: str) -> AsyncIterator[tuple[asyncpg.Connection, list[str]]]:
    """A connection whose every statement, nested ones included, sends its analysed plan back
    as a LOG message, and the list those messages land in."""
    conn = await asyncpg.connect(database_url)
    plans: list[str] = []
    conn.add_log_listener(lambda _conn, message: plans.append(message.message))
    await conn.execute("LOAD 'auto_explain'")
    for setting in (
        "auto_explain.log_min_duration = 0",
        "auto_explain.log_analyze = on",
        "auto_explain.log_timing = off",
        "auto_explain.log_nested_statements = on",
        "auto_explain.log_format = json",
        "client_min_messages = log",
    ):
        await conn.execute(f"SET {setting}")
    # The trigger's statements are planned once per connection, on their first run: one row
    # through every step first, as a daemon's connection often sees before a big statement.
    warm = await conn.fetchval(
        "INSERT INTO outbox_messages (recipient, message) VALUES ('923100000000', 'w') RETURNING id"
    )
    for status in ("sending", "sending", "sent", "delivered"):
        await conn.execute(
            "UPDATE outbox_messages SET status = $2, updated_at = now() WHERE id = $1", warm, status
        )
    await conn.execute(
        "INSERT INTO outbox_messages (recipient, message) "
        "SELECT (923000000000 + i)::text, 'm' FROM generate_series(1, $1) AS i",
        ROWS,
    )
    await conn.execute("DELETE FROM outbox_messages WHERE id = $1", warm)
    plans.clear()
    try:
        yield conn, plans
    finally:
        await conn.close()


def transition_reads(plan: dict[str, Any]) -> int:
    """Rows a plan read from the trigger's transition tables, each rescan counted."""
    reads = 0
    if plan.get("Node Type") == "Named Tuplestore Scan":
        per_loop = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
        reads += per_loop * plan.get("Actual Loops", 0)
    for child in plan.get("Plans", []):
        reads += transition_reads(child)
    return reads


def trigger_reads(plans: list[str]) -> int:
    return sum(transition_reads(json.loads(p[p.index("{") :])["Plan"]) for p in plans if "{" in p)


# (what the rows were set to first, the statement measured): each one the daemon, the receiver
# or an operator runs over many rows at once.
STATEMENTS = {
    "a claim": (
        None,
        "UPDATE outbox_messages SET status = 'sending', lease_token = gen_random_uuid(), "
        "locked_until = now() + interval '1 minute'",
    ),
    "a lease extension": (
        "sending",
        "UPDATE outbox_messages SET locked_until = now() + interval '1 minute'",
    ),
    "rows finished together": ("sending", "UPDATE outbox_messages SET status = 'sent'"),
    "statuses moving finished rows on": ("sent", "UPDATE outbox_messages SET status = 'delivered'"),
}


@pytest.mark.parametrize(("before", "statement"), STATEMENTS.values(), ids=STATEMENTS.keys())
async def test_a_statement_over_many_rows_reads_each_changed_row_a_few_times(
    explained: tuple[asyncpg.Connection, list[str]], before: str | None, statement: str
) -> None:
    conn, plans = explained
    if before is not None:
        await conn.execute("UPDATE outbox_messages SET status = $1", before)
        plans.clear()
    await conn.execute(statement)
    assert 0 < trigger_reads(plans) <= 4 * ROWS
