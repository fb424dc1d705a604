"""Quiet hours in the daemon (issue 16, point 5), against the simulator and a real PostgreSQL: a
row claimed while it is night where its recipient lives makes no request."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.policy.quiet import QuietHours, next_opening
from outbox.simulator import Simulator
from tests.daemon_helpers import enqueue, run_until_ruled

CUSTOMER = "5511987654321"  # São Paulo
SAO_PAULO = ZoneInfo("America/Sao_Paulo")


def quiet_now() -> QuietHours:
    """Quiet hours from two hours ago to two hours from now, São Paulo time."""
    now = datetime.now(SAO_PAULO)
    start, end = now - timedelta(hours=2), now + timedelta(hours=2)
    return QuietHours(time(start.hour, start.minute), time(end.hour, end.minute))


async def test_a_row_inside_quiet_hours_makes_no_request_and_is_due_at_the_opening(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    hours = quiet_now()
    row = await enqueue(engine, CUSTOMER, "your table is ready")
    found = await run_until_ruled(replace(settings, quiet_hours=hours), engine, row)
    opening = next_opening(hours, (SAO_PAULO,), datetime.now(UTC))
    assert opening is not None
    assert simulator.requests == 0
    assert (found.status, found.attempts) == ("pending", 0)
    assert abs((found.available_at - opening).total_seconds()) < 5  # type: ignore[operator]
    local = opening.astimezone(SAO_PAULO)
    assert found.last_error == f"quiet hours until {local:%Y-%m-%d %H:%M} America/Sao_Paulo"


async def test_a_row_whose_deadline_comes_before_the_opening_fails_expired(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    soon = datetime.now(UTC) + timedelta(minutes=30)
    row = await enqueue(engine, CUSTOMER, "your table is ready", expires_at=soon)
    found = await run_until_ruled(replace(settings, quiet_hours=quiet_now()), engine, row)
    assert simulator.requests == 0
    assert found.status == "failed"
    assert str(found.last_error).startswith("expired: its deadline comes before quiet hours end")
