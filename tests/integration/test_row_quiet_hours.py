"""A row's own quiet hours and time zone (issue 16, point 5): `enqueue(..., quiet_hours=...,
timezone=...)` and `outbox enqueue --quiet-hours --timezone` override the daemon's
--quiet-hours and the number's zones. The daemon's wall clock is injected: no real waiting."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.delivery.daemon import Daemon
from outbox.policy.quiet import QuietHours
from outbox.simulator import Simulator
from tests.daemon_helpers import cli_path, daemon_env, enqueue

CUSTOMER = "5511987654321"  # São Paulo
SAO_PAULO = ZoneInfo("America/Sao_Paulo")
MADRID = ZoneInfo("Europe/Madrid")


def at(zone: ZoneInfo, *args: int) -> Callable[[], datetime]:
    """A clock stopped at this local time."""
    instant = datetime(*args, tzinfo=zone).astimezone(UTC)  # type: ignore[misc]
    return lambda: instant


async def row_of(engine: AsyncEngine, row: int) -> sa.Row[Any]:
    async with engine.connect() as conn:
        return (
            await conn.execute(
                sa.text(
                    "SELECT status, attempts, last_error, available_at - now() AS wait,"
                    " quiet_hours, timezone FROM outbox_messages WHERE id = :id"
                ),
                {"id": row},
            )
        ).one()


async def run_at(
    settings: outbox.Settings,
    engine: AsyncEngine,
    row: int,
    clock: Callable[[], datetime],
    simulator: Simulator,
) -> sa.Row[Any]:
    """Make the row due and run a daemon whose clock says `clock()` until it has ruled on it."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE outbox_messages SET available_at = now(), last_error = NULL WHERE id = :id"
            ),
            {"id": row},
        )
    before = simulator.requests
    daemon = Daemon(settings)
    daemon.clock = clock
    running = asyncio.create_task(daemon.run())
    try:
        for _ in range(200):
            found = await row_of(engine, row)
            sent = found.status == "sent" or simulator.requests > before
            if found.status != "sending" and (found.last_error is not None or sent):
                return found
            await asyncio.sleep(0.05)
        raise AssertionError("the daemon never ruled on the row")
    finally:
        daemon.stop()
        assert await asyncio.wait_for(running, 10) == 0


