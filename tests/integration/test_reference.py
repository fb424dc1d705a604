"""enqueue(reference=): the app's own name for a row, stored, bounded and returned."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.errors import InvalidMessage
from outbox.status import get_status


async def test_reference_is_stored_and_read_back(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        row_id = await outbox.enqueue(conn, "+1 650 555 1234", "hi", reference="booking-1234")
    async with engine.connect() as conn:
        delivery = await get_status(conn, row_id)
    assert delivery.reference == "booking-1234"
    assert delivery.to_json()["reference"] == "booking-1234"


async def test_reference_longer_than_255_characters_is_refused(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        with pytest.raises(InvalidMessage) as raised:
            await outbox.enqueue(conn, "16505551234", "hi", reference="x" * 256)
    assert (raised.value.field, raised.value.rule) == ("reference", "too_long")


async def test_reference_that_is_not_a_string_is_refused(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        with pytest.raises(InvalidMessage) as raised:
            await outbox.enqueue(conn, "16505551234", "hi", reference=1234)  # type: ignore[arg-type]
    assert (raised.value.field, raised.value.rule) == ("reference", "type")


async def test_reference_with_a_nul_character_is_refused(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        with pytest.raises(InvalidMessage) as raised:
            await outbox.enqueue(conn, "16505551234", "hi", reference="a\x00b")
    assert raised.value.rule == "nul_character"
