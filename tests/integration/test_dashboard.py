"""The dashboard over HTTP: login, CSRF, roles, search and the message page."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox.dashboard import create_app
from outbox.errors import ConfigurationError
from tests.dashboard_helpers import (
    ACCESS_TOKEN,
    APP_SECRET,
    BODY,
    PASSWORD,
    READ_WAMID,
    Client,
    app_settings,
    csrf,
    log_in,
    page_text,
    seed,
    users,
)


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[Client]:
    app = create_app(app_settings(database_url), users=users(), secure_cookies=False)
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.fixture
async def rows(engine: AsyncEngine) -> dict[str, int]:
    return await seed(engine)


async def test_a_page_without_login_redirects_to_the_login(client: Client) -> None:
    response = await client.get("/", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/login"


async def test_the_right_password_logs_in(client: Client) -> None:
    response = await log_in(client, "support")
    assert response.status == 303
    assert "Find a message" in await page_text(client, "/")


async def test_a_wrong_password_is_refused(client: Client) -> None:
    response = await log_in(client, "support", "wrong")
    assert response.status == 401
    assert (await client.get("/", allow_redirects=False)).status == 303


async def test_after_five_wrong_passwords_even_the_right_one_waits(client: Client) -> None:
    for _ in range(5):
        assert (await log_in(client, "support", "wrong")).status == 401
    response = await log_in(client, "support")
    assert response.status == 429
    assert (await log_in(client, "viewer")).status == 303  # other names are not locked


async def test_a_login_without_its_csrf_token_is_refused(client: Client) -> None:
    await client.get("/login")
    response = await client.post(
        "/login", data={"name": "support", "password": PASSWORD}, allow_redirects=False
    )
    assert response.status == 403


async def test_a_second_login_page_keeps_the_first_forms_token(client: Client) -> None:
    # A browser asks for /favicon.ico too, and is sent to the login page: the form it shows
    # must still work.
    first = csrf(await (await client.get("/login")).text())
    await client.get("/favicon.ico")
    response = await client.post(
        "/login",
        data={"csrf": first, "name": "support", "password": PASSWORD},
        allow_redirects=False,
    )
    assert response.status == 303


async def test_the_session_cookie_is_secure_httponly_and_same_site_strict(
    database_url: str,
) -> None:
    app = create_app(app_settings(database_url), users=users())
    async with TestClient(TestServer(app)) as client:
        form = await client.get("/login")
        token = csrf(await form.text())
        # The client keeps a Secure cookie from plain HTTP to itself: it is sent by hand.
        response = await client.post(
            "/login",
            data={"csrf": token, "name": "viewer", "password": PASSWORD},
            headers={"Cookie": f"outbox_dashboard_login={token}"},
            allow_redirects=False,
        )
    assert response.status == 303
    cookie = response.cookies["outbox_dashboard"]
    assert cookie["secure"]
    assert cookie["httponly"]
    assert cookie["samesite"] == "Strict"


async def test_log_out_ends_the_session(client: Client) -> None:
    await log_in(client, "viewer")
    token = csrf(await page_text(client, "/"))
    await client.post("/logout", data={"csrf": token}, allow_redirects=False)
    assert (await client.get("/", allow_redirects=False)).status == 303


@pytest.mark.parametrize("written", ["+92 300 1234567", "0092-300-123-4567", "923001234567"])
async def test_search_by_phone_in_any_format_finds_its_messages(
    client: Client, rows: dict[str, int], written: str
) -> None:
    await log_in(client, "support")
    html = await page_text(client, f"/?q={written.replace('+', '%2B')}")
    assert f'/messages/{rows["read"]}"' in html
    assert f'/messages/{rows["failed"]}"' in html


async def test_search_by_reference_finds_only_that_message(
    client: Client, rows: dict[str, int]
) -> None:
    await log_in(client, "support")
    html = await page_text(client, "/?q=booking-1234")
    assert f'/messages/{rows["read"]}"' in html
    assert f'/messages/{rows["failed"]}"' not in html


async def test_search_by_wamid_finds_the_message(client: Client, rows: dict[str, int]) -> None:
    await log_in(client, "support")
    html = await page_text(client, f"/?q={READ_WAMID}")
    assert f'/messages/{rows["read"]}"' in html
    assert f'/messages/{rows["failed"]}"' not in html


async def test_search_by_the_wamid_of_an_earlier_part_finds_its_message(
    client: Client, rows: dict[str, int], engine: AsyncEngine
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO outbox_statuses (wamid, message_id, part, status, at, applied_at) "
                "VALUES ('wamid.PHOTO', :id, 0, 'delivered', now(), now())"
            ),
            {"id": rows["failed"]},
        )
    await log_in(client, "support")
    html = await page_text(client, "/?q=wamid.PHOTO")
    assert f'/messages/{rows["failed"]}"' in html
    assert f'/messages/{rows["read"]}"' not in html


async def test_search_by_the_wamid_of_an_accepted_part_finds_its_message(
    client: Client, rows: dict[str, int], engine: AsyncEngine
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO outbox_part_wamids (wamid, message_id, part) "
                "VALUES ('wamid.IMAGE', :id, 0)"
            ),
            {"id": rows["failed"]},
        )
    await log_in(client, "support")
    html = await page_text(client, "/?q=wamid.IMAGE")
    assert f'/messages/{rows["failed"]}"' in html
    assert f'/messages/{rows["read"]}"' not in html


async def test_search_by_id_finds_the_message(client: Client, rows: dict[str, int]) -> None:
    await log_in(client, "support")
    html = await page_text(client, f"/?q={rows['failed']}")
    assert f'/messages/{rows["failed"]}"' in html
    assert f'/messages/{rows["read"]}"' not in html


async def test_a_search_that_finds_nothing_says_so(client: Client, rows: dict[str, int]) -> None:
    await log_in(client, "support")
    assert "Nothing found" in await page_text(client, "/?q=no-such-reference")


async def test_the_message_page_answers_in_plain_words_first(
    client: Client, rows: dict[str, int]
) -> None:
    await log_in(client, "support")
    html = await page_text(client, f"/messages/{rows['read']}")
    answer = re.search(r'id="answer">([^<]*)<', html)
    assert answer
    assert answer.group(1) == "Delivered to +92 300 1234567 at 14:02, read at 14:05"


async def test_the_timeline_shows_webhook_statuses_and_the_accepted_wamid(
    client: Client, rows: dict[str, int]
) -> None:
    await log_in(client, "support")
    html = await page_text(client, f"/messages/{rows['read']}")
    timeline = html[html.index('id="timeline"') : html.index('id="parts"')]
    assert timeline.index("enqueued") < timeline.index("accepted by Meta")
    assert timeline.index("accepted by Meta") < timeline.index("webhook: delivered")
    assert timeline.index("webhook: delivered") < timeline.index("webhook: read")
    assert READ_WAMID in timeline


async def test_a_failed_attempt_shows_metas_text_and_the_next_step(
    client: Client, rows: dict[str, int]
) -> None:
    await log_in(client, "support")
    html = await page_text(client, f"/messages/{rows['failed']}")
    assert "#131047 Re-engagement message" in html
    assert "the guest has not written in 24 h" in html
    assert "send a template instead" in html


async def test_a_viewer_sees_the_phone_masked_and_no_body(
    client: Client, rows: dict[str, int]
) -> None:
    await log_in(client, "viewer")
    html = await page_text(client, f"/messages/{rows['read']}")
    assert "+92 ***4567" in html
    assert "300 123" not in html
    assert "923001234567" not in html
    assert BODY not in html
    assert f"(hidden: {len(BODY)} characters)" in html


async def test_a_viewer_sees_search_results_masked(client: Client, rows: dict[str, int]) -> None:
    await log_in(client, "viewer")
    html = await page_text(client, "/?q=booking-1234")
    assert "+92 ***4567" in html
    assert "1234567" not in html.replace("***4567", "")


async def test_support_sees_the_phone_and_body(client: Client, rows: dict[str, int]) -> None:
    await log_in(client, "support")
    html = await page_text(client, f"/messages/{rows['read']}")
    assert "+92 300 1234567" in html
    assert BODY in html


async def test_a_viewer_may_not_retry(client: Client, rows: dict[str, int]) -> None:
    await log_in(client, "viewer")
    token = csrf(await page_text(client, "/"))
    assert (await client.get(f"/messages/{rows['failed']}/retry")).status == 403
    posted = await client.post(
        f"/messages/{rows['failed']}/retry", data={"csrf": token}, allow_redirects=False
    )
    assert posted.status == 403


async def test_a_viewer_is_offered_no_retry(client: Client, rows: dict[str, int]) -> None:
    await log_in(client, "viewer")
    assert 'id="retry"' not in await page_text(client, f"/messages/{rows['failed']}")


async def test_support_retries_a_failed_message_after_confirming(
    client: Client, rows: dict[str, int], engine: AsyncEngine
) -> None:
    await log_in(client, "support")
    confirm = await page_text(client, f"/messages/{rows['failed']}/retry")
    assert "Yes, retry it" in confirm
    response = await client.post(f"/messages/{rows['failed']}/retry", data={"csrf": csrf(confirm)})
    assert "Queued again" in await response.text()
    assert await _status(engine, rows["failed"]) == "pending"


async def test_a_retry_is_audited_and_shown_in_the_timeline(
    client: Client, rows: dict[str, int], engine: AsyncEngine
) -> None:
    await log_in(client, "support")
    confirm = await page_text(client, f"/messages/{rows['failed']}/retry")
    await client.post(f"/messages/{rows['failed']}/retry", data={"csrf": csrf(confirm)})
    async with engine.connect() as conn:
        audited = await conn.execute(
            sa.text("SELECT actor, action, message_id FROM outbox_audit ORDER BY id")
        )
        assert [tuple(row) for row in audited] == [("support", "retry", rows["failed"])]
    html = await page_text(client, f"/messages/{rows['failed']}")
    timeline = html[html.index('id="timeline"') : html.index('id="parts"')]
    assert "retry by support (dashboard)" in timeline


async def test_a_retry_that_is_refused_is_not_audited(
    client: Client, rows: dict[str, int], engine: AsyncEngine
) -> None:
    await log_in(client, "support")
    token = csrf(await page_text(client, "/"))
    response = await client.post(f"/messages/{rows['read']}/retry", data={"csrf": token})
    assert "Not retried" in await response.text()
    async with engine.connect() as conn:
        count = await conn.execute(sa.text("SELECT count(*) FROM outbox_audit"))
        assert count.scalar_one() == 0


async def test_a_retry_without_the_csrf_token_is_refused_and_changes_nothing(
    client: Client, rows: dict[str, int], engine: AsyncEngine
) -> None:
    await log_in(client, "support")
    response = await client.post(
        f"/messages/{rows['failed']}/retry", data={"csrf": "forged"}, allow_redirects=False
    )
    assert response.status == 403
    assert await _status(engine, rows["failed"]) == "failed"


async def test_no_page_shows_the_access_token_or_the_app_secret(
    client: Client, rows: dict[str, int]
) -> None:
    await log_in(client, "admin")
    for path in (
        "/",
        "/?q=booking-1234",
        f"/messages/{rows['read']}",
        f"/messages/{rows['failed']}",
        f"/messages/{rows['failed']}/retry",
    ):
        html = await page_text(client, path)
        assert ACCESS_TOKEN not in html
        assert APP_SECRET not in html


async def test_a_message_on_its_way_reloads_itself_and_a_finished_one_does_not(
    client: Client, rows: dict[str, int]
) -> None:
    await log_in(client, "support")
    confirm = await page_text(client, f"/messages/{rows['failed']}/retry")
    await client.post(f"/messages/{rows['failed']}/retry", data={"csrf": csrf(confirm)})
    assert 'data-refresh="5"' in await page_text(client, f"/messages/{rows['failed']}")
    assert "data-refresh" not in await page_text(client, f"/messages/{rows['read']}")
    script = await client.get("/live.js")
    assert script.content_type == "text/javascript"
    assert "location.reload" in await script.text()


async def test_an_unknown_message_is_not_found(client: Client, rows: dict[str, int]) -> None:
    await log_in(client, "support")
    assert (await client.get("/messages/999999")).status == 404


async def test_mounted_under_a_prefix_it_logs_in_and_links_within_it(
    database_url: str, rows: dict[str, int]
) -> None:
    parent = web.Application()
    parent.add_subapp(
        "/outbox/", create_app(app_settings(database_url), users=users(), secure_cookies=False)
    )
    async with TestClient(TestServer(parent)) as client:
        redirect = await client.get("/outbox/", allow_redirects=False)
        assert redirect.headers["Location"] == "/outbox/login"
        form = await client.get("/outbox/login")
        html = await form.text()
        assert 'action="/outbox/login"' in html
        await client.post(
            "/outbox/login", data={"csrf": csrf(html), "name": "support", "password": PASSWORD}
        )
        found = await client.get("/outbox/?q=booking-1234")
        assert f'href="/outbox/messages/{rows["read"]}"' in await found.text()


def test_the_dashboard_without_users_is_refused(database_url: str) -> None:
    with pytest.raises(ConfigurationError, match="OUTBOX_DASHBOARD_USERS"):
        create_app(app_settings(database_url))


async def _status(engine: AsyncEngine, row_id: int) -> str:
    async with engine.connect() as conn:
        result = await conn.execute(
            sa.text("SELECT status FROM outbox_messages WHERE id = :id"), {"id": row_id}
        )
        return str(result.scalar_one())
