"""enqueue() writes inside the caller's transaction on every supported connection kind."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

import outbox
from tests.conftest import sync_engine


async def count_rows(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM outbox_messages"))
    finally:
        await conn.close()


async def test_enqueue_in_an_async_session_is_visible_after_commit(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session, session.begin():
        message_id = await outbox.enqueue(session, "+92 300-123 4567", "Booking confirmed")
    async with engine.connect() as conn:
        delivery = await outbox.get_status(conn, message_id)
    assert (delivery.recipient, delivery.message, delivery.status) == (
        "923001234567",
        "Booking confirmed",
        "pending",
    )


async def test_rolled_back_session_leaves_no_row(engine: AsyncEngine, database_url: str) -> None:
    async with AsyncSession(engine) as session, session.begin():
        await outbox.enqueue(session, "923001234567", "never sent")
        await session.rollback()
    assert await count_rows(database_url) == 0


async def test_enqueue_never_commits_the_callers_transaction(
    engine: AsyncEngine, database_url: str
) -> None:
    async with engine.connect() as conn:
        await outbox.enqueue(conn, "923001234567", "uncommitted")
        assert await count_rows(database_url) == 0
        await conn.rollback()
    assert await count_rows(database_url) == 0


async def test_enqueue_on_an_async_connection_commits_with_it(
    engine: AsyncEngine, database_url: str
) -> None:
    async with engine.begin() as conn:
        await outbox.enqueue(conn, "923001234567", "hello")
    assert await count_rows(database_url) == 1


async def test_enqueue_on_asyncpg_commits_and_rolls_back_with_the_transaction(
    database_url: str,
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            kept = await outbox.enqueue(
                conn, "923001234567", "kept", media_urls={"images": ["https://a.example/1.jpg"]}
            )
        tx = conn.transaction()
        await tx.start()
        await outbox.enqueue(conn, "923001234567", "dropped")
        await tx.rollback()
        delivery = await outbox.get_status(conn, kept)
    finally:
        await conn.close()
    assert await count_rows(database_url) == 1
    assert delivery.media == ({"type": "image", "url": "https://a.example/1.jpg"},)


def test_enqueue_sync_on_a_session_commits_and_rolls_back(database_url: str) -> None:
    engine = sync_engine(database_url)
    try:
        with Session(engine) as session, session.begin():
            outbox.enqueue_sync(session, "923001234567", "kept")
        with Session(engine) as session:
            outbox.enqueue_sync(session, "923001234567", "dropped")
            session.rollback()
        with engine.connect() as conn:
            outbox.enqueue_sync(conn, "923001234567", "on a connection")
            conn.commit()
            texts = conn.execute(sa.text("SELECT message FROM outbox_messages ORDER BY id"))
            assert [row[0] for row in texts] == ["kept", "on a connection"]
    finally:
        engine.dispose()


async def test_media_dict_is_sent_in_kind_order_then_list_order(engine: AsyncEngine) -> None:
    media = {
        "audio": ["https://a.example/4.ogg"],
        "documents": ["https://a.example/3.pdf"],
        "images": ["https://a.example/1.jpg", "https://a.example/2.jpg"],
        "videos": ["https://a.example/v.mp4"],
    }
    async with engine.begin() as conn:
        message_id = await outbox.enqueue(conn, "923001234567", "text", media_urls=media)
        delivery = await outbox.get_status(conn, message_id)
    assert [part.type for part in delivery.parts] == [
        "image",
        "image",
        "video",
        "document",
        "audio",
        "text",
    ]
    assert delivery.media[0]["url"] == "https://a.example/1.jpg"


async def test_explicit_parts_keep_caption_and_filename(engine: AsyncEngine) -> None:
    parts = [
        {"type": "document", "url": "https://a.example/i.pdf", "filename": "invoice.pdf"},
        {"type": "image", "url": "https://a.example/p.jpg", "caption": "The flat"},
    ]
    async with engine.begin() as conn:
        message_id = await outbox.enqueue(conn, "923001234567", media_urls=parts)
        delivery = await outbox.get_status(conn, message_id)
    assert list(delivery.media) == parts
    assert delivery.part_ids == (None, None)


async def test_invalid_input_raises_and_leaves_the_transaction_usable(
    engine: AsyncEngine, database_url: str
) -> None:
    async with engine.begin() as conn:
        with pytest.raises(outbox.InvalidMessage) as caught:
            await outbox.enqueue(conn, "923001234567", "x" * 4097)
        assert caught.value.field == "message"
        await outbox.enqueue(conn, "923001234567", "still fine")
    assert await count_rows(database_url) == 1


async def test_repeated_idempotency_key_returns_the_first_row(
    engine: AsyncEngine, database_url: str
) -> None:
    async with engine.begin() as conn:
        first = await outbox.enqueue(conn, "923001234567", "first", idempotency_key="order-7")
    async with engine.begin() as conn:
        again = await outbox.enqueue(conn, "923009999999", "second", idempotency_key="order-7")
        delivery = await outbox.get_status(conn, again)
    assert again == first
    assert delivery.message == "first"
    assert await count_rows(database_url) == 1


async def test_racing_enqueues_of_one_key_make_one_row(database_url: str) -> None:
    first = await asyncpg.connect(database_url)
    second = await asyncpg.connect(database_url)
    try:
        tx = first.transaction()
        await tx.start()
        winner = await outbox.enqueue(first, "923001234567", "a", idempotency_key="race")
        async with second.transaction():
            racing = asyncio.create_task(
                outbox.enqueue(second, "923001234567", "b", idempotency_key="race")
            )
            await asyncio.sleep(0.3)
            assert not racing.done(), "the second insert must wait for the first transaction"
            await tx.commit()
            assert await asyncio.wait_for(racing, 10) == winner
    finally:
        await first.close()
        await second.close()
    assert await count_rows(database_url) == 1


async def test_a_rolled_back_key_is_free_for_the_racing_transaction(database_url: str) -> None:
    first = await asyncpg.connect(database_url)
    second = await asyncpg.connect(database_url)
    try:
        tx = first.transaction()
        await tx.start()
        loser = await outbox.enqueue(first, "923001234567", "a", idempotency_key="race")
        async with second.transaction():
            racing = asyncio.create_task(
                outbox.enqueue(second, "923001234567", "b", idempotency_key="race")
            )
            await asyncio.sleep(0.3)
            await tx.rollback()
            survivor = await asyncio.wait_for(racing, 10)
        assert survivor != loser
        assert (await outbox.get_status(second, survivor)).message == "b"
    finally:
        await first.close()
        await second.close()


async def test_send_at_sets_the_next_attempt(engine: AsyncEngine) -> None:
    later = datetime.now(UTC) + timedelta(days=2)
    async with engine.begin() as conn:
        message_id = await outbox.enqueue(conn, "923001234567", "later", send_at=later)
        delivery = await outbox.get_status(conn, message_id)
    assert delivery.next_attempt_at == later
