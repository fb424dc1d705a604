"""enqueue() writes inside the caller's transaction on every supported connection kind."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

import outbox
from outbox.schema import MAX_MEDIA_PARTS
from tests.conftest import sync_engine

IMAGE = "https://a.example/1.jpg"
DOCUMENT = {"type": "document", "url": "https://a.example/i.pdf"}

# Input that once got past enqueue and failed in the database or the driver, aborting the
# caller's transaction: (id, enqueue keyword arguments, the field InvalidMessage must name).
UNSTORABLE: list[tuple[str, dict[str, Any], str]] = [
    ("nul-in-message", {"message": "a\x00b"}, "message"),
    ("surrogate-in-message", {"message": "a\ud800b"}, "message"),
    (
        "nul-in-caption",
        {"media_urls": [{"type": "image", "url": IMAGE, "caption": "a\x00b"}]},
        "media_urls[0].caption",
    ),
    (
        "surrogate-in-caption",
        {"media_urls": [{"type": "image", "url": IMAGE, "caption": "a\udc00b"}]},
        "media_urls[0].caption",
    ),
    (
        "nul-in-url",
        {"media_urls": {"images": ["https://a.example/\x00.jpg"]}},
        "media_urls.images[0]",
    ),
    (
        "surrogate-in-url",
        {"media_urls": {"images": ["https://a.example/\ud800.jpg"]}},
        "media_urls.images[0]",
    ),
    (
        "leading-control-in-url",
        {"media_urls": {"images": ["\x01https://a.example/x.jpg"]}},
        "media_urls.images[0]",
    ),
    (
        "nul-in-filename",
        {"media_urls": [{**DOCUMENT, "filename": "a\x00.pdf"}]},
        "media_urls[0].filename",
    ),
    (
        "surrogate-in-filename",
        {"media_urls": [{**DOCUMENT, "filename": "a\ud800.pdf"}]},
        "media_urls[0].filename",
    ),
    ("nul-in-idempotency-key", {"message": "hi", "idempotency_key": "k\x00"}, "idempotency_key"),
    (
        "surrogate-in-idempotency-key",
        {"message": "hi", "idempotency_key": "k\ud800"},
        "idempotency_key",
    ),
    ("impossible-recipient", {"recipient": "0300 1234567", "message": "hi"}, "recipient"),
    (
        "too-many-media-parts",
        {"media_urls": {"images": [IMAGE] * (MAX_MEDIA_PARTS + 1)}},
        "media_urls",
    ),
    (
        "send-at-out-of-range",
        {"message": "hi", "send_at": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))},
        "send_at",
    ),
    (
        "expires-at-infinity",
        {"message": "hi", "expires_at": datetime.max.replace(tzinfo=UTC)},
        "expires_at",
    ),
]


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


@pytest.fixture
async def bookings(engine: AsyncEngine) -> None:
    """An app table, to show the caller's own writes survive a refused enqueue."""
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE bookings (id int PRIMARY KEY)"))


