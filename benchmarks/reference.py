"""The bare reference loop of issue 9, as its own process: claim up to 100 rows with SKIP LOCKED,
send each with aiohttp, mark the answered ones sent with one batched UPDATE. No leases checked,
no parts, no order, no retries: the ceiling a safe daemon is measured against. benchmarks/bare.py
runs the same loop on a bare table of its own.

Like `outbox run`, it runs on uvloop's event loop when uvloop is installed.

    python -m benchmarks.reference DSN GRAPH_URL IN_FLIGHT
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

import aiohttp
import asyncpg

CLAIM = """
UPDATE outbox_messages SET status = 'sending', locked_until = now() + interval '30 seconds',
       attempts = attempts + 1
WHERE id IN (SELECT id FROM outbox_messages WHERE status = 'pending' AND available_at <= now()
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING id, recipient, message
"""
DONE = """
UPDATE outbox_messages AS m SET status = 'sent', message_id = u.wamid, sent_at = now(),
       updated_at = now()
FROM unnest($1::bigint[], $2::text[]) AS u(id, wamid) WHERE m.id = u.id
"""
TOKEN, PHONE = "bench-token", "1234567890"


def run(main: Coroutine[Any, Any, None]) -> None:
    """asyncio.run(main), on uvloop's loop when it is installed, as `outbox run` does."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


async def drain(
    dsn: str, graph_url: str, in_flight: int, claim: str = CLAIM, done: str = DONE
) -> None:
    """Claim with `claim` (returning id, recipient, message), record with `done` (ids, wamids)."""
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=2)
    slots = asyncio.Semaphore(in_flight)
    answered: list[tuple[int, str]] = []
    url = f"{graph_url}/v23.0/{PHONE}/messages"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    sends: set[asyncio.Task[None]] = set()
    stopping = asyncio.Event()

    async def send(http: aiohttp.ClientSession, row: asyncpg.Record) -> None:
        payload = {
            "messaging_product": "whatsapp",
            "to": row["recipient"],
            "type": "text",
            "text": {"body": row["message"]},
        }
        try:
            async with http.post(url, json=payload, headers=headers) as response:
                body = await response.json()
            answered.append((row["id"], body["messages"][0]["id"]))
        finally:
            slots.release()

    async def record() -> None:
        while True:
            if answered:
                batch = answered[:]
                del answered[: len(batch)]
                await pool.execute(done, [i for i, _ in batch], [w for _, w in batch])
            elif stopping.is_set():
                return
            else:
                await asyncio.sleep(0.002)

    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as http:
        recorder = asyncio.create_task(record())
        while True:
            await slots.acquire()
            free = 1
            while free < min(100, in_flight) and not slots.locked():
                await slots.acquire()
                free += 1
            rows = await pool.fetch(claim, free)
            for _ in range(free - len(rows)):
                slots.release()
            for row in rows:
                task = asyncio.create_task(send(http, row))
                sends.add(task)
                task.add_done_callback(sends.discard)
            if not rows:
                if not sends:
                    break
                await asyncio.sleep(0.005)
        stopping.set()
        await recorder
    await pool.close()


if __name__ == "__main__":
    run(drain(sys.argv[1], sys.argv[2], int(sys.argv[3])))
