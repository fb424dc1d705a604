"""pgqueuer 1.6 draining the same backlog, as its own process: one consumer (a QueueManager on
one asyncpg connection) whose entrypoint makes one aiohttp POST per job, the same request as
`outbox run` sends for a one-part text row, and exits in pgqueuer's drain mode once the queue is
empty. It enqueues nothing: benchmarks/throughput.py installs pgqueuer's schema and fills its
queue with `Queries.enqueue` (payload: JSON with the recipient and the text) beforehand.

Settings, per pgqueuer's performance-tuning guide: a single direct asyncpg connection for the
QueueManager (`AsyncpgDriver`, not a pool, so that LISTEN stays on one connection);
`max_concurrent_tasks` = IN_FLIGHT, the same ceiling on jobs in flight as `outbox run
--concurrency` and the reference loops; `batch_size` raised from its default of 10 for these
short jobs, to 100 like the other drainers' claims but at most IN_FLIGHT / 2 (pgqueuer requires
max_concurrent_tasks >= 2 x batch_size): 32 at 64 in flight, 100 at 1,000; `dequeue_timeout` of
1 s, the poll interval `outbox run` gets here. The harness also applies `pgq autovac`'s table
settings. The durability stays pgqueuer's default (logged tables, like the outbox's), as do the
heartbeat and the log aggregation. On uvloop's event loop when it is installed, as `outbox run`.

With `record`, each job also does what a pgqueuer user needs to know what was sent: before the
job completes, its handler writes the wamid to the app's own row (`app_messages`, named by the
job's payload), one UPDATE per job through an asyncpg pool of asyncpg's default size. `outbox
run` records each part's wamid too, batched across rows.

    python -m benchmarks.pgqueuer_drain DSN GRAPH_URL IN_FLIGHT [record]
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta

import aiohttp
import asyncpg
from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
from pgqueuer.types import QueueExecutionMode

from benchmarks.reference import PHONE, TOKEN, run

ENTRYPOINT = "whatsapp_text"
APP_TABLE = """
    CREATE TABLE IF NOT EXISTS app_messages (
        id bigint PRIMARY KEY, recipient text NOT NULL, body text NOT NULL,
        wamid text, sent_at timestamptz)
"""
RECORD = "UPDATE app_messages SET wamid = $1, sent_at = now() WHERE id = $2"


def batch_size(in_flight: int) -> int:
    return max(1, min(100, in_flight // 2))


async def drain(dsn: str, graph_url: str, in_flight: int, record: bool = False) -> None:
    connection = await asyncpg.connect(dsn)
    pool = await asyncpg.create_pool(dsn) if record else None
    url = f"{graph_url}/v23.0/{PHONE}/messages"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    connector = aiohttp.TCPConnector(limit=in_flight)
    try:
        async with aiohttp.ClientSession(connector=connector) as http:
            manager = QueueManager(Queries(AsyncpgDriver(connection)))

            @manager.entrypoint(ENTRYPOINT)
            async def send(job: Job) -> None:
                message = json.loads(job.payload or b"{}")
                payload = {
                    "messaging_product": "whatsapp",
                    "to": message["to"],
                    "type": "text",
                    "text": {"body": message["body"]},
                }
                async with http.post(url, json=payload, headers=headers) as response:
                    body = await response.json()
                wamid = body["messages"][0]["id"]
                if not wamid:  # a failed job, logged as an exception
                    raise ValueError(f"no wamid in {body}")
                if pool is not None:
                    await pool.execute(RECORD, wamid, message["id"])

            await manager.run(
                dequeue_timeout=timedelta(seconds=1),
                batch_size=batch_size(in_flight),
                mode=QueueExecutionMode.drain,
                max_concurrent_tasks=in_flight,
            )
    finally:
        if pool is not None:
            await pool.close()
        await connection.close()


if __name__ == "__main__":
    run(drain(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:] == ["record"]))
