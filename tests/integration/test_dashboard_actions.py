"""A support user's actions on one message beside retry: cancel a pending one, send a failed one
again as a template, and read the conversation with its customer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.dashboard import create_app
from tests.dashboard_helpers import Client, app_settings, csrf, log_in, page_text, users

CUSTOMER = "+923001234567"


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[Client]:
    app = create_app(app_settings(database_url), users=users(), secure_cookies=False)
    async with TestClient(TestServer(app)) as client:
        yield client


async def _enqueue(engine: AsyncEngine, text: str = "Your room is ready", **kwargs: object) -> int:
    async with engine.begin() as conn:
        return await outbox.enqueue(conn, CUSTOMER, text, reference="booking-7", **kwargs)  # type: ignore[arg-type]


async def _one(engine: AsyncEngine, sql: str, **params: object) -> tuple[object, ...]:
    async with engine.begin() as conn:
        return tuple((await conn.execute(sa.text(sql), params)).one())


async def _failed_window_closed(engine: AsyncEngine) -> int:
    row = await _enqueue(
        engine,
        fallback=outbox.Template("room_ready", "en_US", ["Ada"], category="utility"),
    )
    await _one(
        engine,
        "UPDATE outbox_messages SET status = 'failed', last_error = 'window_closed: x' "
        "WHERE id = :id RETURNING id",
        id=row,
    )
    return row


async def test_support_cancels_a_pending_message_after_confirming(
    client: Client, engine: AsyncEngine
) -> None:
    row = await _enqueue(engine)
    await log_in(client, "support")
    confirm = await page_text(client, f"/messages/{row}/cancel")
    assert "Yes, cancel it" in confirm
    response = await client.post(f"/messages/{row}/cancel", data={"csrf": csrf(confirm)})
    assert "Cancelled: it will not be sent." in await response.text()
    assert await _one(engine, "SELECT status FROM outbox_messages WHERE id = :id", id=row) == (
        "cancelled",
    )
    assert await _one(engine, "SELECT actor, action, message_id FROM outbox_audit") == (
        "support",
        "cancel",
        row,
    )


async def test_a_message_no_longer_pending_is_not_cancelled_nor_audited(
    client: Client, engine: AsyncEngine
) -> None:
    row = await _enqueue(engine)
    await log_in(client, "support")
    confirm = await page_text(client, f"/messages/{row}/cancel")
    await _one(
        engine, "UPDATE outbox_messages SET status = 'sending' WHERE id = :id RETURNING id", id=row
    )
    response = await client.post(f"/messages/{row}/cancel", data={"csrf": csrf(confirm)})
    assert "Not cancelled" in await response.text()
    assert await _one(engine, "SELECT count(*) FROM outbox_audit") == (0,)


async def test_a_viewer_may_not_cancel(client: Client, engine: AsyncEngine) -> None:
    row = await _enqueue(engine)
    await log_in(client, "viewer")
    assert 'id="cancel"' not in await page_text(client, f"/messages/{row}")
    token = csrf(await page_text(client, "/"))
    posted = await client.post(
        f"/messages/{row}/cancel", data={"csrf": token}, allow_redirects=False
    )
    assert posted.status == 403


async def test_the_resend_form_is_prefilled_with_the_fallback_template(
    client: Client, engine: AsyncEngine
) -> None:
    row = await _failed_window_closed(engine)
    await log_in(client, "support")
    form = await page_text(client, f"/messages/{row}/resend")
    assert 'name="name" value="room_ready"' in form
    assert 'name="language" value="en_US"' in form
    assert ">Ada</textarea>" in form


async def test_a_resend_enqueues_the_template_as_a_new_message_audited_on_both(
    client: Client, engine: AsyncEngine
) -> None:
    row = await _failed_window_closed(engine)
    await log_in(client, "support")
    form = await page_text(client, f"/messages/{row}/resend")
    data = {"csrf": csrf(form), "name": "room_ready", "language": "en_US"}
    response = await client.post(
        f"/messages/{row}/resend", data={**data, "parameters": "Ada\n", "category": "utility"}
    )
    assert "Enqueued again as a template" in await response.text()
    new_id, recipient, template, reference = await _one(
        engine,
        "SELECT id, recipient, template::text, reference FROM outbox_messages WHERE id <> :id",
        id=row,
    )
    assert (recipient, reference) == ("923001234567", "booking-7")
    assert json.loads(str(template))["name"] == "room_ready"
    async with engine.connect() as conn:
        audit = await conn.execute(
            sa.text("SELECT action, message_id FROM outbox_audit ORDER BY id")
        )
        assert [tuple(r) for r in audit] == [("resend as template", row), ("resent", new_id)]


async def test_a_resend_with_a_bad_template_names_the_field_and_enqueues_nothing(
    client: Client, engine: AsyncEngine
) -> None:
    row = await _failed_window_closed(engine)
    await log_in(client, "support")
    form = await page_text(client, f"/messages/{row}/resend")
    data = {"csrf": csrf(form), "name": "Room Ready!", "language": "en_US", "parameters": ""}
    response = await client.post(f"/messages/{row}/resend", data={**data, "category": ""})
    assert response.status == 400
    assert "template.name" in await response.text()
    assert await _one(engine, "SELECT count(*) FROM outbox_messages") == (1,)
    assert await _one(engine, "SELECT count(*) FROM outbox_audit") == (0,)


async def test_a_pending_message_cannot_be_resent(client: Client, engine: AsyncEngine) -> None:
    row = await _enqueue(engine)
    await log_in(client, "support")
    assert (await client.get(f"/messages/{row}/resend")).status == 409


async def _inbound(engine: AsyncEngine) -> None:
    await _one(
        engine,
        "INSERT INTO outbox_inbound (wamid, phone_number_id, customer, type, at) "
        "VALUES ('wamid.IN1', '111', '923001234567', 'text', now() - interval '1 hour') "
        "RETURNING id",
    )


async def test_the_conversation_shows_what_the_customer_wrote_beside_what_we_sent(
    client: Client, engine: AsyncEngine
) -> None:
    row = await _enqueue(engine)
    await _inbound(engine)
    await log_in(client, "support")
    html = await page_text(client, f"/messages/{row}/conversation")
    table = html[html.index('id="conversation"') :]
    assert table.index('class="outbound"') < table.index('class="inbound"')  # newest first
    assert "text to 111" in table
    assert "Your room is ready" in table


async def test_a_viewer_sees_the_conversation_masked(client: Client, engine: AsyncEngine) -> None:
    row = await _enqueue(engine)
    await _inbound(engine)
    await log_in(client, "viewer")
    html = await page_text(client, f"/messages/{row}/conversation")
    assert "Your room is ready" not in html
    assert "1234567" not in html.replace("***4567", "")
    assert "(hidden)" in html
