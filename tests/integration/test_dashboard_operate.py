"""The Operate page: work in hand, holds and pauses, the last 24 hours as charts, and an admin's
retry or cancel of every message a filter matches (counted, confirmed, audited)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.dashboard import create_app
from outbox.dashboard.rollup import catch_up
from tests.dashboard_helpers import Client, app_settings, csrf, log_in, page_text, users


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[Client]:
    app = create_app(app_settings(database_url), users=users(), secure_cookies=False)
    async with TestClient(TestServer(app)) as client:
        yield client


async def _enqueue(
    engine: AsyncEngine, count: int, *, recipient: str = "+923001234567"
) -> list[int]:
    async with engine.begin() as conn:
        return [await outbox.enqueue(conn, recipient, f"m{i}", sender="111") for i in range(count)]


async def _run(engine: AsyncEngine, sql: str, **params: object) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text(sql), params)


async def _fail(engine: AsyncEngine, ids: list[int], code: int) -> None:
    await _run(
        engine,
        "UPDATE outbox_messages SET status = 'failed', error_code = :code, "
        "last_error = 'refused' WHERE id = ANY(:ids)",
        ids=ids,
        code=code,
    )


async def _statuses(engine: AsyncEngine, ids: list[int]) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT status FROM outbox_messages WHERE id = ANY(:ids) ORDER BY id"),
            {"ids": ids},
        )
        return [row[0] for row in rows]


async def test_operate_counts_the_work_in_hand_by_sender(
    client: Client, engine: AsyncEngine
) -> None:
    await _enqueue(engine, 3)
    await log_in(client, "viewer")
    html = await page_text(client, "/operate")
    senders = html[html.index('id="senders"') : html.index("</table>", html.index('id="senders"'))]
    assert "<td>111</td><td>3</td><td>0</td>" in senders
    assert "<strong>3</strong> message(s) pending" in html


async def test_operate_shows_why_messages_wait_and_who_paused(
    client: Client, engine: AsyncEngine
) -> None:
    ids = await _enqueue(engine, 2)
    await _run(
        engine,
        "UPDATE outbox_messages SET last_error = 'quiet hours until 2026-12-07 09:00 "
        "Asia/Karachi' WHERE id = ANY(:ids)",
        ids=ids,
    )
    await _run(engine, "INSERT INTO outbox_pauses (sender, reason) VALUES ('111', 'campaign')")
    await log_in(client, "viewer")
    html = await page_text(client, "/operate")
    holds = html[html.index('id="holds"') :]
    assert "2 pending message(s) waiting</td><td>quiet hours until 2026-12-07 09" in holds
    assert "paused by an operator: 111</td><td>campaign" in holds


async def test_operate_charts_the_last_day_from_the_rollup(
    client: Client, engine: AsyncEngine
) -> None:
    ids = await _enqueue(engine, 2)
    await _run(
        engine,
        "INSERT INTO outbox_events (message_id, part, kind, error_code, at) VALUES "
        "(:a, 0, 'accepted', NULL, now() - interval '2 hours'), "
        "(:b, 0, 'failed', 131047, now() - interval '1 hour')",
        a=ids[0],
        b=ids[1],
    )
    await catch_up(engine, settle_seconds=0)
    await log_in(client, "viewer")
    html = await page_text(client, "/operate")
    assert "Sends and failures per 10 minutes: 1 sent, 1 failed" in html
    codes = html[html.index('id="codes-chart"') : html.index('id="templates-chart"')]
    assert "#131047" in codes
    assert "<rect" in codes


async def test_a_viewer_is_offered_no_bulk_action_and_sees_no_audit(
    client: Client, engine: AsyncEngine
) -> None:
    await log_in(client, "viewer")
    html = await page_text(client, "/operate")
    assert 'id="bulk"' not in html
    assert 'id="actions"' not in html
    assert (await client.get("/operate/bulk?action=retry&code=131047")).status == 403


async def test_support_may_not_act_in_bulk(client: Client, engine: AsyncEngine) -> None:
    await log_in(client, "support")
    token = csrf(await page_text(client, "/operate"))
    posted = await client.post(
        "/operate/bulk",
        data={"csrf": token, "action": "retry", "code": "131047", "upto": "10"},
        allow_redirects=False,
    )
    assert posted.status == 403


async def test_a_bulk_retry_counts_first_and_changes_nothing_yet(
    client: Client, engine: AsyncEngine
) -> None:
    ids = await _enqueue(engine, 3)
    await _fail(engine, ids[:2], 131047)
    await _fail(engine, ids[2:], 131026)
    await log_in(client, "admin")
    html = await page_text(client, "/operate/bulk?action=retry&code=131047")
    assert "Retry 2 failed messages with error code 131047?" in html
    assert await _statuses(engine, ids) == ["failed", "failed", "failed"]


async def test_a_confirmed_bulk_retry_requeues_only_the_counted_rows_and_is_audited(
    client: Client, engine: AsyncEngine
) -> None:
    ids = await _enqueue(engine, 2)
    await _fail(engine, ids, 131047)
    await log_in(client, "admin")
    confirm = await page_text(client, "/operate/bulk?action=retry&code=131047")
    later = await _enqueue(engine, 1)  # fails after the admin saw the count
    await _fail(engine, later, 131047)
    form = {"csrf": csrf(confirm), "action": "retry", "recipient": "", "code": "131047"}
    upto = confirm.split('name="upto" value="')[1].split('"')[0]
    response = await client.post("/operate/bulk", data={**form, "since": "", "upto": upto})
    assert "Retried 2 message(s)." in await response.text()
    assert await _statuses(engine, ids + later) == ["pending", "pending", "failed"]
    async with engine.connect() as conn:
        audit = (
            await conn.execute(sa.text("SELECT actor, action, detail FROM outbox_audit"))
        ).one()
    assert tuple(audit) == (
        "admin",
        "bulk retry",
        "retried 2 failed messages with error code 131047",
    )


async def test_a_bulk_cancel_cancels_the_pending_rows_of_a_recipient(
    client: Client, engine: AsyncEngine
) -> None:
    theirs = await _enqueue(engine, 2, recipient="+923001234567")
    others = await _enqueue(engine, 1, recipient="+923009999999")
    await log_in(client, "admin")
    confirm = await page_text(client, "/operate/bulk?action=cancel&recipient=%2B92+300+1234567")
    assert "Cancel 2 pending messages to 923001234567?" in confirm
    upto = confirm.split('name="upto" value="')[1].split('"')[0]
    data = {"csrf": csrf(confirm), "action": "cancel", "recipient": "+92 300 1234567"}
    await client.post("/operate/bulk", data={**data, "code": "", "since": "", "upto": upto})
    assert await _statuses(engine, theirs + others) == ["cancelled", "cancelled", "pending"]


async def test_a_bulk_action_without_a_filter_is_refused(
    client: Client, engine: AsyncEngine
) -> None:
    await _fail(engine, await _enqueue(engine, 1), 131047)
    await log_in(client, "admin")
    response = await client.get("/operate/bulk?action=retry")
    assert response.status == 400
    assert "give at least one filter" in await response.text()


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("action=delete&code=1", "action: must be retry or cancel"),
        ("action=retry&code=abc", "Graph code: invalid code"),
        ("action=retry&since=yesterday", "enqueued since: invalid time"),
        ("action=retry&recipient=hello", "recipient"),
    ],
    ids=["action", "code", "since", "recipient"],
)
async def test_a_bad_bulk_filter_names_its_field(
    client: Client, engine: AsyncEngine, query: str, named: str
) -> None:
    await log_in(client, "admin")
    response = await client.get(f"/operate/bulk?{query}")
    assert response.status == 400
    assert named in await response.text()


async def test_a_bulk_action_without_the_csrf_token_is_refused(
    client: Client, engine: AsyncEngine
) -> None:
    ids = await _enqueue(engine, 1)
    await _fail(engine, ids, 131047)
    await log_in(client, "admin")
    posted = await client.post(
        "/operate/bulk",
        data={"action": "retry", "code": "131047", "upto": str(ids[0])},
        allow_redirects=False,
    )
    assert posted.status == 403
    assert await _statuses(engine, ids) == ["failed"]
