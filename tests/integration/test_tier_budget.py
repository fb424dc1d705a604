"""The daily limit in the daemon (issue 16, point 4), against the simulator and a real
PostgreSQL: the portfolio's tier is a budget of unique customers per moving 24 h, shared by
every daemon; templates beyond it make no request and wait with `tier_budget`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.delivery.daemon import Daemon
from outbox.policy.tier import DailyLimit
from outbox.simulator import Simulator
from tests.integration.test_policy import wrote

RECEIPT = outbox.Template("order_receipt", "en_US", ("42",), category="utility")
PROMO = outbox.Template("spring_sale", "en_US", category="marketing")


def customers(count: int, start: int = 0) -> list[str]:
    return [f"9230012{n:05d}" for n in range(start, start + count)]


async def enqueue_templates(
    engine: AsyncEngine, recipients: Sequence[str], template: outbox.Template = RECEIPT
) -> list[int]:
    async with engine.begin() as conn:
        return [await outbox.enqueue(conn, r, template=template) for r in recipients]


async def outcomes(engine: AsyncEngine, rows: Sequence[int]) -> dict[str, int]:
    """How many of the rows are sent, waiting for the budget, or otherwise."""
    async with engine.connect() as conn:
        found = await conn.execute(
            sa.text(
                "SELECT status, last_error, attempts FROM outbox_messages"
                " WHERE id = ANY(CAST(:ids AS bigint[]))"
            ),
            {"ids": list(rows)},
        )
        counts: dict[str, int] = {}
        for status, error, attempts in found:
            kind = status
            if status == "pending" and (error or "").startswith("tier_budget"):
                kind = "tier_budget" if attempts == 0 else "tier_budget with attempts"
            counts[kind] = counts.get(kind, 0) + 1
        return counts


async def run_until(
    settings: outbox.Settings, engine: AsyncEngine, rows: Sequence[int], expected: dict[str, int]
) -> dict[str, int]:
    """Run `settings` daemons (one per settings) until the rows' outcomes are `expected`."""
    return await run_many([settings], engine, rows, expected)


async def run_many(
    all_settings: Sequence[outbox.Settings],
    engine: AsyncEngine,
    rows: Sequence[int],
    expected: dict[str, int],
) -> dict[str, int]:
    daemons = [Daemon(s) for s in all_settings]
    running = [asyncio.create_task(d.run()) for d in daemons]
    found: dict[str, int] = {}
    try:
        for _ in range(600):
            found = await outcomes(engine, rows)
            if found == expected:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # nothing more moves once it is reached
        return await outcomes(engine, rows)
    finally:
        for daemon in daemons:
            daemon.stop()
        for task in running:
            assert await asyncio.wait_for(task, 10) == 0


