"""The receiver's intake: bodies made durable in batches (one commit for many requests), a local
spool while the database is away, replayed oldest first once it is back, applied off the request
path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.webhooks import create_app
from outbox.webhooks.app import spool_folder
from outbox.webhooks.payload import sign
from outbox.webhooks.spool import Spool
from tests.integration.test_webhooks import (
    SECRET,
    T0,
    VERIFY_TOKEN,
    envelope,
    example_status,
    row,
    scalar,
    sent_row,
)
from tests.proxy import PostgresProxy

pytestmark = pytest.mark.timeout(90)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def settings_for(url: str, home: Path) -> outbox.Settings:
    return outbox.Settings(
        database_url=url, app_secret=SECRET, webhook_verify_token=VERIFY_TOKEN, home=home
    )


async def post(client: TestClient[Any, Any], body: bytes) -> int:
    answer = await client.post(
        "/webhook", data=body, headers={"X-Hub-Signature-256": sign(SECRET, body)}
    )
    return answer.status


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[PostgresProxy]:
    proxy = PostgresProxy(database_url)
    yield proxy
    await proxy.close()


@pytest.fixture
async def cut_client(
    proxy: PostgresProxy, tmp_path: Path
) -> AsyncIterator[tuple[TestClient[Any, Any], Path]]:
    """A receiver whose database goes through `proxy`, with its spool under tmp_path/spool."""
    url = await proxy.start()
    spool = tmp_path / "spool"
    app = create_app(settings_for(url, tmp_path), spool_dir=spool)
    async with TestClient(TestServer(app)) as client:
        yield client, spool


async def test_concurrent_posts_are_committed_together_in_fewer_transactions(
    engine: AsyncEngine, tmp_path: Path, database_url: str
) -> None:
    bodies = [envelope(example_status(wamid=f"wamid.{n}")) for n in range(60)]
    app = create_app(settings_for(database_url, tmp_path))
    async with TestClient(TestServer(app)) as client:
        answers = await asyncio.gather(*(post(client, body) for body in bodies))
    assert answers == [200] * len(bodies)
    assert await scalar(engine, "SELECT count(*) FROM outbox_webhooks") == len(bodies)
    transactions = await scalar(engine, "SELECT count(DISTINCT xmin::text) FROM outbox_webhooks")
    assert transactions < len(bodies)


async def test_a_post_is_answered_while_its_row_is_locked_and_applied_once_released(
    engine: AsyncEngine, tmp_path: Path, database_url: str
) -> None:
    row_id = await sent_row(engine, "wamid.A")
    app = create_app(settings_for(database_url, tmp_path))
    async with TestClient(TestServer(app)) as client, engine.connect() as locker:
        transaction = await locker.begin()
        await locker.execute(
            sa.text("SELECT 1 FROM outbox_messages WHERE id = :id FOR UPDATE"), {"id": row_id}
        )
        assert await post(client, envelope(example_status(wamid="wamid.A"))) == 200
        assert await scalar(engine, "SELECT count(*) FROM outbox_webhooks") == 1
        await transaction.rollback()

        async def delivered() -> bool:
            return (await row(engine, row_id))["status"] == "delivered"

        await eventually(delivered)


async def test_a_post_while_the_database_is_cut_is_spooled_and_answered_200(
    cut_client: tuple[TestClient[Any, Any], Path], proxy: PostgresProxy, engine: AsyncEngine
) -> None:
    client, spool = cut_client
    proxy.cut()
    assert await post(client, envelope(example_status(wamid="wamid.A"))) == 200
    assert len(list(spool.glob("*.spool"))) == 1
    assert await scalar(engine, "SELECT count(*) FROM outbox_webhooks") == 0


async def test_spooled_bodies_are_stored_and_applied_once_the_database_is_back(
    cut_client: tuple[TestClient[Any, Any], Path], proxy: PostgresProxy, engine: AsyncEngine
) -> None:
    client, spool = cut_client
    row_id = await sent_row(engine, "wamid.A")
    proxy.cut()
    assert await post(client, envelope(example_status(wamid="wamid.A"))) == 200
    read = envelope(example_status(wamid="wamid.A", status="read"))
    assert await post(client, read) == 200
    proxy.restore()

    async def read_and_replayed() -> bool:
        return (await row(engine, row_id))["status"] == "read" and not list(spool.glob("*.spool"))

    await eventually(read_and_replayed)
    assert await scalar(engine, "SELECT count(*) FROM outbox_webhooks") == 2


async def test_a_full_spool_answers_503(
    proxy: PostgresProxy, tmp_path: Path, engine: AsyncEngine
) -> None:
    url = await proxy.start()
    body = envelope(example_status(wamid="wamid.A"))
    app = create_app(settings_for(url, tmp_path), spool_dir=tmp_path / "spool", spool_bytes=100)
    async with TestClient(TestServer(app)) as client:
        proxy.cut()
        assert len(body) > 100
        assert await post(client, body) == 503
    assert not list((tmp_path / "spool").glob("*.spool"))


async def test_a_spool_left_by_a_stopped_receiver_is_replayed_oldest_first_at_start(
    engine: AsyncEngine, tmp_path: Path, database_url: str
) -> None:
    spool = Spool(spool_folder(tmp_path, database_url), 1 << 20)
    spool.open()
    first = envelope(example_status(wamid="wamid.1"))
    second = envelope(example_status(wamid="wamid.2"))
    spool.write([first])
    spool.write([second])
    app = create_app(settings_for(database_url, tmp_path))
    async with TestClient(TestServer(app)):

        async def replayed() -> bool:
            # A file goes once its bodies are stored: just after their rows appear.
            stored = await scalar(engine, "SELECT count(*) FROM outbox_webhooks")
            return stored == 2 and not spool.files()

        await eventually(replayed)
        async with engine.connect() as conn:
            stored = await conn.execute(sa.text("SELECT body FROM outbox_webhooks ORDER BY id"))
            assert [r[0] for r in stored] == [first, second]


async def test_a_body_that_stops_arriving_is_answered_408(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, engine: AsyncEngine
) -> None:
    monkeypatch.setattr("outbox.webhooks.app.BODY_TIMEOUT", 0.5)
    body = envelope(example_status(wamid="wamid.A"))
    app = create_app(settings_for(database_url, tmp_path))
    async with TestClient(TestServer(app)) as client:
        reader, writer = await asyncio.open_connection(client.host, client.port)
        head = (
            f"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            f"X-Hub-Signature-256: {sign(SECRET, body)}\r\n\r\n"
        )
        writer.write(head.encode() + body[: len(body) // 2])
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert await scalar(engine, "SELECT count(*) FROM outbox_webhooks") == 0


async def test_a_batch_keeps_the_order_a_messages_statuses_arrived_in_its_history(
    engine: AsyncEngine, tmp_path: Path, database_url: str
) -> None:
    row_id = await sent_row(engine, "wamid.A")
    other = await sent_row(engine, "wamid.B")
    arrived = [("wamid.B", "read"), ("wamid.A", "sent"), ("wamid.A", "delivered")]
    arrived += [("wamid.A", "read"), ("wamid.B", "sent")]
    async with engine.begin() as conn:
        await outbox.store.insert_webhooks(
            conn,
            [envelope(example_status(wamid=w, status=s, timestamp=T0)) for w, s in arrived],
        )
    app = create_app(settings_for(database_url, tmp_path))
    async with TestClient(TestServer(app)):

        async def applied() -> bool:
            unapplied = "SELECT count(*) FROM outbox_webhooks WHERE applied_at IS NULL"
            return await scalar(engine, unapplied) == 0

        await eventually(applied)
    async with engine.connect() as conn:
        kinds = {
            row: [
                e.kind
                for e in await outbox.status.get_history(conn, row)
                if e.kind.startswith("status:")
            ]
            for row in (row_id, other)
        }
    assert kinds == {
        row_id: ["status:sent", "status:delivered", "status:read"],
        other: ["status:read", "status:sent"],
    }


async def test_a_post_while_the_database_hangs_is_spooled_and_stored_once_it_answers(
    cut_client: tuple[TestClient[Any, Any], Path], proxy: PostgresProxy, engine: AsyncEngine
) -> None:
    client, spool = cut_client
    row_id = await sent_row(engine, "wamid.A")
    assert await post(client, envelope(example_status(wamid="wamid.A", status="sent"))) == 200
    proxy.stall()
    assert await post(client, envelope(example_status(wamid="wamid.A"))) == 200
    assert len(list(spool.glob("*.spool"))) == 1
    proxy.restore()

    async def delivered() -> bool:
        return (await row(engine, row_id))["status"] == "delivered"

    await eventually(delivered, within=60)


async def test_bodies_posted_while_spooled_ones_wait_are_stored_after_them(
    cut_client: tuple[TestClient[Any, Any], Path], proxy: PostgresProxy, engine: AsyncEngine
) -> None:
    """Once the database is back, a new body does not overtake the spooled ones: a message's
    statuses are stored, and applied, in the order they arrived (a delivered after a failed
    leaves the row failed)."""
    client, _ = cut_client
    row_id = await sent_row(engine, "wamid.A")
    proxy.cut()
    failed = example_status("status_webhook_failed_130472.json", wamid="wamid.A")
    assert await post(client, envelope(failed)) == 200
    proxy.restore()
    assert await post(client, envelope(example_status(wamid="wamid.A"))) == 200

    async def both_stored() -> bool:
        return await scalar(engine, "SELECT count(*) FROM outbox_statuses") == 2

    await eventually(both_stored)
    order = await scalar(engine, "SELECT string_agg(status, ',' ORDER BY id) FROM outbox_statuses")
    assert order == "failed,delivered"
    assert (await row(engine, row_id))["status"] == "failed"
