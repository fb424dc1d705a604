"""Production faults the guarantees must survive: an API outage, poison answers, unbounded
Retry-After, answers in doubt, a database gone for longer than the lease, idle loops, expiry.

Each test reproduces one defect found by attacking the daemon as production would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox import cli, serve
from outbox.delivery import health as gate_module
from outbox.delivery.daemon import Daemon
from outbox.described import DescribedConnection
from outbox.retry import MAY_HAVE_BEEN_ACCEPTED
from outbox.simulator import Simulator, Step
from outbox.store.messages import retry_failed
from tests.daemon_helpers import (
    IMAGE,
    PHONE,
    cli_path,
    daemon_env,
    drain,
    enqueue,
    script,
    sent,
    short_callback,
    status,
)
from tests.proxy import PostgresProxy

pytestmark = pytest.mark.timeout(90)
RECIPIENTS = [f"9230012345{i:02d}" for i in range(40)]


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def statuses(database_url: str) -> Counter[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT status, count(*) FROM outbox_messages GROUP BY status")
    finally:
        await conn.close()
    return Counter({row[0]: row[1] for row in rows})


async def _fetchval(database_url: str, statement: str, *args: object) -> Any:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(statement, *args)
    finally:
        await conn.close()


async def fetch_row(database_url: str, row: int) -> asyncpg.Record:
    conn = await asyncpg.connect(database_url)
    try:
        record = await conn.fetchrow(
            "SELECT *, extract(epoch FROM available_at - now()) AS due_in "
            "FROM outbox_messages WHERE id = $1",
            row,
        )
    finally:
        await conn.close()
    assert record is not None
    return record


@pytest.fixture
async def running() -> AsyncIterator[Callable[[outbox.Settings], Daemon]]:
    """Start daemons in the background; each is stopped (and awaited) after the test."""
    started: list[tuple[Daemon, asyncio.Task[int]]] = []

    def start(settings: outbox.Settings) -> Daemon:
        daemon = Daemon(settings)
        started.append((daemon, asyncio.create_task(daemon.run())))
        return daemon

    yield start
    for daemon, _ in started:
        daemon.stop()
    for _, task in started:
        await asyncio.wait_for(task, 60)


# --- 1. An outage of the whole API is the sender's problem, not the rows' -------------------


async def _in_an_outage(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    running: Callable[[outbox.Settings], Daemon],
    *,
    max_attempts: int = 3,
) -> tuple[Daemon, list[int]]:
    """A daemon sending rows to every recipient while every request fails, once it has declared
    an outage."""
    simulator.fail_rate = 1.0
    rows = [await enqueue(engine, r, "booking confirmed") for r in RECIPIENTS]
    daemon = running(replace(settings, max_attempts=max_attempts))
    await eventually(lambda: _async(daemon.health()["status"] == "outage"), 10, "an outage")
    return daemon, rows


async def _recovered(simulator: Simulator, database_url: str, rows: list[int]) -> None:
    """The API answers again; every row is sent."""
    simulator.fail_rate = 0.0
    await eventually(
        lambda: _counted(database_url, "sent", len(rows)), 40, "every row sent after recovery"
    )


async def test_an_api_outage_stops_sending_without_failing_rows_then_resumes(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    database_url: str,
    running: Callable[[outbox.Settings], Daemon],
) -> None:
    daemon, rows = await _in_an_outage(engine, settings, simulator, running)
    assert "131000" in (daemon.health()["reason"] or "")
    await asyncio.sleep(3)
    requests_during_outage = simulator.requests
    await asyncio.sleep(3)
    assert simulator.requests - requests_during_outage <= 3 * settings.quick_retries, (
        "an outage is probed with one request at a time, not hammered"
    )
    assert (await statuses(database_url))["failed"] == 0
    await _recovered(simulator, database_url, rows)
    assert daemon.health()["status"] == "ok"


async def test_an_api_outage_uses_no_attempts_even_of_the_rows_that_failed_before_it_was_clear(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    database_url: str,
    running: Callable[[outbox.Settings], Daemon],
) -> None:
    _, rows = await _in_an_outage(engine, settings, simulator, running)
    await _recovered(simulator, database_url, rows)
    # Each row's one attempt is the send that went through: the failures that showed the
    # outage, before it was declared, were given back.
    assert [(await status(engine, row)).attempts for row in rows] == [1] * len(rows)


async def test_an_api_outage_fails_no_row_even_of_those_on_their_last_attempt(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    database_url: str,
    running: Callable[[outbox.Settings], Daemon],
) -> None:
    no_quick_retries = replace(settings, quick_retries=1)
    _, rows = await _in_an_outage(engine, no_quick_retries, simulator, running, max_attempts=1)
    # Rows its first failures failed are pending again once the outage is known (a write away).
    await eventually(lambda: _counted(database_url, "failed", 0), 10, "no row failed")
    await _recovered(simulator, database_url, rows)
    assert [(await status(engine, row)).attempts for row in rows] == [1] * len(rows)


async def test_an_outage_leaves_failed_a_row_that_failed_since_for_its_own_reason(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    database_url: str,
    running: Callable[[outbox.Settings], Daemon],
) -> None:
    # Its last attempt failed with no answer, alone (no outage); retried, it then failed because
    # the customer opted out. A later outage's onset must not take that failure for its own.
    simulator.fail_rate = 1.0
    promo = outbox.Template("spring_sale", "en_US", category="marketing")
    row = await enqueue(engine, RECIPIENTS[0], None, template=promo)
    daemon = running(replace(settings, max_attempts=1, quick_retries=1))
    await eventually(lambda: _status_is(database_url, row, "failed"), 10, "its last attempt")
    async with engine.begin() as conn:
        await outbox.add_optout(conn, RECIPIENTS[0], sender=PHONE)
        assert await retry_failed(conn, row) is None
    await eventually(lambda: _failed_with(database_url, row, "opted_out"), 10, "opted_out")
    opted_out = await fetch_row(database_url, row)
    others = [await enqueue(engine, r, "booking confirmed") for r in RECIPIENTS[1:10]]
    await eventually(lambda: _async(daemon.health()["status"] == "outage"), 10, "an outage")
    # One statement gives back the onset's rows: once none of them is failed, it has run.
    await eventually(lambda: _none_failed(database_url, others), 10, "the onset undone")
    record = await fetch_row(database_url, row)
    assert (record["status"], record["updated_at"]) == ("failed", opted_out["updated_at"])


async def test_a_drain_waits_through_an_api_outage(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    simulator.fail_rate = 1.0
    rows = [await enqueue(engine, r, "hello") for r in RECIPIENTS[:10]]
    draining = asyncio.create_task(Daemon(replace(settings, max_attempts=2), drain=True).run())
    await asyncio.sleep(4)
    assert not draining.done(), "an outage is not a reason to give up"
    simulator.fail_rate = 0.0
    assert await asyncio.wait_for(draining, 45) == 0
    assert [(await status(engine, row)).status for row in rows] == ["sent"] * 10


async def test_a_row_failing_alone_while_others_succeed_uses_its_attempts(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    script(simulator, RECIPIENTS[0], {"error": 131000, "times": 0})
    doomed = await enqueue(engine, RECIPIENTS[0], "never")
    others = [await enqueue(engine, r, "fine") for r in RECIPIENTS[1:20]]
    await drain(replace(settings, max_attempts=3))
    delivery = await status(engine, doomed)
    assert (delivery.status, delivery.attempts) == ("failed", 3)
    assert [(await status(engine, row)).status for row in others] == ["sent"] * 19


# --- 3. Poison answers are the row's problem ------------------------------------------------


async def test_an_error_body_with_a_nul_byte_fails_the_row_with_a_clean_reason(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    poison = "<html>\x00bad gateway\x00</html>"
    tries = 2 * settings.quick_retries  # two attempts, each with its quick retries
    script(simulator, RECIPIENTS[0], {"raw": poison, "http": 502, "times": tries})
    row = await enqueue(engine, RECIPIENTS[0], "poisoned")
    next_row = await enqueue(engine, RECIPIENTS[0], "next in line")
    assert await drain(replace(settings, max_attempts=2)) == 0
    delivery = await status(engine, row)
    assert delivery.status == "failed"
    assert "\x00" not in (delivery.last_error or "x\x00")
    assert "bad gateway" in (delivery.last_error or "")
    assert (await status(engine, next_row)).status == "sent"


async def test_a_wamid_with_a_nul_is_in_doubt_and_blocks_no_other_row(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    answer = json.dumps({"messages": [{"id": "wamid.\u0000bad"}]})
    script(simulator, RECIPIENTS[0], {"raw": answer, "http": 200, "times": 0})
    poisoned = await enqueue(engine, RECIPIENTS[0], "poisoned")
    others = [await enqueue(engine, r, "fine") for r in RECIPIENTS[1:40]]
    assert await drain(settings) == 0
    delivery = await status(engine, poisoned)
    assert (delivery.status, delivery.in_doubt) == ("failed", 3)
    assert (delivery.last_error or "").startswith("in doubt")
    assert [(await status(engine, row)).status for row in others] == ["sent"] * 39


async def test_a_retry_after_of_infinity_is_ignored_not_fatal(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    script(simulator, RECIPIENTS[0], {"error": 131000, "retry_after": "inf"})
    row = await enqueue(engine, RECIPIENTS[0], "eventually")
    assert await drain(replace(settings, quick_retries=1)) == 0
    assert (await status(engine, row)).status == "sent"


# --- 4. Retry-After has a ceiling -----------------------------------------------------------


async def test_a_day_long_retry_after_holds_the_sender_a_minute_at_most(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    database_url: str,
    running: Callable[[outbox.Settings], Daemon],
) -> None:
    script(simulator, RECIPIENTS[0], {"error": 130429, "retry_after": 86400})
    row = await enqueue(engine, RECIPIENTS[0], "throttled")
    daemon = running(settings)
    await eventually(lambda: _async(daemon.health()["status"] == "held"), 10, "a hold")
    assert 0 < daemon.health()["held_for_seconds"] <= 60
    await eventually(lambda: _status_is(database_url, row, "pending"), 10, "the reschedule")
    assert (await fetch_row(database_url, row))["due_in"] <= 60


async def test_a_huge_retry_after_on_a_row_is_capped_at_an_hour(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, database_url: str
) -> None:
    script(simulator, RECIPIENTS[0], {"error": 131000, "retry_after": 1_000_000_000})
    row = await enqueue(engine, RECIPIENTS[0], "later")
    daemon = Daemon(replace(settings, quick_retries=1))
    task = asyncio.create_task(daemon.run())
    await eventually(lambda: _status_is(database_url, row, "pending", tried=True), 10, "retry")
    daemon.stop()
    await asyncio.wait_for(task, 10)
    assert (await fetch_row(database_url, row))["due_in"] <= 3600


async def test_the_spam_rate_limit_holds_its_sender_whatever_a_probe_would_say(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    running: Callable[[outbox.Settings], Daemon],
) -> None:
    # Issue 15.12: 131048 paused the sender; the next probe to another recipient succeeded,
    # lifted the pause, and the backlog ran into the limit again.
    script(simulator, RECIPIENTS[0], {"error": 131048})
    rows = [await enqueue(engine, recipient, "offer") for recipient in RECIPIENTS[:3]]
    daemon = running(replace(settings, concurrency=1))  # one row in flight: the others wait
    await eventually(lambda: _async(daemon.health()["status"] == "held"), 10, "a hold")
    await asyncio.sleep(10 * settings.pause_probe)  # a pause would have been probed by now
    assert simulator.requests == 1
    assert "131048" in (daemon.health()["reason"] or "")
    assert [(await status(engine, row)).status for row in rows] == ["pending"] * 3
    assert (await status(engine, rows[0])).attempts == 0


# --- 5. Answers in doubt are never resent quickly, and only a few times --------------------


async def test_a_200_without_an_id_is_sent_at_most_three_times(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    script(simulator, RECIPIENTS[0], {"raw": '{"messaging_product": "whatsapp"}', "times": 0})
    row = await enqueue(engine, RECIPIENTS[0], "maybe")
    assert await drain(settings) == 0
    delivery = await status(engine, row)
    assert (delivery.status, delivery.in_doubt, delivery.attempts) == ("failed", 3, 0)
    assert simulator.requests == 3


async def test_a_timed_out_send_is_not_retried_quickly(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    script(simulator, RECIPIENTS[0], {"delay_ms": 1500, "times": 0})
    row = await enqueue(engine, RECIPIENTS[0], "slow")
    assert await drain(replace(settings, request_timeout=1.0, max_attempts=3)) == 0
    await asyncio.sleep(0.6)  # let the simulator accept the last slow request
    delivery = await status(engine, row)
    assert (delivery.status, delivery.in_doubt) == ("failed", 3)
    assert len(sent(simulator)) == 3


# --- 2. A database gone for longer than the lease never makes the daemon resend ------------


async def test_a_database_outage_longer_than_the_lease_resends_no_accepted_part(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, database_url: str
) -> None:
    proxy = PostgresProxy(database_url)
    proxied = await proxy.start()
    rows = [
        await enqueue(engine, r, "text", media_urls={"images": [IMAGE, IMAGE]})
        for r in RECIPIENTS[:5]
    ]
    for recipient in RECIPIENTS[:5]:
        script(simulator, recipient, {"delay_ms": 1500}, "ok", {"delay_ms": 300})
    daemon = Daemon(replace(settings, database_url=proxied, lease_seconds=3, poll_interval=0.5))
    task = asyncio.create_task(daemon.run())
    try:
        await eventually(lambda: _async(simulator.requests >= 5), 10, "the first sends")
        proxy.cut()  # the answers arrive while the database is away
        await asyncio.sleep(3 * 3)  # well past the lease
        proxy.restore()
        daemon.wake()  # claim at once, before any lease is extended again
        await eventually(lambda: _counted(database_url, "sent", 5), 40, "all rows sent")
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 30)
        await proxy.close()
    counts = Counter(sent(simulator))
    assert sorted(counts) == sorted(f"outbox:{row}:{part}" for row in rows for part in range(3))
    assert max(counts.values()) == 1, f"resent: {[c for c, n in counts.items() if n > 1]}"
    for row in rows:
        assert sent(
            simulator, lambda a, row=row: short_callback(a["callback"]).startswith(f"outbox:{row}:")
        ) == [f"outbox:{row}:{part}" for part in range(3)]


async def test_answers_arriving_while_the_server_ends_idle_connections_are_all_recorded(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, database_url: str
) -> None:
    """A server that shuts down sends each idle connection a FATAL error and only then closes
    it. A statement started in between met asyncpg's "another operation is in progress", which
    failed the row whose accepted part it was recording."""
    proxy = PostgresProxy(database_url)
    proxy.close_delay = 3.0
    proxied = await proxy.start()
    rows = [await enqueue(engine, r, "text") for r in RECIPIENTS[:5]]
    for recipient in RECIPIENTS[:5]:
        script(simulator, recipient, {"delay_ms": 1500})
    daemon = Daemon(replace(settings, database_url=proxied, poll_interval=0.5))
    task = asyncio.create_task(daemon.run())
    try:
        await eventually(lambda: _async(simulator.requests >= 5), 10, "the first sends")
        conn = await asyncpg.connect(database_url)
        try:
            ended = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
        assert ended > 0
        await eventually(lambda: _counted(database_url, "sent", 5), 30, "all rows sent")
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 30)
        await proxy.close()
    assert sorted(sent(simulator)) == sorted(f"outbox:{row}:0" for row in rows)


async def test_a_stop_while_the_database_is_away_is_bounded(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, database_url: str
) -> None:
    proxy = PostgresProxy(database_url)
    proxied = await proxy.start()
    for recipient in RECIPIENTS[:5]:
        script(simulator, recipient, {"delay_ms": 1000})
        await enqueue(engine, recipient, "text", media_urls={"images": [IMAGE]})
    daemon = Daemon(replace(settings, database_url=proxied, shutdown_timeout=2))
    task = asyncio.create_task(daemon.run())
    try:
        await eventually(lambda: _async(simulator.requests >= 5), 10, "the first sends")
        proxy.cut()
        await asyncio.sleep(1.5)
        began = time.monotonic()
        daemon.stop()
        await asyncio.wait_for(task, 30)
        assert time.monotonic() - began < 20
    finally:
        await proxy.close()


async def test_a_daemon_started_while_postgres_shuts_down_waits_for_it(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Issue 15.9: `outbox run` exited 1 with "PostgreSQL refused it: the database system is
    # shutting down" when it started during a restart.
    row = await enqueue(engine, RECIPIENTS[0], "hello")
    connect = asyncpg.connect
    refusals = [0]

    async def restarting(*args: Any, **kwargs: Any) -> asyncpg.Connection:
        if refusals[0] < 2:
            refusals[0] += 1
            raise asyncpg.exceptions.CannotConnectNowError("the database system is shutting down")
        return await connect(*args, **kwargs)

    # The daemon's first two connections (its pool's or its listener's) are refused.
    monkeypatch.setattr(asyncpg, "connect", restarting)
    monkeypatch.setattr(asyncpg.connection, "connect", restarting)
    assert await drain(settings) == 0
    assert refusals[0] == 2
    assert (await status(engine, row)).status == "sent"


async def test_a_database_cut_before_any_request_gives_the_row_back_unmarked(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, database_url: str
) -> None:
    # Rows whose rules were being read when the database went away made no request: they must
    # not come back as taken over (which would fail them instead of sending their fallback).
    fallback = outbox.Template("parcel_update", "en_US", category="utility")
    async with engine.begin() as conn:  # someone wrote once: the sender's windows are known
        await conn.execute(
            sa.text(
                "INSERT INTO outbox_inbound (wamid, phone_number_id, customer, type, at)"
                " VALUES ('wamid.in.1', :phone, :customer, 'text', now())"
            ),
            {"phone": PHONE, "customer": RECIPIENTS[39]},
        )
    rows = [await enqueue(engine, r, "hello", fallback=fallback) for r in RECIPIENTS[:5]]
    proxy = PostgresProxy(database_url)
    proxied = await proxy.start()
    blocker = await asyncpg.connect(database_url)
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("LOCK TABLE outbox_inbound IN ACCESS EXCLUSIVE MODE")
    options = replace(settings, database_url=proxied, lease_seconds=2, poll_interval=0.5)
    draining = asyncio.create_task(Daemon(options, drain=True).run())
    try:
        await eventually(lambda: _counted(database_url, "sending", 5), 10, "the rows claimed")
        await asyncio.sleep(0.5)  # their rules wait for the lock
        proxy.cut()
        await tx.rollback()
        await asyncio.sleep(1.0)
        proxy.restore()
        assert await asyncio.wait_for(draining, 60) == 0
    finally:
        await blocker.close()
        await proxy.close()
    assert [(await fetch_row(database_url, r))["status"] for r in rows] == ["sent"] * 5
    assert [a["type"] for a in simulator.accepted] == ["template"] * 5


# --- 8. Idle loops do not burn the database --------------------------------------------------


async def test_a_row_held_behind_a_waiting_retry_does_not_make_the_loop_spin(
    settings: outbox.Settings,
    database_url: str,
    running: Callable[[outbox.Settings], Daemon],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    statements = await _idle_statements(
        settings,
        database_url,
        running,
        monkeypatch,
        "INSERT INTO outbox_messages (recipient, message, available_at, last_error) VALUES "
        "($1, 'waits an hour', now() + interval '1 hour', 'transient'), "
        "($1, 'held', now(), NULL)",
    )
    assert 0 < statements <= 8, f"{statements} statements in 3 idle seconds"


async def test_nothing_is_claimed_while_the_sender_is_held(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    database_url: str,
    running: Callable[[outbox.Settings], Daemon],
) -> None:
    script(simulator, RECIPIENTS[0], {"error": 4, "retry_after": 30})
    await enqueue(engine, RECIPIENTS[0], "first")
    daemon = running(replace(settings, concurrency=1))
    await eventually(lambda: _async(daemon.health()["status"] == "held"), 10, "a hold")
    for recipient in RECIPIENTS[1:]:
        await enqueue(engine, recipient, "backlog")
    await asyncio.sleep(2)
    conn = await asyncpg.connect(database_url)
    try:
        claimed = await conn.fetchval("SELECT count(*) FROM outbox_messages WHERE attempts > 0")
    finally:
        await conn.close()
    assert claimed == 0
    assert simulator.requests == 1


# --- 10. Stale messages expire instead of going out late ------------------------------------


async def test_a_row_past_its_expiry_fails_as_expired_and_is_never_sent(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    stale = await enqueue(engine, RECIPIENTS[0], "too late", expires_at=past)
    fresh = await enqueue(
        engine, RECIPIENTS[1], "in time", expires_at=datetime.now(UTC) + timedelta(hours=1)
    )
    assert await drain(settings) == 0
    delivery = await status(engine, stale)
    assert (delivery.status, (delivery.last_error or "")[:7]) == ("failed", "expired")
    assert (await status(engine, fresh)).status == "sent"
    assert sent(simulator) == [f"outbox:{fresh}:0"]


async def test_no_request_reaches_the_api_after_its_rows_deadline_at_a_low_rate(
    engine: AsyncEngine, simulator: Simulator, database_url: str
) -> None:
    # Issue 15.10: the deadline was checked before the wait for a rate slot; at --rate 2, 9 of
    # 16 rows went out up to 4 s late.
    conn = await asyncpg.connect(database_url)
    try:
        deadlines = dict(
            await conn.fetch(
                "INSERT INTO outbox_messages (recipient, message, expires_at) "
                "SELECT '92300' || lpad(i::text, 7, '0'), 'soon', now() + interval '3 seconds' "
                "FROM generate_series(1, 16) AS i RETURNING id, expires_at"
            )
        )
    finally:
        await conn.close()
    process = await asyncio.create_subprocess_exec(
        str(cli_path()),
        *("run", "--drain", "--rate", "2", "--poll-interval", "0.2"),
        env=daemon_env(database_url, simulator),
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(process.wait(), 60) == 0
    late = [
        send["callback"]
        for send in simulator.accepted
        if send["received"] > deadlines[int(send["callback"].split(":")[-2])].timestamp()
    ]
    assert late == []
    assert simulator.requests == len(simulator.accepted)
    outcomes = await statuses(database_url)
    assert outcomes["sent"] + outcomes["failed"] == 16
    assert outcomes["failed"] > 0  # --rate 2 cannot send 16 rows in 3 s


async def test_max_age_expires_rows_without_their_own_deadline(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, database_url: str
) -> None:
    old = await _fetchval(
        database_url,
        "INSERT INTO outbox_messages (recipient, message, created_at) "
        "VALUES ($1, 'old', now() - interval '3 hours') RETURNING id",
        RECIPIENTS[0],
    )
    young = await enqueue(engine, RECIPIENTS[1], "young")
    assert await drain(replace(settings, max_age=7200)) == 0
    assert (await status(engine, old)).status == "failed"
    assert (await status(engine, young)).status == "sent"


async def test_an_expired_row_held_behind_a_retry_is_failed_by_the_sweep(
    engine: AsyncEngine,
    settings: outbox.Settings,
    database_url: str,
    running: Callable[[outbox.Settings], Daemon],
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO outbox_messages (recipient, message, available_at, last_error) "
            "VALUES ($1, 'waits', now() + interval '1 hour', 'transient')",
            RECIPIENTS[0],
        )
        held = await conn.fetchval(
            "INSERT INTO outbox_messages (recipient, message, expires_at) "
            "VALUES ($1, 'expired', now()) RETURNING id",
            RECIPIENTS[0],
        )
    finally:
        await conn.close()
    running(settings)
    await eventually(lambda: _status_is(database_url, held, "failed"), 15, "the sweep")


async def test_a_row_in_doubt_that_expires_waiting_does_not_say_not_sent(
    engine: AsyncEngine,
    settings: outbox.Settings,
    database_url: str,
    running: Callable[[outbox.Settings], Daemon],
) -> None:
    row = await _fetchval(
        database_url,
        "INSERT INTO outbox_messages (recipient, message, expires_at, available_at,"
        " last_error, in_doubt) VALUES ($1, 'maybe sent', now(), now() + interval '1 hour',"
        " 'in doubt: no answer', 1) RETURNING id",
        RECIPIENTS[0],
    )
    running(settings)
    await eventually(lambda: _status_is(database_url, row, "failed"), 15, "the sweep")
    reason = (await fetch_row(database_url, row))["last_error"]
    assert reason.startswith("expired: not sent again by "), reason
    assert reason.endswith(f"({MAY_HAVE_BEEN_ACCEPTED})")


async def test_a_row_in_doubt_claimed_past_its_deadline_does_not_say_not_sent(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, database_url: str
) -> None:
    row = await _fetchval(
        database_url,
        "INSERT INTO outbox_messages (recipient, message, created_at, in_doubt)"
        " VALUES ($1, 'maybe sent', now() - interval '3 hours', 1) RETURNING id",
        RECIPIENTS[0],
    )
    assert await drain(replace(settings, max_age=7200)) == 0
    assert simulator.requests == 0
    assert (await fetch_row(database_url, row))["last_error"] == (
        f"expired: not sent again before its deadline ({MAY_HAVE_BEEN_ACCEPTED})"
    )


@pytest.mark.parametrize(
    "row_sql",
    [
        # Its daemon was killed after Meta accepted the text; the status webhooks were stored
        # before another daemon took the row over, after its deadline.
        "INSERT INTO outbox_messages (recipient, message, expires_at, status, attempts,"
        " lease_token, locked_until) VALUES ($1, 'hello', now() - interval '1 second',"
        " 'sending', 1, gen_random_uuid(), now() - interval '1 hour') RETURNING id",
        # Its request got no clear answer, and the row was given back to wait for a retry.
        "INSERT INTO outbox_messages (recipient, message, expires_at, last_error, in_doubt)"
        " VALUES ($1, 'maybe sent', now() - interval '1 second', 'in doubt: no answer', 1)"
        " RETURNING id",
    ],
    ids=["taken-over", "in-doubt"],
)
async def test_a_row_that_may_have_sent_past_its_deadline_is_sent_when_a_status_shows_it_went(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    database_url: str,
    row_sql: str,
) -> None:
    row = await _fetchval(database_url, row_sql, RECIPIENTS[0])
    await _sent_as_its_status_said(database_url, settings, simulator, row)


async def test_a_request_in_doubt_at_its_rows_deadline_still_waits_for_its_status(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, database_url: str
) -> None:
    # Its request timed out just before the row's deadline; Meta's status comes after the
    # deadline, within the reconcile window: the row says what Meta said, not "expired".
    script(simulator, RECIPIENTS[0], {"accept_and_hang": True})
    deadline = datetime.now(UTC) + timedelta(seconds=1.5)
    row = await enqueue(engine, RECIPIENTS[0], "hello", expires_at=deadline)
    options = replace(settings, request_timeout=1.0, reconcile_seconds=10)
    daemon = asyncio.create_task(Daemon(options, drain=True).run())
    await simulator.wait_for_accepted(1)
    await asyncio.sleep(max((deadline - datetime.now(UTC)).total_seconds(), 0) + 2.0)
    await _fetchval(
        database_url,
        "INSERT INTO outbox_statuses (wamid, message_id, part, status, at, recipient)"
        " VALUES ('wamid.late', $1, 0, 'sent', now(), $2)",
        row,
        RECIPIENTS[0],
    )
    assert await asyncio.wait_for(daemon, 30) == 0
    record = await fetch_row(database_url, row)
    assert (record["status"], record["message_id"]) == ("sent", "wamid.late")


# --- helpers ---------------------------------------------------------------------------------


async def _async(value: bool) -> bool:
    return value


async def _counted(database_url: str, state: str, count: int) -> bool:
    return (await statuses(database_url))[state] == count


async def _none_failed(database_url: str, rows: list[int]) -> bool:
    return all([(await fetch_row(database_url, r))["status"] != "failed" for r in rows])


async def _failed_with(database_url: str, row: int, reason: str) -> bool:
    record = await fetch_row(database_url, row)
    return bool(record["status"] == "failed" and record["last_error"].startswith(reason))


async def _status_is(database_url: str, row: int, state: str, *, tried: bool = False) -> bool:
    record = await fetch_row(database_url, row)
    return bool(record["status"] == state and (not tried or record["last_error"]))


async def _idle_statements(
    settings: outbox.Settings,
    database_url: str,
    running: Callable[[outbox.Settings], Daemon],
    monkeypatch: pytest.MonkeyPatch,
    *inserts: str,
) -> int:
    """Rows written by `inserts` (for RECIPIENTS[0]); the statements a daemon then sends to
    PostgreSQL in three seconds when none of them can be sent."""
    statements = _count_daemon_statements(monkeypatch)
    conn = await asyncpg.connect(database_url)
    try:
        for insert in inserts:
            await conn.execute(insert, RECIPIENTS[0])
    finally:
        await conn.close()
    running(replace(settings, poll_interval=5))
    await asyncio.sleep(1)
    before = statements[0]
    await asyncio.sleep(3)
    return statements[0] - before


def _count_daemon_statements(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count every statement the daemons started from now on send to PostgreSQL through their
    pools (each is described, or its description looked up, once per run)."""
    counter = [0]
    original = DescribedConnection._get_statement

    async def counting(self: DescribedConnection, *args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(DescribedConnection, "_get_statement", counting)
    return counter


async def test_a_row_that_crashes_the_delivery_code_ends_failed_not_looping(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from outbox.delivery import parts as rows

    original = rows.parts_of

    def parts_of(message: str | None, *rest: Any) -> list[Any]:
        if message == "crash":
            raise RuntimeError("a bug")
        return original(message, *rest)

    monkeypatch.setattr(rows, "parts_of", parts_of)
    doomed = await enqueue(engine, RECIPIENTS[0], "crash")
    fine = await enqueue(engine, RECIPIENTS[1], "fine")
    assert await drain(replace(settings, max_attempts=2)) == 0
    delivery = await status(engine, doomed)
    assert (delivery.status, delivery.attempts) == ("failed", 2)
    assert (delivery.last_error or "").startswith("internal error: RuntimeError: a bug")
    assert (await status(engine, fine)).status == "sent"


async def test_an_outage_is_reported_by_readyz_and_outbox_stats(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    running: Callable[[outbox.Settings], Daemon],
    cli_env: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    simulator.fail_rate = 1.0
    for recipient in RECIPIENTS[:10]:
        await enqueue(engine, recipient, "hello")
    daemon = running(settings)
    await eventually(lambda: _async(daemon.health()["status"] == "outage"), 10, "an outage")
    runner = await serve._health_server(daemon, "127.0.0.1", 0)
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as live:
                assert live.status == 200
            async with http.get(f"http://127.0.0.1:{port}/readyz") as ready:
                assert ready.status == 503
                assert (await ready.json())["status"] == "outage"
    finally:
        await runner.cleanup()
    await asyncio.sleep(1)  # the state row is written within half a second of a change
    assert await asyncio.to_thread(cli.main, ["stats", "--json"]) == 0
    daemons = json.loads(capsys.readouterr().out)["daemons"]
    assert [(d["state"], "131000" in d["reason"]) for d in daemons] == [("outage", True)]


async def test_one_row_that_always_fails_does_not_keep_the_sender_in_an_outage(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    running: Callable[[outbox.Settings], Daemon],
) -> None:
    script(simulator, RECIPIENTS[0], {"error": 131000, "times": 0})
    stubborn = await enqueue(engine, RECIPIENTS[0], "always fails")
    for recipient in RECIPIENTS[1:7]:
        script(simulator, recipient, {"error": 131000, "times": settings.quick_retries})
    others = [await enqueue(engine, r, "fails once") for r in RECIPIENTS[1:7]]
    daemon = running(replace(settings, max_attempts=5))

    async def others_sent() -> bool:
        return all([(await status(engine, row)).status == "sent" for row in others])

    await eventually(others_sent, 40, "the other rows, once probes rotate past the stubborn one")
    assert daemon.health()["status"] == "ok", daemon.health()
    assert (await status(engine, stubborn)).status in ("pending", "sending", "failed")


async def test_a_raw_sql_row_python_cannot_parse_fails_alone(
    engine: AsyncEngine, settings: outbox.Settings, database_url: str, cli_env: str
) -> None:
    poisoned = await _fetchval(
        database_url,
        "INSERT INTO outbox_messages (recipient, media) VALUES ($1, "
        """'[{"type": "image", "url": "https://a.example/a.jpg", "caption": 1e5000}]') """
        "RETURNING id",
        RECIPIENTS[0],
    )
    fine = await enqueue(engine, RECIPIENTS[1], "fine")
    assert await drain(settings) == 0
    assert (await status(engine, fine)).status == "sent"
    poisoned_row = await fetch_row(database_url, poisoned)
    assert poisoned_row["status"] == "failed"
    assert poisoned_row["last_error"].startswith("invalid row: media: is JSON outbox cannot read")
    assert await asyncio.to_thread(cli.main, ["list"]) == 0


async def test_an_expired_lease_held_behind_a_waiting_retry_does_not_make_the_loop_spin(
    settings: outbox.Settings,
    database_url: str,
    running: Callable[[outbox.Settings], Daemon],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    statements = await _idle_statements(
        settings,
        database_url,
        running,
        monkeypatch,
        "INSERT INTO outbox_messages (recipient, message, available_at, last_error) "
        "VALUES ($1, 'waits an hour', now() + interval '1 hour', 'transient')",
        "INSERT INTO outbox_messages (recipient, message, status, lease_token, locked_until) "
        "VALUES ($1, 'left by a crashed daemon', 'sending', gen_random_uuid(), "
        "now() - interval '1 minute')",
    )
    assert 0 < statements <= 8, f"{statements} statements in 3 idle seconds"


@pytest.mark.timeout(180)
async def test_a_stop_while_the_database_swallows_everything_is_bounded(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, database_url: str
) -> None:
    proxy = PostgresProxy(database_url)
    proxied = await proxy.start()
    for recipient in RECIPIENTS[:5]:
        script(simulator, recipient, {"delay_ms": 1000})
        await enqueue(engine, recipient, "text", media_urls={"images": [IMAGE]})
    daemon = Daemon(replace(settings, database_url=proxied, shutdown_timeout=3))
    task = asyncio.create_task(daemon.run())
    try:
        await eventually(lambda: _async(simulator.requests >= 5), 10, "the first sends")
        proxy.stall()  # connections stay open; no answer ever comes
        await asyncio.sleep(1.5)
        began = time.monotonic()
        daemon.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 120)
        # shutdown_timeout (3 s), a cancelled statement's release (2 s), the pool's close (3 s),
        # the turn's grace and the last writes' bounds: about 11 s here. It once took 161 s,
        # then 64 s while a pooled connection waited out the 60 s statement timeout.
        assert time.monotonic() - began < 30, "the shutdown bound holds"
    finally:
        await proxy.close()


@pytest.mark.parametrize(
    "poison",
    [
        {"raw": '{"messaging_product": "whatsapp"}', "times": 0},  # a 200 without an id
        {"raw": "<html>502 Bad Gateway</html>", "http": 502, "times": 0},
    ],
    ids=["200 without an id", "HTML 502"],
)
async def test_poisoned_answers_for_some_recipients_do_not_hold_back_a_new_healthy_row(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    running: Callable[[outbox.Settings], Daemon],
    poison: dict[str, Any],
) -> None:
    for recipient in RECIPIENTS[:10]:
        script(simulator, recipient, poison)
        for n in range(3):
            await enqueue(engine, recipient, f"poisoned {n}")
    running(replace(settings, retry_delay=1))
    await asyncio.sleep(3)  # only poisoned rows have been in flight since the start
    healthy = await enqueue(engine, RECIPIENTS[20], "a healthy row")
    began = time.monotonic()

    async def healthy_sent() -> bool:
        return (await status(engine, healthy)).status == "sent"

    await eventually(healthy_sent, 20, "the healthy row, in the first probe after it came")
    assert time.monotonic() - began < 20


async def test_timeouts_through_a_whole_api_outage_fail_no_row(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    database_url: str,
    running: Callable[[outbox.Settings], Daemon],
) -> None:
    for recipient in RECIPIENTS[:4]:
        script(simulator, recipient, {"hang_ms": 60_000, "times": 0})  # the API answers nothing
    rows = [await enqueue(engine, r, f"booking {n}") for n in range(3) for r in RECIPIENTS[:4]]
    daemon = running(replace(settings, request_timeout=0.5, retry_delay=0.2))
    await eventually(lambda: _async(daemon.health()["status"] == "outage"), 15, "an outage")
    await asyncio.sleep(12)  # a dozen probes' worth of timeouts
    assert (await statuses(database_url))["failed"] == 0
    for recipient in RECIPIENTS[:4]:
        simulator.scenario.pop(recipient)  # the API is back
    await eventually(
        lambda: _counted(database_url, "sent", len(rows)), 60, "every row sent after the outage"
    )


Outcome = tuple[int, list[int], str]


@pytest.fixture
def fast_outage_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outage probes every 0.2 s: many of them in a short test."""
    monkeypatch.setattr(gate_module, "OUTAGE_PROBE_CAP", 0.2)


@pytest.fixture
def ride_out_an_unreachable_api(
    settings: outbox.Settings,
    simulator: Simulator,
    database_url: str,
    running: Callable[[outbox.Settings], Daemon],
    fast_outage_probes: None,
) -> Callable[[list[int]], Awaitable[Outcome]]:
    """Run a daemon on some rows while the API answers nothing, past many probes, then bring
    the API back; each row must go once and none fail. The probes made meanwhile, each row's
    sends in doubt, and the reason /readyz gave."""

    async def ride_out(rows: list[int]) -> Outcome:
        simulator.unreachable = True
        daemon = running(replace(settings, retry_delay=0.2))
        await eventually(lambda: _async(daemon.health()["status"] == "outage"), 15, "an outage")
        lookups = simulator.lookups
        await asyncio.sleep(4)  # many times MAX_IN_DOUBT_IN_OUTAGE probes
        probes, reason = simulator.lookups - lookups, daemon.health()["reason"] or ""
        doubts = [(await fetch_row(database_url, row))["in_doubt"] for row in rows]
        assert (await statuses(database_url))["failed"] == 0
        simulator.unreachable = False
        await eventually(
            lambda: _counted(database_url, "sent", len(rows)), 30, "every row sent after it"
        )
        assert sorted(sent(simulator)) == sorted(f"outbox:{row}:0" for row in rows)
        return probes, doubts, reason

    return ride_out


async def test_an_unreachable_api_is_probed_with_lookups_and_no_part_is_sent_into_it(
    engine: AsyncEngine, ride_out_an_unreachable_api: Callable[[list[int]], Awaitable[Outcome]]
) -> None:
    """Each send into an API that cuts every connection is one more send in doubt: probing with
    messages failed the probed rows after 6 of them, however long the outage lasted."""
    rows = [await enqueue(engine, r, f"booking {n}") for n in range(2) for r in RECIPIENTS[:5]]
    probes, doubts, reason = await ride_out_an_unreachable_api(rows)
    assert "a lookup of the phone number failed" in reason
    # Each row's first send, and one message per LOOKUP_MISSES unanswered lookups at most.
    assert probes > 2 * gate_module.LOOKUP_MISSES
    assert sum(doubts) <= len(rows) + probes // gate_module.LOOKUP_MISSES + 1


async def test_an_unreachable_api_is_an_outage_even_for_rows_to_one_or_two_recipients(
    engine: AsyncEngine, ride_out_an_unreachable_api: Callable[[list[int]], Awaitable[Outcome]]
) -> None:
    """Outage detection needed failures to 3 recipients, so a small app's rows to one or two
    people used up their sends in doubt and failed within seconds of the API going away."""
    rows = [await enqueue(engine, r, f"booking {n}") for n in range(3) for r in RECIPIENTS[:2]]
    await ride_out_an_unreachable_api(rows)


async def test_sending_resumes_when_only_the_lookups_of_the_number_still_fail(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    database_url: str,
    running: Callable[[outbox.Settings], Daemon],
    fast_outage_probes: None,
) -> None:
    """With every probe waiting for a lookup, a lookup endpoint that stayed down kept sending
    stopped for good after the messages endpoint came back."""
    simulator.fail_rate = 1.0
    simulator.lookup_fault = Step("drop")
    rows = [await enqueue(engine, r, "check-in at 3 pm") for r in RECIPIENTS[:6]]
    daemon = running(replace(settings, retry_delay=0.2))
    await eventually(lambda: _async(daemon.health()["status"] == "outage"), 15, "an outage")
    await eventually(lambda: _counted(database_url, "pending", len(rows)), 15, "rows waiting")
    simulator.fail_rate = 0.0  # messages work again; lookups do not
    await eventually(
        lambda: _counted(database_url, "sent", len(rows)), 30, "every row sent after the outage"
    )
    assert daemon.health()["status"] == "ok"


async def stop_during_a_hanging_lookup(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> tuple[Daemon, int]:
    """A send times out, the lookup of the number after it hangs, and the daemon is stopped
    meanwhile; the daemon, once stopped and a moment later, and the row."""
    script(simulator, RECIPIENTS[0], {"hang_ms": 5_000})  # past the request timeout
    simulator.lookup_fault = Step("hang", delay_ms=5_000)
    row = await enqueue(engine, RECIPIENTS[0], "your key code is 4711")
    daemon = Daemon(replace(settings, request_timeout=3, shutdown_timeout=1))
    task = asyncio.create_task(daemon.run())
    try:
        await eventually(lambda: _async(simulator.lookups >= 1), 20, "the lookup after a timeout")
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 30)
    await asyncio.sleep(0.5)  # whatever the stop left running has ended
    return daemon, row


async def test_a_send_in_doubt_is_written_before_its_lookup_of_the_number_ends(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, database_url: str
) -> None:
    """The row's outcome waited for the lookup: a stop during a hanging lookup gave the row back
    untouched, its send in doubt forgotten, and the next daemon resent the part at once."""
    _, row = await stop_during_a_hanging_lookup(engine, settings, simulator)
    record = await fetch_row(database_url, row)
    assert (record["status"], record["in_doubt"]) == ("pending", 1)
    # Rescheduled for later than the moment it was written (at least half a second: the test's
    # own pause after the stop may have used that up, so `due_in` alone says nothing).
    assert record["available_at"] > record["updated_at"], "a send in doubt is never retried at once"


async def test_a_stop_during_a_lookup_of_the_number_declares_no_outage(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The lookup outlived the daemon's HTTP session, failed with 'Connector is closed', and
    declared an outage as the daemon exited."""
    daemon, _ = await stop_during_a_hanging_lookup(engine, settings, simulator)
    assert daemon.health()["status"] == "ok"
    assert "Graph API outage" not in caplog.text


async def test_a_front_end_closing_connections_unread_fails_no_row(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, database_url: str
) -> None:
    """A balancer with a dead backend closes connections before the API reads them. Held in
    doubt, three such closes failed a row "in doubt, it may have been sent" that never was."""
    for recipient in RECIPIENTS[:2]:
        script(simulator, recipient, {"drop": True, "times": 4})
    rows = [
        await enqueue(engine, r, f"your order {n} shipped")
        for n in range(2)
        for r in RECIPIENTS[:2]
    ]
    await drain(replace(settings, retry_delay=0.05))
    assert [(await status(engine, row)).status for row in rows] == ["sent"] * len(rows)
    assert sorted(sent(simulator)) == sorted(f"outbox:{row}:0" for row in rows)


async def _sent_as_its_status_said(
    database_url: str, settings: outbox.Settings, simulator: Simulator, row: int
) -> None:
    """With a delivered status stored for its first part before it was recorded, the drained
    row is sent with that status's wamid, and no request was made."""
    await _fetchval(
        database_url,
        "INSERT INTO outbox_statuses (wamid, message_id, part, status, at, recipient)"
        " SELECT 'wamid.lost', id, 0, 'delivered', now(), recipient FROM outbox_messages"
        " WHERE id = $1",
        row,
    )
    assert await drain(replace(settings, reconcile_seconds=0)) == 0
    assert simulator.requests == 0
    record = await fetch_row(database_url, row)
    assert record["message_id"] == "wamid.lost"
    assert record["status"] in ("sent", "delivered")
