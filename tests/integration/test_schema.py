"""The table refuses bad rows written with raw SQL, notifies on commit, and keeps claims indexed."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

INSERT = "INSERT INTO outbox_messages (recipient, message, media) VALUES ($1, $2, $3::jsonb)"


async def raw_insert(dsn: str, recipient: str, message: str | None, media: object = ()) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(INSERT, recipient, message, json.dumps(list(media)))
    finally:
        await conn.close()


async def test_raw_insert_of_a_valid_row_is_pending_with_defaults(database_url: str) -> None:
    await raw_insert(database_url, "923001234567", "hello")
    conn = await asyncpg.connect(database_url)
    row = await conn.fetchrow("SELECT status, attempts, media, parts FROM outbox_messages")
    await conn.close()
    assert dict(row) == {"status": "pending", "attempts": 0, "media": "[]", "parts": "[]"}


@pytest.mark.parametrize(
    ("recipient", "message", "media", "constraint"),
    [
        ("+923001234567", "hi", [], "recipient_digits"),
        ("123456", "hi", [], "recipient_digits"),
        ("1234567890123456", "hi", [], "recipient_digits"),
        ("92300abc4567", "hi", [], "recipient_digits"),
        ("0923001234567", "hi", [], "recipient_digits"),  # no country code starts with 0
        ("00923001234567", "hi", [], "recipient_digits"),
        (
            "923001234567",
            None,
            [{"type": "image", "url": "https://a.example/x"}] * 11,
            "media_count",
        ),
        ("923001234567", None, [{"type": "image", "url": "HTTPS://a.example/x"}], "media_parts"),
        ("923001234567", None, [], "message_or_media"),
        ("923001234567", "", [], "message_or_media"),
        ("923001234567", "x" * 4097, [], "message_length"),
        ("923001234567", None, [{"type": "sticker", "url": "https://a.example/x"}], "media_parts"),
        ("923001234567", None, [{"type": "image", "url": "ftp://a.example/x"}], "media_parts"),
        ("923001234567", None, [{"type": "image"}], "media_parts"),
        ("923001234567", None, ["https://a.example/x"], "media_parts"),
    ],
)
async def test_raw_insert_of_bad_data_fails_on_its_check(
    database_url: str, recipient: str, message: str | None, media: list[object], constraint: str
) -> None:
    with pytest.raises(asyncpg.CheckViolationError) as caught:
        await raw_insert(database_url, recipient, message, media)
    assert caught.value.constraint_name == f"ck_outbox_messages_{constraint}"


async def test_raw_insert_of_unknown_status_fails_on_its_check(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.CheckViolationError, match="status_known"):
            await conn.execute(
                "INSERT INTO outbox_messages (recipient, message, status) "
                "VALUES ('9230012345', 'x', 'done')"
            )
    finally:
        await conn.close()


async def test_message_of_exactly_4096_characters_is_accepted(database_url: str) -> None:
    await raw_insert(database_url, "923001234567", "x" * 4096)


async def test_insert_notifies_listeners_only_when_committed(database_url: str) -> None:
    listener = await asyncpg.connect(database_url)
    writer = await asyncpg.connect(database_url)
    received: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("outbox", lambda *args: received.put_nowait(args[2]))
    try:
        async with writer.transaction():
            await writer.execute(INSERT, "923001234567", "hi", "[]")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(received.get(), 0.3)
        assert await asyncio.wait_for(received.get(), 5) == "outbox"

        tx = writer.transaction()
        await tx.start()
        await writer.execute(INSERT, "923001234567", "rolled back", "[]")
        await tx.rollback()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(received.get(), 0.5)
    finally:
        await listener.close()
        await writer.close()


async def test_due_pending_rows_are_found_by_index_among_many_finished(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO outbox_messages (recipient, message, status) "
            "SELECT '9230012' || lpad(i::text, 5, '0'), 'done', 'sent' "
            "FROM generate_series(1, 50000) AS i"
        )
        await conn.execute(
            "INSERT INTO outbox_messages (recipient, message) "
            "SELECT '9240012' || lpad(i::text, 5, '0'), 'new' FROM generate_series(1, 20) AS i"
        )
        await conn.execute("ANALYZE outbox_messages")
        plan = "\n".join(
            row[0]
            for row in await conn.fetch(
                "EXPLAIN SELECT id FROM outbox_messages "
                "WHERE status = 'pending' AND available_at <= now() ORDER BY id LIMIT 100"
            )
        )
    finally:
        await conn.close()
    assert "ix_outbox_messages_due" in plan, plan
    assert "Seq Scan" not in plan, plan


async def test_raw_insert_of_ten_media_parts_is_accepted(database_url: str) -> None:
    await raw_insert(
        database_url, "923001234567", None, [{"type": "image", "url": "https://a.example/x"}] * 10
    )


async def test_expires_at_column_is_nullable_timestamptz(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO outbox_messages (recipient, message, expires_at) VALUES "
            "('923001234567', 'hi', '2031-01-02T03:04:05+05:00'), ('923001234567', 'x', NULL)"
        )
        stored = [
            row[0] for row in await conn.fetch("SELECT expires_at FROM outbox_messages ORDER BY id")
        ]
    finally:
        await conn.close()
    assert stored[0] is not None
    assert stored[0].isoformat() == "2031-01-01T22:04:05+00:00"
    assert stored[1] is None
