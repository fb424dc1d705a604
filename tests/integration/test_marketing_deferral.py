"""Meta's per-user marketing limit in the daemon (issue 16, point 4): a 131049 defers the row
by a day or more instead of failing it, bounded by its deadline."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.delivery.daemon import Daemon
from outbox.simulator import Simulator
from tests.daemon_helpers import run_until_ruled, script

CUSTOMER = "923001234567"
PROMO = outbox.Template("spring_sale", "en_US", category="marketing")
LOGIN_CODE = outbox.Template("login_code", "en_US", ("123456",), category="authentication")


async def test_a_131049_defers_the_row_a_day_instead_of_failing_it(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    script(simulator, CUSTOMER, {"error": 131049})
    async with engine.begin() as conn:
        row = await outbox.enqueue(conn, CUSTOMER, template=PROMO)
    found = await run_until_ruled(settings, engine, row)
    assert (found.status, found.attempts, found.error_code) == ("pending", 1, 131049)
    assert found.last_error.startswith("deferred: ")
    assert 23.9 * 3600 < found.wait <= 24 * 3600


async def test_a_131049_past_the_rows_deadline_fails_it_expired(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    script(simulator, CUSTOMER, {"error": 131049})
    async with engine.begin() as conn:
        row = await outbox.enqueue(
            conn, CUSTOMER, template=PROMO, expires_at=datetime.now(UTC) + timedelta(hours=2)
        )
    found = await run_until_ruled(settings, engine, row)
    assert (found.status, found.error_code) == ("failed", 131049)
    assert found.last_error.startswith("expired: its deadline comes before Meta takes it again")


async def test_a_deferred_marketing_row_does_not_hold_back_the_customers_next_messages(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    script(simulator, CUSTOMER, {"error": 131049})
    async with engine.begin() as conn:
        promo = await outbox.enqueue(conn, CUSTOMER, template=PROMO)
        code = await outbox.enqueue(conn, CUSTOMER, template=LOGIN_CODE)
    daemon = Daemon(settings)
    running = asyncio.create_task(daemon.run())
    try:
        async with engine.connect() as conn:
            for _ in range(200):
                if (await outbox.get_status(conn, code)).status == "sent":
                    break
                await conn.rollback()
                await asyncio.sleep(0.05)
            deferred = await outbox.get_status(conn, promo)
            sent = await outbox.get_status(conn, code)
    finally:
        daemon.stop()
        assert await asyncio.wait_for(running, 10) == 0
    assert (deferred.status, deferred.error_code) == ("pending", 131049)
    assert sent.status == "sent", "the login code waited a day behind the deferred promotion"
