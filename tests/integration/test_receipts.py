"""End to end: the daemon sends, the simulator posts signed status webhooks as Meta does, the
receiver applies them to real rows; sends in doubt are settled by their webhook, not resent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.simulator import Simulator
from outbox.status_webhooks import StatusNotifier
from tests.daemon_helpers import IMAGE, PHONE, drain, enqueue, script, sent, status

SECRET = "receipts-app-secret"
BOOKING = outbox.Template("booking_confirmed", "en_US", ("Ali",), header_image=IMAGE)
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def receiver(database_url: str, simulator: Simulator, tmp_path: Path) -> AsyncIterator[str]:
    """The webhook receiver on a free port; the simulator posts its statuses there."""
    settings = outbox.Settings(
        database_url=database_url, app_secret=SECRET, webhook_verify_token="verify", home=tmp_path
    )
    runner = web.AppRunner(outbox.webhooks.create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhook"
    simulator.notifier = StatusNotifier(url, SECRET, PHONE, delay=0.05)
    yield url
    await simulator.notifier.close()
    await runner.cleanup()


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_templates_and_text_go_from_sent_to_delivered_to_read(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, receiver: str
) -> None:
    async with engine.begin() as conn:
        booking = await outbox.enqueue(conn, "923001234567", template=BOOKING)
    text = await enqueue(engine, "447700900123", "See you soon", media_urls={"images": [IMAGE]})
    assert await drain(settings) == 0

    async def both_read() -> bool:
        return [(await status(engine, row)).status for row in (booking, text)] == ["read"] * 2

    await eventually(both_read, 20, "both rows read")
    for row in (booking, text):
        delivery = await status(engine, row)
        assert delivery.sent_at is not None
        assert delivery.delivered_at is not None
        assert delivery.read_at is not None
        assert {part.status for part in delivery.parts} == {"read"}
    async with engine.connect() as conn:
        kinds = [event.kind for event in await outbox.status.get_history(conn, booking)]
    assert kinds == ["accepted", "status:sent", "status:delivered", "status:read"]
    assert simulator.notifier is not None
    assert simulator.notifier.failures == 0


async def test_a_message_failed_later_by_webhook_ends_failed_with_metas_reason(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, receiver: str
) -> None:
    script(simulator, "447700900123", {"accept": True, "then": "failed", "error": 131026})
    row = await enqueue(engine, "447700900123", "not on WhatsApp")
    assert await drain(settings) == 0

    async def failed() -> bool:
        return (await status(engine, row)).status == "failed"

    await eventually(failed, 20, "the failed webhook")
    delivery = await status(engine, row)
    assert delivery.error_code == 131026
    assert (delivery.last_error or "").startswith("(#131026)")


async def test_a_timed_out_send_whose_webhook_arrives_is_not_sent_again(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, receiver: str
) -> None:
    script(simulator, "923001234567", {"accept_and_hang": True})
    row = await enqueue(engine, "923001234567", "accepted, but the answer is lost")
    options = replace(settings, request_timeout=1.0, reconcile_seconds=10)
    assert await drain(options) == 0
    assert sent(simulator) == [f"outbox:{row}:0"], "the part must not be sent twice"
    delivery = await status(engine, row)
    assert delivery.part_ids == (simulator.accepted[0]["wamid"],)
    assert delivery.in_doubt == 0
    await eventually(lambda: _status_is(engine, row, "read"), 20, "the webhooks to apply")


async def test_a_timed_out_send_without_a_webhook_is_sent_again_after_the_window(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    script(simulator, "923001234567", {"accept_and_hang": True})
    row = await enqueue(engine, "923001234567", "nobody tells us")
    options = replace(settings, request_timeout=1.0, reconcile_seconds=1.0)
    assert await drain(options) == 0
    assert sent(simulator) == [f"outbox:{row}:0", f"outbox:{row}:0"]
    delivery = await status(engine, row)
    assert (delivery.status, delivery.in_doubt) == ("sent", 1)


async def _status_is(engine: AsyncEngine, row: int, expected: str) -> bool:
    return (await status(engine, row)).status == expected


async def test_a_message_failed_by_webhook_keeps_its_accepted_wamid(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, receiver: str
) -> None:
    script(simulator, "447700900123", {"accept": True, "then": "failed", "error": 131026})
    row = await enqueue(engine, "447700900123", "not on WhatsApp")
    assert await drain(settings) == 0
    await eventually(lambda: _status_is(engine, row, "failed"), 20, "the failed webhook")
    delivery = await status(engine, row)
    assert delivery.part_ids == (simulator.accepted[0]["wamid"],)
    assert [part.status for part in delivery.parts] == ["failed"]


async def test_a_row_taken_over_from_an_expired_lease_is_settled_by_its_webhook(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, database_url: str
) -> None:
    """The daemon that held it lost the database, not its request: Meta accepted the text and
    said so by webhook, so the daemon taking the row over records that, and sends nothing."""
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchval(
            "INSERT INTO outbox_messages (recipient, message, status, attempts, lease_token, "
            "locked_until) VALUES ('923001234567', 'hi', 'sending', 1, gen_random_uuid(), "
            "now() - interval '1 second') RETURNING id"
        )
        await conn.execute(
            "INSERT INTO outbox_statuses (wamid, message_id, part, status, at, recipient) "
            "VALUES ('wamid.accepted-by-the-lost-daemon', $1, 0, 'sent', now(), '923001234567')",
            row,
        )
    finally:
        await conn.close()
    assert await drain(replace(settings, reconcile_seconds=0)) == 0
    assert simulator.requests == 0
    delivery = await status(engine, row)
    assert (delivery.status, delivery.message_id) == ("sent", "wamid.accepted-by-the-lost-daemon")


async def test_a_row_taken_over_without_a_webhook_is_sent_after_the_window(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, database_url: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchval(
            "INSERT INTO outbox_messages (recipient, message, status, attempts, lease_token, "
            "locked_until) VALUES ('923001234567', 'hi', 'sending', 1, gen_random_uuid(), "
            "now() - interval '1 second') RETURNING id"
        )
    finally:
        await conn.close()
    assert await drain(replace(settings, reconcile_seconds=1)) == 0
    assert sent(simulator) == [f"outbox:{row}:0"]
    assert (await status(engine, row)).status == "sent"


async def test_a_part_failed_by_webhook_mid_row_keeps_the_next_parts_wamid(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, receiver: str
) -> None:
    script(
        simulator,
        "923001234567",
        {"accept": True, "then": "failed", "error": 131053},
        {"delay_ms": 1000},
    )
    row = await enqueue(engine, "923001234567", "caption text", media_urls={"images": [IMAGE]})
    assert await drain(settings) == 0
    await eventually(lambda: _status_is(engine, row, "failed"), 20, "the failed webhook")
    delivery = await status(engine, row)
    assert delivery.error_code == 131053
    assert delivery.part_ids == tuple(a["wamid"] for a in simulator.accepted)
    assert sent(simulator) == [f"outbox:{row}:0", f"outbox:{row}:1"]
