"""Receiver figures: how many statuses per second `outbox webhook` accepts and applies, how fast
it answers, how it behaves while its database is cut, and under a slowloris.

A real `outbox webhook` process (with systemd's default open-files limit, soft 1024) against a
scratch database on OUTBOX_DATABASE_URL's server (else the embedded one), dropped afterwards;
for the cut, its database connections go through a local TCP proxy (tests/proxy.py).
Loopback only, bounded in count and time. Prints figures, never pass/fail.

    python -m benchmarks.receiver [--bodies 2000] [--statuses 5] [--clients 100,1000]
                                  [--cut-seconds 20] [--slow-sockets 1100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg

from benchmarks.scratch import scratch_database
from outbox.webhooks.payload import sign
from tests.proxy import PostgresProxy

SECRET = "bench-app-secret"
PHONE = "1234567890"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def systemd_default_nofile() -> None:
    """The open-files limit a systemd service gets by default: soft 1024, the hard one high."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))


@asynccontextmanager
async def receiver_process(dsn: str) -> AsyncIterator[str]:
    """`outbox webhook` in its own process, with a fresh OUTBOX_HOME for its spool."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="outbox-bench-") as home:
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "outbox"),
            "webhook",
            "--port",
            str(port),
            env={
                **os.environ,
                "OUTBOX_DATABASE_URL": dsn,
                "OUTBOX_HOME": home,
                "META_APP_SECRET": SECRET,
                "META_WEBHOOK_VERIFY_TOKEN": "v",
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=systemd_default_nofile,
        )
        try:
            assert process.stdout is not None
            await asyncio.wait_for(process.stdout.readline(), 30)  # "listening on ..."
            yield f"http://127.0.0.1:{port}/webhook"
        finally:
            process.send_signal(signal.SIGTERM)
            await process.wait()


def body(wamids: list[str], status: str = "delivered") -> bytes:
    """One webhook carrying a status for each wamid (wamid.b<row id - 1>, with its callback
    data as the daemon sets it), as Meta batches them."""
    statuses = [
        {
            "id": w,
            "status": status,
            "timestamp": str(int(time.time())),
            "recipient_id": "9230",
            "biz_opaque_callback_data": f"outbox:{int(w.removeprefix('wamid.b')) + 1}:0",
        }
        for w in wamids
    ]
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": PHONE},
        "statuses": statuses,
    }
    envelope = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}],
    }
    return json.dumps(envelope).encode()


async def sent_rows(conn: asyncpg.Connection, first: int, count: int) -> list[str]:
    await conn.execute(
        "INSERT INTO outbox_messages (recipient, message, status, message_id, parts, sent_at) "
        "SELECT '92300' || lpad(i::text, 7, '0'), 'm', 'sent', 'wamid.b' || i, "
        "jsonb_build_array(jsonb_build_object('wamid', 'wamid.b' || i, 'status', 'sent')), "
        "now() FROM generate_series($1::int, $2::int) AS i",
        first,
        first + count - 1,
    )
    return [f"wamid.b{i}" for i in range(first, first + count)]


class Poster:
    """Concurrent senders of signed bodies; answer times and outcomes."""

    def __init__(self, url: str, clients: int) -> None:
        self.url = url
        self.clients = clients
        self.latencies: list[float] = []
        self.answers: dict[int, int] = {}
        self.accepted: list[bytes] = []

    async def post_all(self, bodies: list[bytes]) -> float:
        """POST every body (each once); the seconds it took."""
        queue = list(reversed(bodies))
        connector = aiohttp.TCPConnector(limit=self.clients)
        timeout = aiohttp.ClientTimeout(total=120)
        started = time.perf_counter()
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def client() -> None:
                while queue:
                    await self.post(session, queue.pop())

            await asyncio.gather(*(client() for _ in range(self.clients)))
        return time.perf_counter() - started

    async def post(self, session: aiohttp.ClientSession, data: bytes) -> int:
        headers = {"X-Hub-Signature-256": sign(SECRET, data)}
        started = time.perf_counter()
        try:
            async with session.post(self.url, data=data, headers=headers) as response:
                await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError):
            status = 0
        self.latencies.append(time.perf_counter() - started)
        self.answers[status] = self.answers.get(status, 0) + 1
        if status == 200:
            self.accepted.append(data)
        return status


def wamids_in(bodies: list[bytes]) -> list[str]:
    """The wamids the statuses of `bodies` name."""
    return [
        status["id"]
        for data in bodies
        for status in json.loads(data)["entry"][0]["changes"][0]["value"]["statuses"]
    ]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1000 if ordered else 0


async def wait_applied(conn: asyncpg.Connection, wamids: list[str], limit: float) -> float | None:
    """Seconds until every row of `wamids` is delivered (None past `limit`)."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        done = await conn.fetchval(
            "SELECT count(*) FROM outbox_messages WHERE message_id = ANY($1::text[]) "
            "AND status = 'delivered'",
            wamids,
        )
        if done == len(wamids):
            return time.perf_counter() - started
        await asyncio.sleep(0.05)
    return None


