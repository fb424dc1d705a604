"""The dashboard on 1,000,000 messages (issue 18, point 5): every page under 200 ms.

Fills a scratch database with a million messages (finished, failed and pending, over three
senders and a day), one event per request outcome, inbound messages and a template per tenth
message; folds the events into the charts' rollup (timed); then serves the dashboard in-process
and times each page as an admin loads it, over real HTTP on loopback.

    python -m benchmarks.dashboard [--messages 1000000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from benchmarks.scratch import scratch_database
from outbox.dashboard import create_app
from outbox.dashboard.rollup import catch_up
from outbox.database import create_engine
from outbox.settings import Settings
from tests.dashboard_helpers import PASSWORD, csrf, users

TARGET_MS = 200.0


async def fill(dsn: str, messages: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET synchronous_commit = off")
        await conn.execute(
            """
            INSERT INTO outbox_messages (recipient, message, status, sender, reference, template,
                                         parts, message_id, attempts, error_code, last_error,
                                         created_at, updated_at, available_at, sent_at)
            SELECT '92300' || lpad((i % 200000)::text, 7, '0'),
                   CASE WHEN i % 10 = 0 THEN NULL ELSE 'Your booking ' || i || ' is confirmed' END,
                   CASE WHEN i % 10 = 9 THEN 'pending' WHEN i % 50 = 3 THEN 'failed'
                        ELSE 'read' END,
                   (ARRAY['111', '222', '333'])[1 + i % 3],
                   'booking-' || i,
                   CASE WHEN i % 10 = 0 THEN jsonb_build_object(
                        'name', 'checkout_reminder_' || (i % 7), 'language',
                        jsonb_build_object('code', 'en_US')) END,
                   CASE WHEN i % 10 = 9 OR i % 50 = 3 THEN '[]'::jsonb ELSE jsonb_build_array(
                        jsonb_build_object('wamid', 'wamid.' || i, 'status', 'read')) END,
                   CASE WHEN i % 10 = 9 OR i % 50 = 3 THEN NULL ELSE 'wamid.' || i END,
                   CASE WHEN i % 10 = 9 THEN 0 ELSE 1 END,
                   CASE WHEN i % 50 = 3 THEN (ARRAY[131026, 131047, 131050])[1 + i % 3] END,
                   CASE WHEN i % 50 = 3 THEN 'refused'
                        WHEN i % 30 = 29 THEN 'quiet hours until 2026-12-07 09:00 Asia/Karachi'
                   END,
                   now() - make_interval(secs => ($1 - i) * 86400.0 / $1),
                   now() - make_interval(secs => ($1 - i) * 86400.0 / $1),
                   now() - make_interval(secs => ($1 - i) * 86400.0 / $1),
                   CASE WHEN i % 10 <> 9 AND i % 50 <> 3
                        THEN now() - make_interval(secs => ($1 - i) * 86400.0 / $1) END
            FROM generate_series(1, $1) AS i
            """,
            messages,
        )
        await conn.execute(
            """
            INSERT INTO outbox_events (message_id, part, kind, http_status, error_code, detail,
                                       latency_ms, at)
            SELECT id, 0, CASE WHEN status = 'failed' THEN 'failed' ELSE 'accepted' END,
                   CASE WHEN status = 'failed' THEN 400 ELSE 200 END, error_code,
                   coalesce(message_id, last_error), 80, created_at + interval '1 second'
            FROM outbox_messages WHERE status <> 'pending'
            """
        )
        await conn.execute(
            """
            INSERT INTO outbox_inbound (wamid, phone_number_id, customer, type, at)
            SELECT 'wamid.in.' || i, '111', '92300' || lpad((i % 200000)::text, 7, '0'), 'text',
                   now() - make_interval(secs => i)
            FROM generate_series(1, $1 / 20) AS i
            """,
            messages,
        )
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def timed(client: TestClient[Any, Any], path: str, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = await client.get(path)
        await response.read()
        times.append((time.perf_counter() - started) * 1000)
        assert response.status == 200, (path, response.status)
    return times


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    async with scratch_database() as (dsn, version):
        started = time.perf_counter()
        await fill(dsn, args.messages)
        print(
            f"PostgreSQL {version}: {args.messages:,} messages filled in "
            f"{time.perf_counter() - started:.0f} s"
        )
        engine = create_engine(dsn)
        started = time.perf_counter()
        folded = await catch_up(engine, settle_seconds=0)
        print(f"rollup: {folded:,} events folded in {time.perf_counter() - started:.1f} s")
        await engine.dispose()
        middle = args.messages // 2 + 1  # a read message: i % 10 == 1
        failed = next(i for i in range(middle, middle + 100) if i % 50 == 3)
        phone = f"+92 300 {middle % 200000:07d}"
        pages = {
            "search by phone": f"/?q={phone.replace('+', '%2B').replace(' ', '+')}",
            "search by reference": f"/?q=booking-{middle}",
            "search by wamid": f"/?q=wamid.{middle}",
            "search by id": f"/?q={middle}",
            "message page": f"/messages/{middle}",
            "failed message page": f"/messages/{failed}",
            "conversation": f"/messages/{middle}/conversation",
            "operate": "/operate",
        }
        settings = Settings(database_url=dsn)
        app = create_app(settings, users=users(), secure_cookies=False)
        async with TestClient(TestServer(app)) as client:
            form = await client.get("/login")
            token = csrf(await form.text())
            await client.post("/login", data={"csrf": token, "name": "admin", "password": PASSWORD})
            heading = f"{'page':<22} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"
            print(f"\n{heading}  under {TARGET_MS:.0f} ms")
            for name, path in pages.items():
                await timed(client, path, 2)  # warm the pool and the caches
                times = sorted(await timed(client, path, args.repeat))
                p95 = times[max(0, int(len(times) * 0.95) - 1)]
                verdict = "yes" if p95 < TARGET_MS else "NO"
                print(
                    f"{name:<22} {statistics.median(times):>8.1f} {p95:>8.1f} "
                    f"{times[-1]:>8.1f}  {verdict}"
                )


if __name__ == "__main__":
    asyncio.run(main())
