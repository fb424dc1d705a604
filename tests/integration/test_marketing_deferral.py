"""Meta's per-user marketing limit in the daemon (issue 16, point 4): a 131049 defers the row
by a day or more instead of failing it, bounded by its deadline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.simulator import Simulator
from tests.daemon_helpers import run_until_ruled, script

CUSTOMER = "923001234567"
PROMO = outbox.Template("spring_sale", "en_US", category="marketing")


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
