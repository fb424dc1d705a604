"""The charts' rollup: outbox_events folded into counts per minute, sender, template, outcome
and Graph code, each event once, none passed over while its transaction may still be open."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.dashboard.rollup import catch_up
from outbox.store import operations, rollup


async def _message(engine: AsyncEngine, template: str | None = None, sender: str = "111") -> int:
    async with engine.begin() as conn:
        kwargs: dict[str, object] = {"sender": sender}
        if template is not None:
            kwargs["template"] = outbox.Template(template, "en_US", category="utility")
            return await outbox.enqueue(conn, "+923001234567", **kwargs)  # type: ignore[arg-type]
        return await outbox.enqueue(conn, "+923001234567", "hi", **kwargs)  # type: ignore[arg-type]


async def _event(
    engine: AsyncEngine, message_id: int, kind: str, code: int | None = None, ago: str = "5 min"
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO outbox_events (message_id, part, kind, error_code, at) "
                "VALUES (:id, 0, :kind, :code, now() - CAST(CAST(:ago AS text) AS interval))"
            ),
            {"id": message_id, "kind": kind, "code": code, "ago": ago},
        )


async def _rollup(engine: AsyncEngine) -> list[tuple[str, str, str, int, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT sender, template, outcome, error_code, sum(count)::int FROM outbox_rollup "
                "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
            )
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_sends_and_failures_are_counted_by_sender_template_and_code(
    engine: AsyncEngine,
) -> None:
    text = await _message(engine)
    reminder = await _message(engine, template="checkout_reminder", sender="222")
    await _event(engine, text, "accepted")
    await _event(engine, text, "transient", 131000)  # retried: not a failure of the row
    await _event(engine, reminder, "accepted")
    await _event(engine, reminder, "status:failed", 131026)
    await _event(engine, text, "failed", 131047)
    assert await catch_up(engine, settle_seconds=0) == 5
    assert await _rollup(engine) == [
        ("111", "", "failed", 131047, 1),
        ("111", "", "sent", 0, 1),
        ("222", "checkout_reminder", "failed", 131026, 1),
        ("222", "checkout_reminder", "sent", 0, 1),
    ]


async def test_an_event_is_folded_once(engine: AsyncEngine) -> None:
    row = await _message(engine)
    await _event(engine, row, "accepted")
    await catch_up(engine, settle_seconds=0)
    assert await catch_up(engine, settle_seconds=0) == 0
    await _event(engine, row, "accepted")
    await catch_up(engine, settle_seconds=0)
    assert await _rollup(engine) == [("111", "", "sent", 0, 2)]


async def test_the_fold_stops_before_an_event_younger_than_the_settle_delay(
    engine: AsyncEngine,
) -> None:
    row = await _message(engine)
    await _event(engine, row, "accepted", ago="5 min")
    await _event(engine, row, "accepted", ago="0 s")  # its transaction may have company
    await _event(engine, row, "failed", 131047, ago="5 min")
    assert await catch_up(engine, settle_seconds=60) == 1
    assert await _rollup(engine) == [("111", "", "sent", 0, 1)]
    assert await catch_up(engine, settle_seconds=0) == 2
    assert await _rollup(engine) == [
        ("111", "", "failed", 131047, 1),
        ("111", "", "sent", 0, 2),
    ]


async def test_catching_up_folds_every_batch(engine: AsyncEngine) -> None:
    row = await _message(engine)
    for _ in range(7):
        await _event(engine, row, "accepted")
    assert await catch_up(engine, batch=3, settle_seconds=0) == 7
    assert await _rollup(engine) == [("111", "", "sent", 0, 7)]


async def test_the_charts_read_failures_by_code_and_template(engine: AsyncEngine) -> None:
    reminder = await _message(engine, template="checkout_reminder")
    for code in (131026, 131026, 131047):
        await _event(engine, reminder, "failed", code)
    await catch_up(engine, settle_seconds=0)
    async with engine.connect() as conn:
        since = await operations.now(conn) - timedelta(hours=24)
        codes = await rollup.failures_by_code(conn, since, 10)
        templates = await rollup.failures_by_template(conn, since, 10)
    assert [(r["key"], r["count"]) for r in codes] == [(131026, 2), (131047, 1)]
    assert [(r["key"], r["count"]) for r in templates] == [("checkout_reminder", 3)]


@pytest.mark.parametrize(
    "statement",
    [rollup.PER_BUCKET, rollup.FAILURES_BY_CODE, rollup.FAILURES_BY_TEMPLATE, rollup.BY_SENDER],
    ids=["per-bucket", "by-code", "by-template", "by-sender"],
)
async def test_a_chart_reads_the_rollup_and_never_the_messages(
    engine: AsyncEngine, statement: sa.TextClause
) -> None:
    async with engine.connect() as conn:
        result = await conn.execute(
            sa.text(f"EXPLAIN {statement.text}"),
            {"since": datetime(2026, 12, 1, tzinfo=UTC), "width": 600, "limit": 10},
        )
        plan = "\n".join(row[0] for row in result)
    assert "outbox_rollup" in plan, plan
    assert "outbox_messages" not in plan, plan


@pytest.mark.parametrize(
    "statement",
    [operations.IN_HAND, operations.HELD, operations.OLDEST_PENDING],
    ids=["in-hand", "held", "oldest-pending"],
)
async def test_a_live_figure_walks_an_index_of_the_messages(
    engine: AsyncEngine, statement: sa.TextClause
) -> None:
    async with engine.connect() as conn:
        await conn.exec_driver_sql("SET enable_seqscan = off")
        result = await conn.execute(sa.text(f"EXPLAIN {statement.text}"), {"cap": 10, "limit": 10})
        plan = "\n".join(row[0] for row in result)
    assert "Seq Scan" not in plan, plan
    assert "Limit" in plan, plan
    if statement is operations.HELD:
        assert "ix_outbox_messages_waiting" in plan, plan
