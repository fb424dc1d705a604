"""`outbox webhook`'s server guards, in process: a deadline for request headers, and a bound on
connections that closes the oldest idle one to make room."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from outbox.metrics.receiver import ReceiverMetrics
from outbox.webhooks import create_app
from outbox.webhooks import server as webhook_server
from outbox.webhooks.app import METRICS
from outbox.webhooks.payload import sign
from tests.integration.test_receiver_intake import settings_for
from tests.integration.test_webhooks import SECRET, envelope, example_status, free_port

pytestmark = pytest.mark.timeout(40)


async def serving(
    database_url: str, tmp_path: Path, header_timeout: float
) -> tuple[int, ReceiverMetrics, webhook_server.Served]:
    port = free_port()
    app = create_app(settings_for(database_url, tmp_path))
    served = await webhook_server.serve(app, "127.0.0.1", port, header_timeout=header_timeout)
    return port, app[METRICS], served


@pytest.fixture
async def port(database_url: str, tmp_path: Path) -> AsyncIterator[int]:
    """A receiver served with a 1 s header deadline."""
    port, _, served = await serving(database_url, tmp_path, 1.0)
    yield port
    await served.close()


@pytest.fixture
async def bounded(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[int, ReceiverMetrics]]:
    """A receiver served with at most 20 connections (and a header deadline far away)."""
    monkeypatch.setattr(webhook_server, "MAX_CONNECTIONS", 20)
    port, metrics, served = await serving(database_url, tmp_path, 50.0)
    yield port, metrics
    await served.close()


async def half_header(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    await writer.drain()
    return reader, writer


async def closed(reader: asyncio.StreamReader) -> bool:
    with contextlib.suppress(ConnectionError):
        return await reader.read() == b""
    return True


async def signed_post(port: int) -> int:
    body = envelope(example_status(wamid="wamid.A"))
    headers = {"X-Hub-Signature-256": sign(SECRET, body)}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}/webhook", data=body, headers=headers) as answer,
    ):
        return answer.status


async def test_a_connection_whose_headers_do_not_arrive_in_time_is_closed(port: int) -> None:
    reader, writer = await half_header(port)
    try:
        assert await asyncio.wait_for(closed(reader), 30)
    finally:
        writer.close()


async def test_a_connection_that_answered_is_kept_for_its_next_request(port: int) -> None:
    body = envelope(example_status(wamid="wamid.A"))
    headers = {"X-Hub-Signature-256": sign(SECRET, body)}
    url = f"http://127.0.0.1:{port}/webhook"
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(3):
            async with session.post(url, data=body, headers=headers) as answer:
                assert answer.status == 200


async def test_at_the_bound_a_new_connection_closes_the_oldest_idle_one(
    bounded: tuple[int, ReceiverMetrics],
) -> None:
    port, metrics = bounded
    sockets = [await half_header(port) for _ in range(20)]
    try:
        assert await signed_post(port) == 200
        oldest_reader, _ = sockets[0]
        assert await closed(oldest_reader)
        assert metrics.connections_closed.labels("evicted")._value.get() == 1
        assert metrics.connections_closed.labels("deadline")._value.get() == 0
    finally:
        for _, writer in sockets:
            writer.close()