async def test_a_sao_paulo_row_enqueued_at_2330_goes_between_0900_and_0901_local(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    row = await enqueue(engine, CUSTOMER, "your table is ready", quiet_hours="21:00-09:00")
    found = await run_at(settings, engine, row, at(SAO_PAULO, 2026, 12, 6, 23, 30), simulator)
    assert (simulator.requests, found.status, found.attempts) == (0, "pending", 0)
    assert found.last_error == "quiet hours until 2026-12-07 09:00 America/Sao_Paulo"
    assert abs(found.wait - timedelta(hours=9, minutes=30)) < timedelta(seconds=5)
    found = await run_at(settings, engine, row, at(SAO_PAULO, 2026, 12, 7, 8, 59, 30), simulator)
    assert simulator.requests == 0
    assert abs(found.wait - timedelta(seconds=30)) < timedelta(seconds=5)
    found = await run_at(settings, engine, row, at(SAO_PAULO, 2026, 12, 7, 9, 0, 30), simulator)
    assert simulator.requests == 1
    assert found.status == "sent"


async def test_a_rows_own_quiet_hours_override_the_daemons(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    night = replace(settings, quiet_hours=QuietHours(time(21, 0), time(9, 0)))
    code = await enqueue(engine, CUSTOMER, "your code is 1234", quiet_hours="none")
    found = await run_at(night, engine, code, at(SAO_PAULO, 2026, 12, 6, 23, 30), simulator)
    assert (simulator.requests, found.status) == (1, "sent")
    lunch = await enqueue(engine, CUSTOMER, "see you", quiet_hours="12:00-14:00")
    found = await run_at(night, engine, lunch, at(SAO_PAULO, 2026, 12, 7, 13, 0), simulator)
    assert found.last_error == "quiet hours until 2026-12-07 14:00 America/Sao_Paulo"


async def test_a_rows_time_zone_replaces_the_numbers(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    row = await enqueue(
        engine, CUSTOMER, "hola", quiet_hours="21:00-09:00", timezone="Europe/Madrid"
    )
    # 18:00 in São Paulo is 22:00 in Madrid (winter): quiet there until 09:00.
    found = await run_at(settings, engine, row, at(SAO_PAULO, 2026, 12, 6, 18, 0), simulator)
    assert simulator.requests == 0
    assert found.last_error == "quiet hours until 2026-12-07 09:00 Europe/Madrid"
    assert abs(found.wait - timedelta(hours=11)) < timedelta(seconds=5)


async def test_the_opening_follows_the_rows_zone_across_a_daylight_saving_change(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    # Madrid springs forward on 2026-03-29 at 02:00: from 23:30 to 09:00 is 8.5 hours, not 9.5.
    row = await enqueue(
        engine, CUSTOMER, "hola", quiet_hours="21:00-09:00", timezone="Europe/Madrid"
    )
    found = await run_at(settings, engine, row, at(MADRID, 2026, 3, 28, 23, 30), simulator)
    assert found.last_error == "quiet hours until 2026-03-29 09:00 Europe/Madrid"
    assert abs(found.wait - timedelta(hours=8, minutes=30)) < timedelta(seconds=5)


async def test_expires_at_still_wins_over_a_rows_quiet_hours(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    row = await enqueue(engine, CUSTOMER, "hi", quiet_hours="21:00-09:00", expires_at=soon)
    found = await run_at(settings, engine, row, at(SAO_PAULO, 2026, 12, 6, 23, 30), simulator)
    assert simulator.requests == 0
    assert found.status == "failed"
    assert found.last_error.startswith("expired: its deadline comes before quiet hours end")


@pytest.mark.parametrize(
    ("options", "field", "rule"),
    [
        ({"quiet_hours": "9pm-9am"}, "quiet_hours", "quiet_hours"),
        ({"quiet_hours": "09:00-09:00"}, "quiet_hours", "quiet_hours"),
        ({"quiet_hours": 21}, "quiet_hours", "type"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone", "timezone"),
        ({"timezone": "'; DROP TABLE x"}, "timezone", "timezone"),
    ],
)
async def test_bad_quiet_hours_or_time_zone_are_refused_naming_the_field(
    engine: AsyncEngine, options: dict[str, Any], field: str, rule: str
) -> None:
    with pytest.raises(outbox.InvalidMessage) as raised:
        await enqueue(engine, CUSTOMER, "hi", **options)
    assert (raised.value.field, raised.value.rule) == (field, rule)
    async with engine.connect() as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM outbox_messages")) == 0


async def test_a_plain_sql_row_with_an_unknown_zone_fails_with_no_request(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    async with engine.begin() as conn:
        row = await conn.scalar(
            sa.text(
                "INSERT INTO outbox_messages (recipient, message, timezone)"
                " VALUES (:to, 'hi', 'Mars/Olympus_Mons') RETURNING id"
            ),
            {"to": CUSTOMER},
        )
    found = await run_at(settings, engine, int(row), at(SAO_PAULO, 2026, 12, 6, 12, 0), simulator)
    assert simulator.requests == 0
    assert found.status == "failed"
    assert found.last_error.startswith("invalid row: timezone:")


async def test_outbox_enqueue_takes_quiet_hours_and_a_time_zone(
    engine: AsyncEngine, database_url: str, simulator: Simulator
) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [
            str(cli_path()),
            "enqueue",
            CUSTOMER,
            "hola",
            "--quiet-hours",
            "22:00-08:00",
            "--timezone",
            "Europe/Madrid",
        ],
        env=daemon_env(database_url, simulator),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    found = await row_of(engine, int(done.stdout))
    assert (found.quiet_hours, found.timezone) == ("22:00-08:00", "Europe/Madrid")