async def rate(bodies: int, per_body: int, clients: int) -> None:
    async with scratch_database() as (dsn, version), receiver_process(dsn) as url:
        conn = await asyncpg.connect(dsn)
        wamids = await sent_rows(conn, 0, bodies * per_body)
        batches = [body(wamids[i : i + per_body]) for i in range(0, len(wamids), per_body)]
        poster = Poster(url, clients)
        elapsed = await poster.post_all(batches)
        applied = await wait_applied(conn, wamids_in(poster.accepted), 300)
        await conn.close()
        statuses = len(poster.accepted) * per_body
        print(
            f"{clients} clients, {bodies} bodies of {per_body} statuses (PostgreSQL {version}):"
            f" answers {poster.answers}"
        )
        print(
            f"  accepted {statuses / elapsed:,.0f} statuses/s; answer p50 "
            f"{percentile(poster.latencies, 0.5):.1f} ms, p99 "
            f"{percentile(poster.latencies, 0.99):.1f} ms, max "
            f"{percentile(poster.latencies, 1.0):.0f} ms"
        )
        if applied is None:
            print("  not all applied within 300 s")
        else:
            total = elapsed + applied
            print(
                f"  applied {statuses / total:,.0f} statuses/s (all applied "
                f"{applied:.2f} s after the last answer)"
            )


async def steady(offered: int, seconds: float, per_body: int) -> None:
    """Meta's way: bodies arrive at a steady `offered` statuses per second (open loop, each on
    its own request, at most 500 at once), not as fast as answers come back."""
    count = int(offered * seconds / per_body)
    async with scratch_database() as (dsn, _), receiver_process(dsn) as url:
        conn = await asyncpg.connect(dsn)
        wamids = await sent_rows(conn, 0, count * per_body)
        batches = [body(wamids[i : i + per_body]) for i in range(0, len(wamids), per_body)]
        poster = Poster(url, 500)
        connector = aiohttp.TCPConnector(limit=500)
        interval = per_body / offered
        started = time.perf_counter()
        async with aiohttp.ClientSession(connector=connector) as session:
            tasks = []
            for n, data in enumerate(batches):
                await asyncio.sleep(max(0.0, started + n * interval - time.perf_counter()))
                tasks.append(asyncio.create_task(poster.post(session, data)))
            await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        applied = await wait_applied(conn, wamids_in(poster.accepted), 300)
        await conn.close()
        print(
            f"steady {offered:,} statuses/s offered for {seconds:.0f} s ({per_body} per body): "
            f"answers {poster.answers}, accepted {len(poster.accepted) * per_body / elapsed:,.0f}"
            f" statuses/s"
        )
        print(
            f"  answer p50 {percentile(poster.latencies, 0.5):.1f} ms, p99 "
            f"{percentile(poster.latencies, 0.99):.1f} ms, max "
            f"{percentile(poster.latencies, 1.0):.0f} ms; "
            + (
                f"all applied {applied:.2f} s after the last answer"
                if applied is not None
                else "not all applied within 300 s"
            )
        )