async def count_bookings(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM bookings"))
    finally:
        await conn.close()


def _enqueue_args(kwargs: dict[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
    kwargs = dict(kwargs)
    return kwargs.pop("recipient", "923001234567"), kwargs.pop("message", None), kwargs


@pytest.mark.usefixtures("bookings")
@pytest.mark.parametrize(
    ("kwargs", "field"), [c[1:] for c in UNSTORABLE], ids=[c[0] for c in UNSTORABLE]
)
async def test_unstorable_input_is_refused_and_the_async_connection_stays_usable(
    engine: AsyncEngine, database_url: str, kwargs: dict[str, Any], field: str
) -> None:
    recipient, message, options = _enqueue_args(kwargs)
    async with engine.begin() as conn:
        await conn.execute(sa.text("INSERT INTO bookings VALUES (1)"))
        with pytest.raises(outbox.InvalidMessage) as caught:
            await outbox.enqueue(conn, recipient, message, **options)
        await conn.execute(sa.text("INSERT INTO bookings VALUES (2)"))
    assert caught.value.field == field
    assert (await count_bookings(database_url), await count_rows(database_url)) == (2, 0)


@pytest.mark.usefixtures("bookings")
@pytest.mark.parametrize(
    ("kwargs", "field"), [c[1:] for c in UNSTORABLE], ids=[c[0] for c in UNSTORABLE]
)
async def test_unstorable_input_is_refused_and_the_asyncpg_transaction_stays_usable(
    database_url: str, kwargs: dict[str, Any], field: str
) -> None:
    recipient, message, options = _enqueue_args(kwargs)
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute("INSERT INTO bookings VALUES (1)")
            with pytest.raises(outbox.InvalidMessage) as caught:
                await outbox.enqueue(conn, recipient, message, **options)
            await conn.execute("INSERT INTO bookings VALUES (2)")
    finally:
        await conn.close()
    assert caught.value.field == field
    assert (await count_bookings(database_url), await count_rows(database_url)) == (2, 0)


@pytest.mark.usefixtures("bookings")
@pytest.mark.parametrize(
    ("kwargs", "field"), [c[1:] for c in UNSTORABLE], ids=[c[0] for c in UNSTORABLE]
)
def test_unstorable_input_is_refused_and_the_sync_session_stays_usable(
    database_url: str, kwargs: dict[str, Any], field: str
) -> None:
    recipient, message, options = _enqueue_args(kwargs)
    engine = sync_engine(database_url)
    try:
        with Session(engine) as session, session.begin():
            session.execute(sa.text("INSERT INTO bookings VALUES (1)"))
            with pytest.raises(outbox.InvalidMessage) as caught:
                outbox.enqueue_sync(session, recipient, message, **options)
            session.execute(sa.text("INSERT INTO bookings VALUES (2)"))
        with engine.connect() as conn:
            counts = conn.execute(
                sa.text(
                    "SELECT (SELECT count(*) FROM bookings), (SELECT count(*) FROM outbox_messages)"
                )
            ).one()
    finally:
        engine.dispose()
    assert caught.value.field == field
    assert tuple(counts) == (2, 0)


async def test_nul_in_message_is_refused_and_transaction_stays_usable(
    engine: AsyncEngine, database_url: str
) -> None:
    async with engine.begin() as conn:
        with pytest.raises(outbox.InvalidMessage, match="NUL"):
            await outbox.enqueue(conn, "923001234567", "Booking\x00 confirmed")
        await outbox.enqueue(conn, "923001234567", "Booking confirmed")
    assert await count_rows(database_url) == 1


async def test_uppercase_url_scheme_is_accepted_and_stored_lowercase(engine: AsyncEngine) -> None:
    media = [
        {"type": "image", "url": "HTTPS://cdn.example.com/a.jpg"},
        {"type": "document", "url": "Http://cdn.example.com/B.pdf", "filename": "B.pdf"},
    ]
    async with engine.begin() as conn:
        message_id = await outbox.enqueue(conn, "923001234567", media_urls=media)
        delivery = await outbox.get_status(conn, message_id)
    assert [part["url"] for part in delivery.media] == [
        "https://cdn.example.com/a.jpg",
        "http://cdn.example.com/B.pdf",
    ]


async def test_ten_media_parts_are_stored(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        message_id = await outbox.enqueue(
            conn, "923001234567", media_urls={"images": [IMAGE] * MAX_MEDIA_PARTS}
        )
        delivery = await outbox.get_status(conn, message_id)
    assert len(delivery.media) == MAX_MEDIA_PARTS


async def test_expires_at_is_stored(engine: AsyncEngine) -> None:
    expires_at = datetime.now(UTC) + timedelta(hours=2)
    async with engine.begin() as conn:
        message_id = await outbox.enqueue(conn, "923001234567", "hi", expires_at=expires_at)
        delivery = await outbox.get_status(conn, message_id)
    assert delivery.expires_at == expires_at


async def test_expires_at_is_stored_on_asyncpg(database_url: str) -> None:
    expires_at = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=5)))
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            message_id = await outbox.enqueue(conn, "923001234567", "hi", expires_at=expires_at)
        delivery = await outbox.get_status(conn, message_id)
    finally:
        await conn.close()
    assert delivery.expires_at == expires_at


def test_enqueue_sync_stores_expires_at(database_url: str) -> None:
    expires_at = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    engine = sync_engine(database_url)
    try:
        with Session(engine) as session, session.begin():
            outbox.enqueue_sync(session, "923001234567", "hi", expires_at=expires_at)
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT expires_at FROM outbox_messages")).scalar_one()
    finally:
        engine.dispose()
    assert stored == expires_at


async def test_without_expires_at_the_message_never_expires(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        delivery = await outbox.get_status(conn, await outbox.enqueue(conn, "923001234567", "hi"))
    assert delivery.expires_at is None


async def test_expires_at_before_send_at_is_refused(engine: AsyncEngine) -> None:
    send_at = datetime.now(UTC) + timedelta(days=1)
    async with engine.connect() as conn:
        with pytest.raises(outbox.InvalidMessage, match="later than send_at") as caught:
            await outbox.enqueue(
                conn, "923001234567", "hi", send_at=send_at, expires_at=send_at - timedelta(hours=1)
            )
    assert caught.value.field == "expires_at"


@pytest.mark.parametrize(
    "offset",
    [timedelta(hours=5, seconds=15), timedelta(hours=5, microseconds=1), -timedelta(hours=22)],
    ids=["seconds", "microseconds", "beyond-postgres-range"],
)
def test_enqueue_sync_stores_times_with_any_python_offset(
    database_url: str, offset: timedelta
) -> None:
    when = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone(offset))
    engine = sync_engine(database_url)
    try:
        with Session(engine) as session, session.begin():
            outbox.enqueue_sync(
                session, "923001234567", "hi", send_at=when, expires_at=when + timedelta(hours=1)
            )
        with engine.connect() as conn:
            stored = conn.execute(
                sa.text("SELECT available_at, expires_at FROM outbox_messages")
            ).one()
    finally:
        engine.dispose()
    assert tuple(stored) == (when, when + timedelta(hours=1))


async def test_enqueue_on_asyncpg_outside_a_transaction_raises_and_writes_nothing(
    database_url: str,
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(outbox.NotInTransaction, match="needs an open transaction"):
            await outbox.enqueue(conn, "923001234567", "would be committed at once")
    finally:
        await conn.close()
    assert await count_rows(database_url) == 0


async def test_enqueue_on_an_autocommit_connection_raises_and_writes_nothing(
    engine: AsyncEngine, database_url: str
) -> None:
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        with pytest.raises(outbox.NotInTransaction, match="connection in autocommit"):
            await outbox.enqueue(conn, "923001234567", "would be committed at once")
    assert await count_rows(database_url) == 0


def test_enqueue_sync_on_an_autocommit_session_raises_and_writes_nothing(
    database_url: str,
) -> None:
    autocommit = sync_engine(database_url).execution_options(isolation_level="AUTOCOMMIT")
    with Session(autocommit) as session, pytest.raises(outbox.NotInTransaction):
        outbox.enqueue_sync(session, "923001234567", "would be committed at once")
    with sync_engine(database_url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM outbox_messages")).scalar() == 0


async def test_enqueue_into_a_database_without_the_schema_says_to_migrate(
    empty_database_url: str,
) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        with pytest.raises(outbox.SchemaMissing, match="run `outbox migrate` first"):
            async with conn.transaction():
                await outbox.enqueue(conn, "923001234567", "hello")
    finally:
        await conn.close()
