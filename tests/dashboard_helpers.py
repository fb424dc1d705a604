"""Messages in every state the dashboard shows, and users of every role, for its tests."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.dashboard.users import Role, User, parse_users
from outbox.dashboard.users import hash_password as _hash
from outbox.settings import Settings

PASSWORD = "correct horse battery staple"
ACCESS_TOKEN = "EAAG-secret-access-token-0123456789"
APP_SECRET = "app-secret-9876543210abcdef"
PHONE = "923001234567"  # +92 300 1234567
BODY = "Your booking 1234 is confirmed for Friday"
READ_WAMID = "wamid.HBgMOTIzMDAxMjM0NTY3FQIAERgSQUJDREVG"


def users() -> dict[str, User]:
    """viewer, support and admin, each with PASSWORD (hashed cheaply: tests log in often)."""
    lines = "\n".join(f"{role}:{role}:{_hash(PASSWORD, rounds=4)}" for role in Role)
    return parse_users(lines)


async def seed(engine: AsyncEngine) -> dict[str, int]:
    """A message read at 14:05 (reference booking-1234), and one failed with 131047 after an
    attempt whose error text Meta gave; their ids by name."""
    async with engine.begin() as conn:
        read = await outbox.enqueue(conn, "+92 300 1234567", BODY, reference="booking-1234")
        failed = await outbox.enqueue(conn, PHONE, "Reminder: checkout at 11", reference="r-2")
        await conn.execute(
            sa.text(
                """
                UPDATE outbox_messages SET status = 'read', attempts = 1,
                    message_id = :wamid,
                    parts = jsonb_build_array(jsonb_build_object(
                        'wamid', CAST(:wamid AS text), 'status', 'read',
                        'sent_at', '2026-12-01T14:01:00+00:00')),
                    created_at = '2026-12-01T14:00:00+00', sent_at = '2026-12-01T14:01:00+00',
                    delivered_at = '2026-12-01T14:02:00+00', read_at = '2026-12-01T14:05:00+00'
                WHERE id = :id
                """
            ),
            {"id": read, "wamid": READ_WAMID},
        )
        await conn.execute(
            sa.text(
                """
                INSERT INTO outbox_events (message_id, part, kind, http_status, error_code,
                                           detail, latency_ms, at)
                VALUES (:id, 0, 'accepted', 200, NULL, :wamid, 80, '2026-12-01T14:01:00+00'),
                       (:id, 0, 'status:delivered', NULL, NULL, NULL, NULL,
                        '2026-12-01T14:02:00+00'),
                       (:id, 0, 'status:read', NULL, NULL, NULL, NULL, '2026-12-01T14:05:00+00')
                """
            ),
            {"id": read, "wamid": READ_WAMID},
        )
        await conn.execute(
            sa.text(
                """
                UPDATE outbox_messages SET status = 'failed', attempts = 1, error_code = 131047,
                    last_error = 'Re-engagement message'
                WHERE id = :id
                """
            ),
            {"id": failed},
        )
        await conn.execute(
            sa.text(
                """
                INSERT INTO outbox_events (message_id, part, kind, http_status, error_code,
                                           detail, latency_ms, at)
                VALUES (:id, 0, 'permanent', 400, 131047, 'Re-engagement message', 95, now())
                """
            ),
            {"id": failed},
        )
    return {"read": read, "failed": failed}


Client = TestClient[Any, Any]


def app_settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, access_token=ACCESS_TOKEN, app_secret=APP_SECRET)


def csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


async def log_in(client: Client, name: str, password: str = PASSWORD) -> Any:
    form = await client.get("/login")
    token = csrf(await form.text())
    return await client.post(
        "/login",
        data={"csrf": token, "name": name, "password": password},
        allow_redirects=False,
    )


async def page_text(client: Client, path: str) -> str:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    return await response.text()
