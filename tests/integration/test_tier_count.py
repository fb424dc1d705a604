"""The daily limit's running count (outbox.store.tier): a place taken reads one counter instead
of counting every customer of the last 24 h, and the counter stays exact as customers expire,
return and are forgotten."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox.policy.tier import DailyLimit, Reservation, reserve


async def place(engine: AsyncEngine, customers: Sequence[str], limit: int = 1000) -> list[bool]:
    """Each customer's reservation, one transaction each, as the daemon takes them."""
    granted = []
    for customer in customers:
        async with engine.begin() as conn:
            found: Reservation = await reserve(
                conn,
                customer,
                configured=DailyLimit(limit),
                category="utility",
            )
            granted.append(found.granted)
    return granted


def customers(count: int, start: int = 0) -> list[str]:
    return [f"9230012{n:05d}" for n in range(start, start + count)]


async def age(engine: AsyncEngine, customers: Sequence[str], hours: float) -> None:
    """Move the customers' places `hours` into the past."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE outbox_tier_recipients SET counted_at = now() - make_interval(secs => :s)"
                " WHERE customer = ANY(CAST(:c AS text[]))"
            ),
            {"s": hours * 3600, "c": list(customers)},
        )


async def counted(engine: AsyncEngine) -> tuple[int, int]:
    """(the running count, the customers of the last 24 h counted one by one)."""
    async with engine.connect() as conn:
        kept = await conn.scalar(sa.text("SELECT used FROM outbox_tier_count"))
        truth = await conn.scalar(
            sa.text(
                "SELECT count(*) FROM outbox_tier_recipients"
                " WHERE counted_at > now() - interval '24 hours'"
            )
        )
    return kept, truth


async def test_the_running_count_follows_every_new_customer(engine: AsyncEngine) -> None:
    assert await place(engine, customers(30)) == [True] * 30
    assert await counted(engine) == (30, 30)


async def test_a_customer_counted_again_does_not_move_the_count(engine: AsyncEngine) -> None:
    await place(engine, customers(5))
    await place(engine, customers(5))
    assert await counted(engine) == (5, 5)


async def test_customers_older_than_24h_leave_the_count_and_free_their_places(
    engine: AsyncEngine,
) -> None:
    first = customers(10)
    assert await place(engine, first, limit=10) == [True] * 10
    assert await place(engine, customers(1, start=50), limit=10) == [False]
    await age(engine, first[:4], hours=24.01)
    assert await place(engine, customers(4, start=50), limit=10) == [True] * 4
    assert await counted(engine) == (10, 10)


async def test_a_customer_back_after_24h_takes_a_new_place(engine: AsyncEngine) -> None:
    returning = customers(1)
    await place(engine, returning + customers(3, start=10))
    await age(engine, returning, hours=30)
    await place(engine, returning)
    assert await counted(engine) == (4, 4)


async def test_a_refused_customer_whose_old_place_expired_is_not_counted(
    engine: AsyncEngine,
) -> None:
    old = customers(1, start=90)
    await place(engine, old, limit=2)
    await age(engine, old, hours=25)
    await place(engine, customers(2), limit=2)
    assert await place(engine, old, limit=2) == [False]
    assert await counted(engine) == (2, 2)