async def cut(cut_seconds: float, clients: int, *, stall: bool = False) -> None:
    """Steady posting; the database cut (connections refused) or stalled (a black hole) for
    `cut_seconds` in the middle; answer times during the cut, and whether every body answered
    200 ends up stored and applied."""
    async with scratch_database() as (dsn, _):
        proxy = PostgresProxy(dsn)
        proxied = await proxy.start()
        async with receiver_process(proxied) as url:
            conn = await asyncpg.connect(dsn)
            wamids = await sent_rows(conn, 0, 20_000)
            poster = Poster(url, clients)
            during = Poster(url, clients)
            stop = asyncio.Event()
            cut_now = asyncio.Event()
            next_wamid = iter(wamids)

            async def client(session: aiohttp.ClientSession) -> None:
                while not stop.is_set():
                    wamid = next(next_wamid, None)
                    if wamid is None:
                        return
                    target = during if cut_now.is_set() else poster
                    await target.post(session, body([wamid]))
                    await asyncio.sleep(0.05)

            connector = aiohttp.TCPConnector(limit=clients)
            async with aiohttp.ClientSession(connector=connector) as session:
                tasks = [asyncio.create_task(client(session)) for _ in range(clients)]
                await asyncio.sleep(3)
                proxy.stall() if stall else proxy.cut()
                cut_now.set()
                await asyncio.sleep(cut_seconds)
                proxy.restore()
                cut_now.clear()
                await asyncio.sleep(3)
                stop.set()
                await asyncio.gather(*tasks)
            accepted = poster.accepted + during.accepted
            applied = await wait_applied(conn, wamids_in(accepted), 120)
            stored = await conn.fetchval(
                "SELECT count(DISTINCT body) FROM outbox_webhooks WHERE body = ANY($1::bytea[])",
                accepted,
            )
            await conn.close()
        await proxy.close()
        kind = "stalled (a black hole)" if stall else "cut (connections refused)"
        print(f"database {kind} for {cut_seconds:.0f} s, {clients} clients posting steadily:")
        print(
            f"  during the cut: {sum(during.answers.values())} posts, answers {during.answers}, "
            f"p50 {percentile(during.latencies, 0.5):.1f} ms, p99 "
            f"{percentile(during.latencies, 0.99):.1f} ms, max "
            f"{percentile(during.latencies, 1.0):.0f} ms"
        )
        print(
            f"  before and after it: {sum(poster.answers.values())} posts, answers "
            f"{poster.answers}, p99 {percentile(poster.latencies, 0.99):.1f} ms"
        )
        lost = len(accepted) - stored
        print(
            f"  {len(accepted)} answered 200: {stored} stored, {lost} lost; "
            + ("all applied" if applied is not None else "NOT all applied within 120 s")
            + (f" {applied:.1f} s after the end" if applied is not None else "")
        )


async def slowloris(sockets: int) -> None:
    """`sockets` connections sending half a header; a normal POST meanwhile, and how long the
    slow ones stay open."""
    async with scratch_database() as (dsn, _), receiver_process(dsn) as url:
        port = int(url.split(":")[2].split("/")[0])
        conn = await asyncpg.connect(dsn)
        wamids = await sent_rows(conn, 0, 20)
        await conn.close()
        started = time.perf_counter()
        slow: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        for _ in range(sockets):
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
                slow.append((reader, writer))
        opened = time.perf_counter() - started
        poster = Poster(url, 1)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for wamid in wamids:
                await poster.post(session, body([wamid]))

        async def closed(reader: asyncio.StreamReader) -> float:
            with contextlib.suppress(ConnectionError):
                await reader.read()
            return time.perf_counter() - started

        try:
            ends = await asyncio.wait_for(
                asyncio.gather(*(closed(reader) for reader, _ in slow)), 120
            )
        except TimeoutError:
            ends = []
        for _, writer in slow:
            writer.close()
        print(f"slowloris: {len(slow)} sockets opened in {opened:.1f} s, half a header each:")
        print(
            f"  {len(wamids)} signed POSTs meanwhile: answers {poster.answers}, p50 "
            f"{percentile(poster.latencies, 0.5):.1f} ms, max "
            f"{percentile(poster.latencies, 1.0):.0f} ms"
        )
        if ends:
            print(f"  every slow socket closed by the receiver, the last {max(ends):.1f} s in")
        else:
            print("  slow sockets still open after 120 s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bodies", type=int, default=2000)
    parser.add_argument("--statuses", type=int, default=5, help="statuses per body")
    parser.add_argument("--clients", default="100,1000")
    parser.add_argument("--cut-seconds", type=float, default=20.0)
    parser.add_argument("--slow-sockets", type=int, default=1100)
    parser.add_argument("--offered", default="2000,4000", help="steady statuses/s offered")
    parser.add_argument("--only", choices=("rate", "steady", "cut", "slowloris"))
    args = parser.parse_args()
    if args.only in (None, "rate"):
        for clients in (int(n) for n in args.clients.split(",")):
            await rate(args.bodies, args.statuses, clients)
    if args.only in (None, "steady"):
        for offered in (int(n) for n in args.offered.split(",")):
            await steady(offered, 10.0, args.statuses)
    if args.only in (None, "cut"):
        await cut(args.cut_seconds, 20)
        await cut(args.cut_seconds, 20, stall=True)
    if args.only in (None, "slowloris"):
        await slowloris(min(args.slow_sockets, 1100))


if __name__ == "__main__":
    asyncio.run(main())
