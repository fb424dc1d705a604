"""Quiet hours in the daemon (issue 16, point 5), against the simulator and a real PostgreSQL: a
row claimed while it is night where its recipient lives makes no request."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.delivery.daemon import Daemon
from outbox.policy.quiet import QuietHours, next_opening
from outbox.simulator import Simulator
from tests.daemon_helpers import enqueue

CUSTOMER = "5511987654321"  # São Paulo
SAO_PAULO = ZoneInfo("America/Sao_Paulo")


def quiet_now() -> QuietHours:
    """Quiet hours from two hours ago to two hours from now, São Paulo time."""
    now = datetime.now(SAO_PAULO)
    start, end = now - timedelta(hours=2), now + timedelta(hours=2)
    return QuietHours(time(start.hour, start.minute), time(end.hour, end.minute))


async def rescheduled(engine: AsyncEngine, row: int) -> sa.Row[tuple[object, ...]]:
    """The row once the daemon has ruled on it (waiting, or failed)."""
    async with engine.connect() as conn:
        for _ in range(200):
            found = (
                await conn.execute(
                    sa.text(
                        "SELECT status, attempts, available_at, last_error FROM outbox_messages"
                        " WHERE id = :id"
                    ),
                    {"id": row},
                )
            ).one()
            if found.last_error is not None and found.status != "sending":
                return found
            await conn.rollback()
            await asyncio.sleep(0.05)
    raise AssertionError("the daemon never ruled on the row")


async def run_until_ruled(
    settings: outbox.Settings, engine: AsyncEngine, row: int
) -> sa.Row[tuple[object, ...]]:
    daemon = Daemon(settings)
    running = asyncio.create_task(daemon.run())
    try:
        return await rescheduled(engine, row)
    finally:
        daemon.stop()
        assert await asyncio.wait_for(running, 10) == 0


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
