"""The daemon against the simulator and a real PostgreSQL: DESIGN.md's guarantees, one each."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.delivery.daemon import EXIT_PAUSED, Daemon
from outbox.simulator import Simulator
from tests.daemon_helpers import IMAGE, VIDEO, drain, enqueue, script, sent, short_callback, status


async def test_committed_rows_are_sent_and_rolled_back_rows_never(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    kept = await enqueue(engine, "923001234567", "committed")
    async with engine.connect() as conn:
        await outbox.enqueue(conn, "923001234567", "rolled back")
        await conn.rollback()
    assert await drain(settings) == 0
    assert [a["body"] for a in simulator.accepted] == ["committed"]
    delivery = await status(engine, kept)
    assert delivery.status == "sent"
    assert delivery.message_id == simulator.accepted[0]["wamid"]
    assert delivery.sent_at is not None


async def test_media_go_in_order_then_the_text(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    row = await enqueue(
        engine, "923001234567", "Your booking", media_urls={"videos": [VIDEO], "images": [IMAGE]}
    )
    await drain(settings)
    assert [(a["type"], short_callback(a["callback"])) for a in simulator.accepted] == [
        ("image", f"outbox:{row}:0"),
        ("video", f"outbox:{row}:1"),
        ("text", f"outbox:{row}:2"),
    ]
    delivery = await status(engine, row)
    assert list(delivery.part_ids) == [a["wamid"] for a in simulator.accepted]
    assert delivery.message_id == simulator.accepted[-1]["wamid"]


async def test_rows_to_one_recipient_go_in_insertion_order_even_across_retries(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    script(simulator, "923001234567", {"error": 131000, "times": 3})  # first row: one retry
    rows = [await enqueue(engine, "923001234567", f"m{i}") for i in range(4)]
    other = await enqueue(engine, "923007654321", "another recipient")
    await drain(settings)
    assert sent(simulator, lambda a: a["to"] == "923001234567") == [f"outbox:{r}:0" for r in rows]
    assert f"outbox:{other}:0" in sent(simulator)
    assert (await status(engine, rows[0])).attempts == 2


async def test_a_row_scheduled_for_later_does_not_hold_back_due_rows(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    from datetime import UTC, datetime, timedelta

    later = await enqueue(
        engine, "923001234567", "later", send_at=datetime.now(UTC) + timedelta(hours=1)
    )
    now = await enqueue(engine, "923001234567", "now")
    assert await drain(settings) == 0
    assert sent(simulator) == [f"outbox:{now}:0"]
    assert (await status(engine, later)).status == "pending"


async def test_a_retry_resumes_after_the_last_accepted_part(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    script(simulator, "923001234567", "ok", {"error": 131016, "times": 3})
    row = await enqueue(engine, "923001234567", "text", media_urls={"images": [IMAGE, IMAGE]})
    await drain(settings)
    assert sent(simulator) == [f"outbox:{row}:0", f"outbox:{row}:1", f"outbox:{row}:2"]
    delivery = await status(engine, row)
    assert (delivery.status, delivery.attempts) == ("sent", 2)
    assert None not in delivery.part_ids


async def test_permanent_error_fails_row_without_retry_and_others_go_on(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    script(simulator, "923001234567", {"error": 131026})
    doomed = await enqueue(engine, "923001234567", "undeliverable")
    next_one = await enqueue(engine, "923001234567", "next")
    await drain(settings)
    delivery = await status(engine, doomed)
    assert (delivery.status, delivery.attempts, delivery.error_code) == ("failed", 1, 131026)
    assert (delivery.last_error or "").startswith("(#131026) Message undeliverable")
    assert (await status(engine, next_one)).status == "sent"
    assert simulator.requests == 2


async def test_transient_errors_fail_the_row_after_max_attempts(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    script(simulator, "923001234567", {"error": 131000, "times": 0})
    row = await enqueue(engine, "923001234567", "never")
    await drain(replace(settings, max_attempts=2))
    delivery = await status(engine, row)
    assert (delivery.status, delivery.attempts) == ("failed", 2)
    assert "gave up after 2 attempts" in (delivery.last_error or "")
    assert simulator.requests == 2 * settings.quick_retries


async def test_throttling_waits_without_using_up_attempts(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    script(
        simulator, "923001234567", {"error": 130429, "http": 429, "retry_after": 0.1, "times": 3}
    )
    row = await enqueue(engine, "923001234567", "eventually")
    await drain(replace(settings, max_attempts=1))
    delivery = await status(engine, row)
    assert (delivery.status, delivery.attempts) == ("sent", 1)


async def test_a_bad_row_written_with_raw_sql_is_failed_with_its_reason(
    engine: AsyncEngine, settings: outbox.Settings, database_url: str
) -> None:
    conn = await asyncpg.connect(database_url)
    media = json.dumps([{"type": "audio", "url": "https://a.example/a.ogg", "caption": "no"}])
    row = await conn.fetchval(
        "INSERT INTO outbox_messages (recipient, media) VALUES ('923001234567', $1::jsonb) "
        "RETURNING id",
        media,
    )
    await conn.close()
    assert await drain(settings) == 0
    delivery = await status(engine, row)
    assert delivery.status == "failed"
    assert delivery.last_error == "invalid row: media_urls[0].caption: audio takes no caption"


async def test_an_expired_token_pauses_without_burning_attempts_then_recovers(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    rows = [await enqueue(engine, f"92300123456{i}", "hi") for i in range(3)]
    assert await drain(replace(settings, access_token="expired")) == EXIT_PAUSED
    for row in rows:
        delivery = await status(engine, row)
        assert (delivery.status, delivery.attempts) == ("pending", 0)
    assert simulator.accepted == []
    assert await drain(settings) == 0
    assert [(await status(engine, row)).status for row in rows] == ["sent"] * 3


async def test_a_paused_daemon_probes_and_resumes(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    script(simulator, "923001234567", {"error": 190, "times": 2})
    rows = [await enqueue(engine, "923001234567", f"m{i}") for i in range(2)]
    daemon = Daemon(settings)
    running = asyncio.create_task(daemon.run())
    for _ in range(100):
        if daemon.paused_reason:
            break
        await asyncio.sleep(0.05)
    assert (daemon.paused_reason or "").startswith("(#190)")
    assert daemon.health()["status"] == "paused"
    for _ in range(200):
        if len(simulator.accepted) == 2:
            break
        await asyncio.sleep(0.05)
    daemon.stop()
    assert await asyncio.wait_for(running, 10) == 0
    assert daemon.paused_reason is None
    assert [(await status(engine, r)).attempts for r in rows] == [1, 1]


async def test_stop_lets_in_flight_sends_finish(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    script(simulator, "923001234567", {"delay_ms": 500})
    row = await enqueue(engine, "923001234567", "slow")
    daemon = Daemon(settings)
    running = asyncio.create_task(daemon.run())
    await asyncio.sleep(0.3)
    daemon.stop()
    assert await asyncio.wait_for(running, 10) == 0
    assert (await status(engine, row)).status == "sent"


async def test_stop_releases_what_cannot_finish_in_time(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, database_url: str
) -> None:
    script(simulator, "923001234567", {"delay_ms": 3000})
    row = await enqueue(engine, "923001234567", "too slow")
    daemon = Daemon(replace(settings, shutdown_timeout=0.2))
    running = asyncio.create_task(daemon.run())
    await asyncio.sleep(0.3)
    daemon.stop()
    assert await asyncio.wait_for(running, 10) == 0
    conn = await asyncpg.connect(database_url)
    state = await conn.fetchrow(
        "SELECT status, attempts, locked_until, lease_token FROM outbox_messages WHERE id = $1",
        row,
    )
    await conn.close()
    assert dict(state) == {
        "status": "pending",
        "attempts": 0,
        "locked_until": None,
        "lease_token": None,
    }


async def test_two_daemons_never_send_a_part_twice_and_keep_order(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    recipients = [f"9230012345{i:02d}" for i in range(10)]
    rows: dict[str, list[int]] = {r: [] for r in recipients}
    for i in range(120):
        recipient = recipients[i % 10]
        rows[recipient].append(
            await enqueue(engine, recipient, f"m{i}", media_urls={"images": [IMAGE]})
        )
    first, second = replace(settings, concurrency=8), replace(settings, concurrency=8)
    assert await asyncio.wait_for(asyncio.gather(drain(first), drain(second)), 60) == [0, 0]
    callbacks = sent(simulator)
    assert len(callbacks) == len(set(callbacks)) == 240
    for recipient, ids in rows.items():
        order = sent(simulator, lambda a, r=recipient: a["to"] == r)
        assert order == [f"outbox:{i}:{p}" for i in ids for p in (0, 1)]


async def test_the_daemon_names_its_connections_in_pg_stat_activity(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    daemon = Daemon(settings)
    task = asyncio.create_task(daemon.run())
    try:

        async def named() -> bool:
            async with engine.connect() as conn:
                names = {
                    row[0]
                    for row in await conn.execute(
                        sa.text(
                            "SELECT application_name FROM pg_stat_activity "
                            "WHERE datname = current_database()"
                        )
                    )
                }
            return {"outbox-run", "outbox-run-listen"} <= names

        deadline = asyncio.get_running_loop().time() + 15
        while not await named():
            assert asyncio.get_running_loop().time() < deadline, "connections never named"
            await asyncio.sleep(0.1)
    finally:
        daemon.stop()
        await task


@asynccontextmanager
async def sending_slowly(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, database_url: str
) -> AsyncIterator[tuple[int, asyncpg.Connection]]:
    """A daemon running, its request for one row out for 1.5 s: the row's id and a connection
    to change the row under it. The daemon stops when the test is done with it."""
    script(simulator, "923001234567", {"delay_ms": 1500})
    row = await enqueue(engine, "923001234567", "slow")
    daemon = Daemon(settings)
    running = asyncio.create_task(daemon.run())
    conn = await asyncpg.connect(database_url)
    try:
        for _ in range(200):
            if await conn.fetchval("SELECT status FROM outbox_messages WHERE id = $1", row) == (
                "sending"
            ):
                break
            await asyncio.sleep(0.02)
        yield row, conn
    finally:
        await conn.close()
        daemon.stop()
        await asyncio.wait_for(running, 10)


async def until_sent(engine: AsyncEngine, *rows: int) -> None:
    for _ in range(300):
        if all([(await status(engine, row)).status == "sent" for row in rows]):
            return
        await asyncio.sleep(0.02)


async def test_a_claim_that_runs_late_takes_none_of_the_rows_its_daemon_is_sending(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, database_url: str
) -> None:
    """A claim statement held up on its way (a stalled network, a frozen server) runs when the
    database's clock says the leases of rows this daemon is still sending ran out long ago."""
    async with sending_slowly(engine, settings, simulator, database_url) as (
        row,
        conn,
    ):
        # What a late claim sees: the lease, and the takeover grace after it, long over.
        await conn.execute(
            "UPDATE outbox_messages SET locked_until = now() - interval '1 hour' WHERE id = $1",
            row,
        )
        other = await enqueue(engine, "923007654321", "claimed meanwhile")
        await until_sent(engine, row, other)
        attempts = await conn.fetchval("SELECT attempts FROM outbox_messages WHERE id = $1", row)
    assert sent(simulator, lambda a: a["to"] == "923001234567") == [f"outbox:{row}:0"]
    assert attempts == 1


async def test_a_row_taken_over_and_given_back_is_not_claimed_while_its_daemon_sends_it(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, database_url: str
) -> None:
    """Another daemon took the row over (its lease had lapsed) and gave it back while this one's
    request for it was still out: this daemon claims it only once that request is over."""
    async with sending_slowly(engine, settings, simulator, database_url) as (
        row,
        conn,
    ):
        # As the other daemon left it: taken over (the mark stays until a part is recorded),
        # its attempt refused, given back.
        await conn.execute(
            "UPDATE outbox_messages SET status = 'pending', taken_over = true, "
            "lease_token = NULL, locked_until = NULL, available_at = now() WHERE id = $1",
            row,
        )
        other = await enqueue(engine, "923007654321", "claimed meanwhile")
        await until_sent(engine, other)
        during = await conn.fetchval("SELECT status FROM outbox_messages WHERE id = $1", row)
    assert (await status(engine, other)).status == "sent"
    assert during == "pending"
