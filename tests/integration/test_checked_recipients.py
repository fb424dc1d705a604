"""The daemon checks a recipient with libphonenumber only when enqueue() did not (migration
0022): a row enqueue() wrote goes without a second check; a row whose recipient plain SQL wrote
or changed afterwards is checked, and failed when no phone number can have it."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.delivery import parts
from outbox.simulator import Simulator
from tests.daemon_helpers import drain, enqueue, sent, status


async def test_enqueue_keeps_the_recipient_it_checked(
    engine: AsyncEngine, database_url: str
) -> None:
    row = await enqueue(engine, "+92 300-123 4567", "hello")
    conn = await asyncpg.connect(database_url)
    try:
        kept = await conn.fetchrow(
            "SELECT recipient, checked_recipient FROM outbox_messages WHERE id = $1", row
        )
    finally:
        await conn.close()
    assert (kept["recipient"], kept["checked_recipient"]) == ("923001234567", "923001234567")


async def test_a_checked_row_is_not_checked_again(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    row = await enqueue(engine, "923001234567", "hello")

    def refuse(recipient: object, field: str = "recipient") -> str:
        raise AssertionError(f"checked again: {recipient!r}")

    monkeypatch.setattr(parts, "normalize_recipient", refuse)
    assert await drain(settings) == 0
    assert sent(simulator) == [f"outbox:{row}:0"]
    assert (await status(engine, row)).status == "sent"


async def test_a_recipient_changed_with_sql_is_checked_again(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, database_url: str
) -> None:
    row = await enqueue(engine, "923001234567", "hello")
    conn = await asyncpg.connect(database_url)
    try:  # +1 234 5678: too few digits for country code 1
        await conn.execute("UPDATE outbox_messages SET recipient = '12345678' WHERE id = $1", row)
    finally:
        await conn.close()
    assert await drain(settings) == 0
    assert sent(simulator) == []
    delivery = await status(engine, row)
    assert delivery.status == "failed"
    assert delivery.last_error is not None
    assert delivery.last_error.startswith("invalid row: recipient:")
