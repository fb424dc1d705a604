"""get_status() and list_messages() read a message's delivery state back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox


async def test_unknown_id_raises_message_not_found(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        with pytest.raises(outbox.MessageNotFound) as caught:
            await outbox.get_status(conn, 424242)
    assert isinstance(caught.value, LookupError)


async def test_part_ids_follow_the_accepted_parts_text_last(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        message_id = await outbox.enqueue(
            conn,
            "923001234567",
            "caption text",
            media_urls={"images": ["https://a.example/1.jpg", "https://a.example/2.jpg"]},
        )
        accepted = [{"wamid": "wamid.A", "status": "sent"}, {"wamid": "wamid.B", "status": "read"}]
        await conn.execute(
            sa.text("UPDATE outbox_messages SET parts = CAST(:parts AS jsonb) WHERE id = :id"),
            {"parts": json.dumps(accepted), "id": message_id},
        )
        delivery = await outbox.get_status(conn, message_id)
    assert delivery.part_ids == ("wamid.A", "wamid.B", None)
    assert [p.status for p in delivery.parts] == ["sent", "read", None]


async def test_delivery_is_frozen(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        delivery = await outbox.get_status(conn, await outbox.enqueue(conn, "9230012345", "x"))
    with pytest.raises(AttributeError):
        delivery.status = "sent"  # type: ignore[misc]


async def test_list_is_newest_first_and_filters(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        a = await outbox.enqueue(conn, "923001111111", "a")
        b = await outbox.enqueue(conn, "923002222222", "b")
        c = await outbox.enqueue(conn, "923001111111", "c")
        await conn.execute(sa.text(f"UPDATE outbox_messages SET status = 'failed' WHERE id = {b}"))
    async with engine.connect() as conn:
        everything = await outbox.list_messages(conn)
        by_recipient = await outbox.list_messages(conn, recipient="+92 300 111 1111")
        failed = await outbox.list_messages(conn, status="failed")
        limited = await outbox.list_messages(conn, limit=1)
        future = await outbox.list_messages(conn, since=datetime.now(UTC) + timedelta(hours=1))
    assert [d.id for d in everything] == [c, b, a]
    assert [d.id for d in by_recipient] == [c, a]
    assert [d.id for d in failed] == [b]
    assert [d.id for d in limited] == [c]
    assert future == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"status": "done"}, "status"), ({"limit": 0}, "limit"), ({"recipient": "abc"}, "recipient")],
)
async def test_list_rejects_bad_filters(
    engine: AsyncEngine, kwargs: dict[str, object], field: str
) -> None:
    async with engine.connect() as conn:
        with pytest.raises(outbox.InvalidMessage) as caught:
            await outbox.list_messages(conn, **kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


async def test_list_finds_a_recipient_stored_before_the_phone_number_rules(
    engine: AsyncEngine,
) -> None:
    # Rows written before revision 0002 (or with raw SQL) may hold numbers libphonenumber calls
    # impossible; a filter only normalises punctuation so they can still be found.
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("INSERT INTO outbox_messages (recipient, message) VALUES ('1234567', 'old')")
        )
    async with engine.connect() as conn:
        found = await outbox.list_messages(conn, recipient="+1 234 567")
    assert [d.message for d in found] == ["old"]


async def test_expires_at_reads_back_in_status_and_json(engine: AsyncEngine) -> None:
    expires_at = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with engine.begin() as conn:
        message_id = await outbox.enqueue(conn, "923001234567", "hi", expires_at=expires_at)
        delivery = await outbox.get_status(conn, message_id)
    assert delivery.expires_at == expires_at
    assert delivery.to_json()["expires_at"] == "2031-01-02T03:04:05+00:00"


async def test_history_shows_parts_accepted_by_a_daemon_killed_before_it_wrote_them(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        message_id = await outbox.enqueue(
            conn, "923001234567", "text", media_urls={"images": ["https://a.example/1.jpg"]}
        )
        # Part 0 recorded with its accepted event; part 1 recorded, its event lost in a SIGKILL,
        # and Meta's status for it (whole seconds) stored since.
        parts = [
            {"wamid": "wamid.A", "status": "sent", "sent_at": "2026-01-01T10:00:00.100+00:00"},
            {"wamid": "wamid.B", "status": "sent", "sent_at": "2026-01-01T10:00:00.500+00:00"},
        ]
        await conn.execute(
            sa.text("UPDATE outbox_messages SET parts = CAST(:parts AS jsonb) WHERE id = :id"),
            {"parts": json.dumps(parts), "id": message_id},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO outbox_events (message_id, part, kind, http_status, detail, at) "
                "VALUES (:id, 0, 'accepted', 200, 'wamid.A', '2026-01-01T10:00:00.100+00'), "
                "(:id, 1, 'status:sent', NULL, NULL, '2026-01-01T10:00:00+00')"
            ),
            {"id": message_id},
        )
        history = await outbox.status.get_history(conn, message_id)
    assert [(e.part, e.kind, e.detail, e.http_status) for e in history] == [
        (0, "accepted", "wamid.A", 200),
        (1, "accepted", "wamid.B", None),
        (1, "status:sent", None, None),
    ]
