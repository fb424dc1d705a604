"""An upload without an answer (a timeout, no connection) is the sender's only when a lookup of
the phone number goes unanswered too: one file's upload hanging fails its rows after their
attempts, with no outage; the API down for everything is an outage, and uses no attempts."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox import whatsapp_client
from outbox.delivery.daemon import Daemon
from outbox.simulator import Simulator
from tests.integration.test_media import _enqueue, _file, _rows, _until, _upload_settings

UPLOAD_TIMEOUT = 0.5
WITHIN = 20.0


@pytest.fixture
def hanging_uploads(simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every upload hangs past the daemon's upload timeout (made short); lookups answer."""
    monkeypatch.setattr(whatsapp_client, "upload_timeout", lambda request_timeout: UPLOAD_TIMEOUT)

    async def hang(request: web.Request, sender: str) -> web.Response:
        simulator.media.upload_requests += 1
        await asyncio.sleep(UPLOAD_TIMEOUT * 6)  # past the timeout, not the test
        return web.json_response({})

    monkeypatch.setattr(simulator.media, "upload", hang)


@pytest.fixture
async def daemon(settings: outbox.Settings) -> AsyncIterator[Daemon]:
    """A daemon uploading media, three attempts a row."""
    running = Daemon(dataclasses.replace(_upload_settings(settings), max_attempts=3))
    task = asyncio.create_task(running.run())
    yield running
    running.stop()
    await asyncio.wait_for(task, 30)


async def _states_until(daemon: Daemon, done: Callable[[], Awaitable[bool]]) -> set[str]:
    """The daemon's sending states seen until `done()`, or for WITHIN seconds."""
    states: set[str] = set()
    deadline = time.monotonic() + WITHIN
    while time.monotonic() < deadline and not await done():
        states.add(daemon.health()["status"])
        await asyncio.sleep(0.01)
    return states


async def _attempts(engine: AsyncEngine, ids: list[int]) -> list[int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT attempts FROM outbox_messages WHERE id = ANY(:ids) ORDER BY id"),
            {"ids": ids},
        )
        return [int(row[0]) for row in rows]


def _all_failed(engine: AsyncEngine, ids: list[int]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return all(status == "failed" for status, _ in await _rows(engine, ids))

    return check


@pytest.mark.usefixtures("hanging_uploads")
async def test_an_upload_hanging_past_its_timeout_declares_no_outage(
    engine: AsyncEngine, simulator: Simulator, daemon: Daemon
) -> None:
    media = await _enqueue(engine, _file(simulator, "menu.pdf"), count=5)
    states = await _states_until(daemon, _all_failed(engine, media))
    assert "outage" not in states


@pytest.mark.usefixtures("hanging_uploads")
async def test_an_upload_hanging_past_its_timeout_fails_its_rows_after_their_attempts(
    engine: AsyncEngine, simulator: Simulator, daemon: Daemon
) -> None:
    media = await _enqueue(engine, _file(simulator, "menu.pdf"), count=5)
    await _until(_all_failed(engine, media), WITHIN, "the rows to fail")
    reason = "media part 1: the media upload timed out (gave up after 3 attempts)"
    assert await _rows(engine, media) == [("failed", reason)] * 5
    assert await _attempts(engine, media) == [3] * 5


async def test_uploads_and_lookups_both_unanswered_are_an_outage_that_uses_no_attempts(
    engine: AsyncEngine, simulator: Simulator, daemon: Daemon
) -> None:
    simulator.unreachable = True  # every request cut off, lookups too
    media = await _enqueue(engine, _file(simulator, "menu.pdf"), count=5)

    async def in_outage() -> bool:
        return daemon.health()["status"] == "outage"

    async def waiting_with_no_attempt_used() -> bool:
        statuses = [status for status, _ in await _rows(engine, media)]
        return statuses == ["pending"] * 5 and await _attempts(engine, media) == [0] * 5

    await _until(in_outage, WITHIN, "an outage")
    await asyncio.sleep(1.0)  # rows meeting the outage, and probes, meanwhile
    # Checked between probes: a probe's row holds an attempt while it is being sent.
    await _until(waiting_with_no_attempt_used, 5, "every row pending, no attempt used")
    assert await in_outage()
