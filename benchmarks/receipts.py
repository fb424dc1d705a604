"""Receipt figures: how fast the webhook receiver applies status webhooks, and how many parts are
sent twice when requests time out after Meta accepted them, with and without the receiver.

Prints figures, never pass/fail. Everything runs against a scratch database on the server named
by OUTBOX_DATABASE_URL (else the embedded one), dropped afterwards.

    python -m benchmarks.receipts [--messages 2000] [--clients 32] [--rows 300]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp import web

import outbox
from benchmarks.scratch import scratch_database
from outbox.callbacks import callback_data
from outbox.delivery.daemon import Daemon
from outbox.simulator import Simulator, Step, serve
from outbox.status_webhooks import StatusNotifier

SECRET = "bench-app-secret"
TOKEN, PHONE = "bench-token", "1234567890"


@asynccontextmanager
async def receiver(dsn: str) -> AsyncIterator[str]:
    settings = outbox.Settings(database_url=dsn, app_secret=SECRET, webhook_verify_token="v")
    runner = web.AppRunner(outbox.webhooks.create_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/webhook"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def receiver_process(dsn: str) -> AsyncIterator[str]:
    """`outbox webhook` in its own process, as production runs it."""
    port = 18090
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "outbox"),
        "webhook",
        "--port",
        str(port),
        env={
            **os.environ,
            "OUTBOX_DATABASE_URL": dsn,
            "META_APP_SECRET": SECRET,
            "META_WEBHOOK_VERIFY_TOKEN": "v",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        await asyncio.wait_for(process.stdout.readline(), 30)  # "listening on ..."
        yield f"http://127.0.0.1:{port}/webhook"
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()


async def receiver_rate(messages: int, clients: int) -> None:
    """POST sent, delivered and read for `messages` sent rows (one status per POST, as Meta
    mostly does) from `clients` concurrent senders to `outbox webhook` in its own process;
    statuses applied per second."""
    async with scratch_database() as (dsn, version), receiver_process(dsn) as url:
        conn = await asyncpg.connect(dsn)
        await conn.execute(
            "INSERT INTO outbox_messages (recipient, message, status, message_id, parts, sent_at) "
            "SELECT '92300' || lpad(i::text, 7, '0'), 'm', 'sent', 'wamid.bench' || i, "
            "jsonb_build_array(jsonb_build_object('wamid', 'wamid.bench' || i, "
            "'status', 'sent')), now() FROM generate_series(1, $1) AS i",
            messages,
        )  # one part each: its wamid is the row's message_id, as the daemon records a last part
        ids = [row[0] for row in await conn.fetch("SELECT id FROM outbox_messages ORDER BY id")]
        installation = await conn.fetchval("SELECT id FROM outbox_installation")
        notifier = StatusNotifier(url, SECRET, PHONE)
        bodies = [
            notifier.body(
                f"wamid.bench{n}",
                "923000000000",
                callback_data(installation, row, 0),
                status,
                None,
            )
            for status in ("sent", "delivered", "read")
            for n, row in enumerate(ids, 1)
        ]
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(body)
        latencies: list[float] = []

        async def client(session: aiohttp.ClientSession) -> None:
            while not queue.empty():
                body = queue.get_nowait()
                headers = {"X-Hub-Signature-256": outbox.webhooks.payload.sign(SECRET, body)}
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    assert response.status == 200, await response.text()
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(client(session) for _ in range(clients)))
        read = "SELECT count(*) FROM outbox_messages WHERE status = 'read'"
        while True:  # the last statuses may still be applying
            if await conn.fetchval(read) >= messages:
                break
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        await conn.close()
        latencies.sort()
        print(f"receiver on PostgreSQL {version}: {len(bodies)} statuses ({messages} messages)")
        print(f"  applied in {elapsed:.2f} s: {len(bodies) / elapsed:,.0f} statuses/s")
        print(
            f"  answer time p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
            f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms ({clients} clients)"
        )


async def duplicates(rows: int, with_receiver: bool) -> None:
    """`rows` one-part messages, one in ten accepted but never answered (the client times
    out); parts sent twice, with the receiver settling them by webhook or without it."""
    async with scratch_database() as (dsn, _):
        simulator = Simulator(access_token=TOKEN, phone_number_id=PHONE)
        recipients = [f"92300{i:07d}" for i in range(rows)]
        for recipient in recipients[::10]:
            simulator.scenario[recipient] = deque([Step.parse({"accept_and_hang": True})])
        conn = await asyncpg.connect(dsn)
        await conn.executemany(
            "INSERT INTO outbox_messages (recipient, message) VALUES ($1, 'hello')",
            [(recipient,) for recipient in recipients],
        )
        await conn.close()
        async with receiver(dsn) as url:
            if with_receiver:
                simulator.notifier = StatusNotifier(url, SECRET, PHONE, delay=0.05)
            runner = await serve(simulator, "127.0.0.1", 0)
            settings = outbox.Settings(
                database_url=dsn,
                access_token=TOKEN,
                phone_number_id=PHONE,
                graph_api_url=f"http://127.0.0.1:{runner.addresses[0][1]}",
                request_timeout=1.0,
                reconcile_seconds=10.0 if with_receiver else 0.0,
                rate=10_000,
                poll_interval=0.5,
            )
            started = time.perf_counter()
            await Daemon(settings, drain=True).run()
            elapsed = time.perf_counter() - started
            if simulator.notifier is not None:
                await simulator.notifier.close()
            await runner.cleanup()
        counts = Counter(accepted["callback"] for accepted in simulator.accepted)
        twice = sum(1 for n in counts.values() if n > 1)
        label = "with the receiver" if with_receiver else "without a receiver"
        print(
            f"{rows} messages, {rows // 10} answers lost after acceptance, {label}: "
            f"{twice} parts sent twice ({elapsed:.1f} s)"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rows", type=int, default=300)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the daemon's retries are expected here
    await receiver_rate(args.messages, args.clients)
    await duplicates(args.rows, with_receiver=False)
    await duplicates(args.rows, with_receiver=True)


if __name__ == "__main__":
    asyncio.run(main())