async def test_a_tier_of_250_sends_250_of_300_new_customers_and_holds_50_with_tier_budget(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    rows = await enqueue_templates(engine, customers(300))
    limited = replace(settings, daily_limit=DailyLimit(250))
    # Two daemons share the budget: it is counted in the database, not in either of them.
    found = await run_many([limited, limited], engine, rows, {"sent": 250, "tier_budget": 50})
    assert found == {"sent": 250, "tier_budget": 50}
    assert len(simulator.accepted) == 250


async def test_a_waiting_row_says_when_a_place_frees(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    rows = await enqueue_templates(engine, customers(2))
    limited = replace(settings, daily_limit=DailyLimit(1))
    await run_until(limited, engine, rows, {"sent": 1, "tier_budget": 1})
    async with engine.connect() as conn:
        error, wait = (
            await conn.execute(
                sa.text(
                    "SELECT last_error, extract(epoch FROM available_at - now())"
                    " FROM outbox_messages WHERE status = 'pending'"
                )
            )
        ).one()
    assert error.startswith("tier_budget: the daily limit is used (1 of 1 unique customers")
    assert "a place frees at" in error
    assert 0 < wait <= 3600  # looked at again within the hour: the limit may change


async def test_a_customer_counted_in_the_last_24h_does_not_count_again(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    (customer,) = customers(1)
    rows = await enqueue_templates(engine, [customer, customer, customer])
    found = await run_until(replace(settings, daily_limit=DailyLimit(1)), engine, rows, {"sent": 3})
    assert found == {"sent": 3}


async def test_a_customer_whose_window_is_open_does_not_count(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    writer, other = customers(2)
    await wrote(engine, timedelta(hours=1), customer=writer)
    rows = await enqueue_templates(engine, [writer, other])
    found = await run_until(replace(settings, daily_limit=DailyLimit(1)), engine, rows, {"sent": 2})
    assert found == {"sent": 2}
    async with engine.connect() as conn:
        counted = await conn.scalar(sa.text("SELECT count(*) FROM outbox_tier_recipients"))
    assert counted == 1  # only the customer outside a window


async def test_free_form_messages_never_count(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    async with engine.begin() as conn:
        rows = [await outbox.enqueue(conn, r, "hello") for r in customers(3)]
    found = await run_until(replace(settings, daily_limit=DailyLimit(1)), engine, rows, {"sent": 3})
    assert found == {"sent": 3}


async def test_marketing_leaves_a_tenth_of_the_budget_to_utility(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    promos = await enqueue_templates(engine, customers(12), PROMO)
    limited = replace(settings, daily_limit=DailyLimit(10))
    found = await run_until(limited, engine, promos, {"sent": 9, "tier_budget": 3})
    assert found == {"sent": 9, "tier_budget": 3}
    receipts = await enqueue_templates(engine, customers(2, start=100))
    found = await run_until(limited, engine, receipts, {"sent": 1, "tier_budget": 1})
    assert found == {"sent": 1, "tier_budget": 1}


async def webhooks_report_limit(engine: AsyncEngine, customers: int) -> None:
    """The portfolio's limit as the number health webhooks store it."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO outbox_account_health (waba_id, messaging_limit, limit_tier, limit_at)"
                " VALUES ('102290129340398', :limit, :tier, now())"
            ),
            {"limit": customers, "tier": f"TIER_{customers}"},
        )


async def test_without_a_configured_limit_the_webhooks_limit_applies(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await webhooks_report_limit(engine, 2)
    rows = await enqueue_templates(engine, customers(3))
    found = await run_until(settings, engine, rows, {"sent": 2, "tier_budget": 1})
    assert found == {"sent": 2, "tier_budget": 1}


async def test_a_configured_limit_wins_over_the_webhooks(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await webhooks_report_limit(engine, 1)
    rows = await enqueue_templates(engine, customers(3))
    found = await run_until(
        replace(settings, daily_limit=DailyLimit(None)), engine, rows, {"sent": 3}
    )
    assert found == {"sent": 3}


async def test_no_known_limit_sends_as_before(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    rows = await enqueue_templates(engine, customers(5))
    found = await run_until(settings, engine, rows, {"sent": 5})
    assert found == {"sent": 5}


async def test_a_row_whose_deadline_comes_before_a_place_frees_fails_expired(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    first, second = customers(2)
    limited = replace(settings, daily_limit=DailyLimit(1))
    sent = await enqueue_templates(engine, [first])
    await run_until(limited, engine, sent, {"sent": 1})
    async with engine.begin() as conn:
        deadline = datetime.now(UTC) + timedelta(hours=1)
        late = await outbox.enqueue(conn, second, template=RECEIPT, expires_at=deadline)
    found = await run_until(limited, engine, [late], {"failed": 1})
    assert found == {"failed": 1}
    async with engine.connect() as conn:
        error = await conn.scalar(
            sa.text("SELECT last_error FROM outbox_messages WHERE id = :id"), {"id": late}
        )
    assert error.startswith("expired: its deadline comes before a place frees (tier_budget:")


@pytest.mark.parametrize(
    "limit", [None, DailyLimit(None)], ids=["no-limit-known", "configured-unlimited"]
)
async def test_without_a_limit_in_effect_a_template_takes_no_place_in_the_budget(
    settings: outbox.Settings, engine: AsyncEngine, simulator: Simulator, limit: DailyLimit | None
) -> None:
    rows = await enqueue_templates(engine, customers(5))
    options = replace(settings, daily_limit=limit)
    assert await run_until(options, engine, rows, {"sent": 5}) == {"sent": 5}
    async with engine.connect() as conn:
        placed = await conn.execute(sa.text("SELECT count(*) FROM outbox_tier_recipients"))
        assert placed.scalar_one() == 0
