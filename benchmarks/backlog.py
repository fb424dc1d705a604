"""Big backlogs: claims, stats and list with 1,000,000 finished rows, 200,000 pending rows and the
50,000 oldest of them queued to one recipient (issue 9, point 6).

Prints the claim's plan (EXPLAIN ANALYZE) and its time over consecutive claims, `outbox stats`
and `outbox list` as a user runs them (process start included), and how fast the other
recipients drain at Meta's default 80 messages/s with a real daemon and the simulator in their
own processes.

    python -m benchmarks.backlog [--finished 1000000] [--pending 200000] [--lane 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
from sqlalchemy.dialects import postgresql

from benchmarks.scratch import scratch_database
from benchmarks.throughput import environ, free_port, start_simulator, wait_for_port
from outbox import store

BIN = Path(sys.executable).parent
LANE = "923009999999"


def claim_sql() -> str:
    """CLAIM_BATCH with its parameters inlined, for EXPLAIN and timing over plain asyncpg."""
    params = {
        "limit": 100,
        "window": 400,
        "token": str(uuid.uuid4()),
        "lease": 30,
        "mine": "{}",
        "tokens": "{}",
        "max_age": 0,
        "default_sender": "1234567890",
        "stopped": "{}",
        "only": None,
        "fresh": "false",
        "grace": 0,
        "takeover": "true",
    }
    text = str(store.CLAIM_BATCH.compile(dialect=postgresql.dialect()))
    for name, value in params.items():
        literal = "NULL" if value is None else value if isinstance(value, int) else f"'{value}'"
        text = text.replace(f"%({name})s", str(literal))
    return text


async def fill(conn: asyncpg.Connection, finished: int, pending: int, lane: int) -> None:
    await conn.execute("SET synchronous_commit = off")
    await conn.execute(
        "INSERT INTO outbox_messages (recipient, message, status, parts, message_id, sent_at, "
        "created_at, updated_at, available_at) "
        "SELECT '92300' || lpad((i % 100000)::text, 7, '0'), 'done ' || i, 'sent', "
        """'[{"wamid": "x", "status": "sent"}]', 'wamid.' || i, now(), """
        "now() - interval '2 days', now() - interval '2 days', now() - interval '2 days' "
        "FROM generate_series(1, $1) AS i",
        finished,
    )
    await conn.execute(
        "INSERT INTO outbox_messages (recipient, message, available_at) "
        "SELECT $2, 'queued ' || i, now() - interval '1 hour' FROM generate_series(1, $1) AS i",
        lane,
        LANE,
    )
    await conn.execute(
        "INSERT INTO outbox_messages (recipient, message) "
        "SELECT '92301' || lpad((i % 50000)::text, 7, '0'), 'pending ' || i "
        "FROM generate_series(1, $1) AS i",
        pending - lane,
    )
    await conn.execute("VACUUM ANALYZE outbox_messages")


async def claims(conn: asyncpg.Connection, count: int) -> list[float]:
    """Milliseconds of `count` consecutive committed claims of 100 rows."""
    sql = claim_sql()
    times = []
    for _ in range(count):
        started = time.perf_counter()
        rows = await conn.fetch(sql)
        elapsed = (time.perf_counter() - started) * 1000
        if not rows or not rows[0]["marked"]:
            times.append(elapsed)  # a claim that queued rows behind their lane is counted apart
    return times


async def explain(conn: asyncpg.Connection) -> str:
    """The claim's plan, run for real and rolled back."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        rows = await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + claim_sql())
    finally:
        await transaction.rollback()
    return "\n".join("    " + row[0] for row in rows)


def timed_command(dsn: str, *argv: str) -> float:
    started = time.perf_counter()
    subprocess.run(  # noqa: S603 - our own console script
        [str(BIN / "outbox"), *argv],
        env={**os.environ, "OUTBOX_DATABASE_URL": dsn},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


async def drain_rate(dsn: str, seconds: float) -> tuple[float, int]:
    """Messages/s the daemon sends at --rate 80 over `seconds`, and how many went to the lane."""
    port = free_port()
    simulator = await start_simulator(port, 0, dict(os.environ))
    try:
        await wait_for_port(port)
        url = f"http://127.0.0.1:{port}"
        daemon = await asyncio.create_subprocess_exec(
            str(BIN / "outbox"),
            "run",
            "--rate",
            "80",
            env=environ(dict(os.environ), dsn, url),
            stderr=subprocess.DEVNULL,
        )
        conn = await asyncpg.connect(dsn)
        try:
            await asyncio.sleep(3)  # start-up and the first claims
            count = "SELECT count(*) FROM outbox_messages WHERE sent_at > now() - interval '1 hour'"
            before = await conn.fetchval(count)
            await asyncio.sleep(seconds)
            after = await conn.fetchval(count)
            lane = await conn.fetchval(
                "SELECT count(*) FROM outbox_messages WHERE recipient = $1 AND status <> 'pending'",
                LANE,
            )
        finally:
            await conn.close()
            daemon.terminate()
            await daemon.wait()
    finally:
        simulator.terminate()
        await simulator.wait()
    return (after - before) / seconds, int(lane)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--pending", type=int, default=200_000)
    parser.add_argument("--lane", type=int, default=50_000)
    parser.add_argument("--drain-seconds", type=float, default=15.0)
    args = parser.parse_args()

    async with scratch_database() as (dsn, version):
        print(f"PostgreSQL {version}, {os.cpu_count()} cores")
        conn = await asyncpg.connect(dsn)
        try:
            started = time.perf_counter()
            await fill(conn, args.finished, args.pending, args.lane)
            print(
                f"{args.finished:,} finished rows, {args.pending:,} pending, the {args.lane:,} "
                f"oldest queued to one recipient (filled in {time.perf_counter() - started:.0f}s)"
            )
            print("the first claim's plan:")
            print(await explain(conn))
            started = time.perf_counter()
            times = await claims(conn, 300)
            spent = time.perf_counter() - started
            p99 = statistics.quantiles(times, n=100)[98]
            print(
                f"300 consecutive claims of 100 in {spent:.1f} s; the {300 - len(times)} that "
                f"queued the lane's rows took the rest, the {len(times)} others: median "
                f"{statistics.median(times):.1f} ms, p99 {p99:.1f} ms, max {max(times):.1f} ms"
            )
            await conn.execute(
                "UPDATE outbox_messages SET status = 'pending', locked_until = NULL "
                "WHERE status = 'sending'"
            )
            await conn.execute("VACUUM ANALYZE outbox_messages")  # as autovacuum would, soon
        finally:
            await conn.close()
        for argv in (
            ["stats"],
            ["list"],
            ["list", "--status", "pending"],
            ["list", "--recipient", LANE],
            ["--help"],
        ):
            seconds = timed_command(dsn, *argv)
            print(f"outbox {' '.join(argv)}: {seconds:.2f} s, process start included")
        rate, lane = await drain_rate(dsn, args.drain_seconds)
        print(
            f"drain at --rate 80 over {args.drain_seconds:.0f} s: {rate:.1f} msg/s; "
            f"the queued recipient got {lane} (paced at --pair-burst 45 then one per 6 s)"
        )


if __name__ == "__main__":
    asyncio.run(main())
