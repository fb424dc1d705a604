"""`outbox webhook` as production runs it, in its own process: nothing answered 200 is lost to a
SIGKILL mid-burst or a database cut, and slow or excess connections do not take the port down."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from outbox.webhooks.payload import sign
from tests.integration.test_webhooks import (
    SECRET,
    VERIFY_TOKEN,
    cli_env,
    envelope,
    example_status,
    free_port,
)
from tests.proxy import PostgresProxy

pytestmark = pytest.mark.timeout(180)


class Receiver:
    """`outbox webhook` processes on one port, database and OUTBOX_HOME, started one at a time."""

    def __init__(self, database_url: str, home: Path, nofile: int | None = None) -> None:
        self.database_url = database_url
        self.home = home
        self.nofile = nofile
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/webhook"
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        nofile = self.nofile

        def limit_files() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        log = (self.home / "receiver.log").open("ab")
        self.process = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            [sys.executable, "-m", "outbox", "webhook", "--port", str(self.port)],
            env=cli_env(
                OUTBOX_DATABASE_URL=self.database_url,
                OUTBOX_HOME=str(self.home),
                META_APP_SECRET=SECRET,
                META_WEBHOOK_VERIFY_TOKEN=VERIFY_TOKEN,
            ),
            stdout=subprocess.PIPE,
            stderr=log,
            preexec_fn=limit_files,
        )
        log.close()
        assert self.process.stdout is not None
        line = await asyncio.to_thread(self.process.stdout.readline)
        assert b"listening" in line, (self.home / "receiver.log").read_text()

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=20)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def receiver(database_url: str, tmp_path: Path) -> Iterator[Receiver]:
    receiver = Receiver(database_url, tmp_path)
    yield receiver
    receiver.stop()


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[PostgresProxy]:
    proxy = PostgresProxy(database_url)
    yield proxy
    await proxy.close()


async def sent_rows(database_url: str, count: int) -> list[str]:
    """`count` rows sent as wamid.0 … wamid.<count-1>; their wamids."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO outbox_messages (recipient, message, status, message_id, parts, sent_at) "
            "SELECT '92300' || lpad(i::text, 7, '0'), 'm', 'sent', 'wamid.' || i, "
            "jsonb_build_array(jsonb_build_object('wamid', 'wamid.' || i, 'status', 'sent')), "
            "now() FROM generate_series(0, $1 - 1) AS i",
            count,
        )
    finally:
        await conn.close()
    return [f"wamid.{n}" for n in range(count)]


async def burst(
    url: str,
    bodies: list[bytes],
    *,
    clients: int = 40,
    answered: Callable[[int], None] = lambda _: None,
) -> list[bytes]:
    """POST `bodies` from `clients` concurrent senders; the bodies answered 200 (a request that
    fails to connect or loses its connection counts as not answered)."""
    queue = list(reversed(bodies))
    accepted: list[bytes] = []
    timeout = aiohttp.ClientTimeout(total=60)

    async def client(session: aiohttp.ClientSession) -> None:
        while queue:
            body = queue.pop()
            headers = {"X-Hub-Signature-256": sign(SECRET, body)}
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    if response.status == 200:
                        accepted.append(body)
                        answered(len(accepted))
            except (TimeoutError, aiohttp.ClientError):
                continue

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return accepted


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


async def all_stored_and_applied(
    database_url: str, accepted: list[bytes], wamids: list[str]
) -> None:
    """Every accepted body is in outbox_webhooks and applied: its row is delivered."""
    conn = await asyncpg.connect(database_url)
    try:

        async def done() -> bool:
            stored = await conn.fetchval(
                "SELECT count(DISTINCT body) FROM outbox_webhooks "
                "WHERE body = ANY($1::bytea[]) AND applied_at IS NOT NULL",
                accepted,
            )
            delivered = await conn.fetchval(
                "SELECT count(*) FROM outbox_messages WHERE status = 'delivered' "
                "AND message_id = ANY($1::text[])",
                wamids,
            )
            return bool(stored == len(accepted) and delivered == len(wamids))

        await eventually(done)
    finally:
        await conn.close()


def bodies_for(wamids: list[str]) -> list[bytes]:
    return [envelope(example_status(wamid=wamid)) for wamid in wamids]


def wamids_of(accepted: list[bytes], wamids: list[str]) -> list[str]:
    by_body = dict(zip(bodies_for(wamids), wamids, strict=True))
    return [by_body[body] for body in accepted]


async def test_nothing_answered_200_is_lost_to_a_sigkill_mid_burst(
    receiver: Receiver, database_url: str
) -> None:
    wamids = await sent_rows(database_url, 1500)
    await receiver.start()

    def kill_at_300(count: int) -> None:
        if count == 300:
            receiver.kill()

    accepted = await burst(receiver.url, bodies_for(wamids), answered=kill_at_300)
    assert 300 <= len(accepted) < len(wamids)
    await receiver.start()
    await all_stored_and_applied(database_url, accepted, wamids_of(accepted, wamids))


async def test_posts_during_a_database_cut_are_answered_200_and_stored_when_it_is_back(
    receiver: Receiver, proxy: PostgresProxy, database_url: str
) -> None:
    wamids = await sent_rows(database_url, 300)
    receiver.database_url = await proxy.start()
    await receiver.start()
    before = await burst(receiver.url, bodies_for(wamids[:100]))
    proxy.cut()
    during = await burst(receiver.url, bodies_for(wamids[100:]))
    assert len(before) + len(during) == len(wamids)
    proxy.restore()
    await all_stored_and_applied(database_url, before + during, wamids)


async def test_bodies_spooled_during_a_cut_survive_a_sigkill(
    receiver: Receiver, proxy: PostgresProxy, database_url: str
) -> None:
    wamids = await sent_rows(database_url, 100)
    receiver.database_url = await proxy.start()
    await receiver.start()
    proxy.cut()
    accepted = await burst(receiver.url, bodies_for(wamids))
    assert len(accepted) == len(wamids)
    receiver.kill()
    proxy.restore()
    await receiver.start()
    await all_stored_and_applied(database_url, accepted, wamids)


async def slow_socket(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that sends half a request header and then nothing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/js")
    await writer.drain()
    return reader, writer


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    with contextlib.suppress(ConnectionError):
        await reader.read()
    return True


async def test_a_signed_post_is_answered_while_more_slow_sockets_than_file_descriptors_are_open(
    database_url: str, tmp_path: Path
) -> None:
    receiver = Receiver(database_url, tmp_path, nofile=256)
    wamids = await sent_rows(database_url, 1)
    await receiver.start()
    sockets = []
    try:
        sockets = [await slow_socket(receiver.port) for _ in range(300)]
        accepted = await burst(receiver.url, bodies_for(wamids), clients=1)
        assert len(accepted) == 1
    finally:
        for _, writer in sockets:
            writer.close()
        receiver.stop()


async def test_slow_sockets_are_closed_after_the_deadline(
    receiver: Receiver, database_url: str
) -> None:
    await receiver.start()
    sockets = [await slow_socket(receiver.port) for _ in range(300)]
    try:
        closed = await asyncio.wait_for(
            asyncio.gather(*(closed_by_peer(reader) for reader, _ in sockets)), 90
        )
        assert all(closed)
    finally:
        for _, writer in sockets:
            writer.close()
