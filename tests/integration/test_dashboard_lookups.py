"""Each dashboard lookup walks its own index: with sequential scans priced out, every plan
names the index meant for it (not the primary key read backwards through a filter)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox.store import dashboard as lookups

PARAMS = {"row_id": 1, "recipient": "923001234567", "reference": "booking-1", "wamid": "wamid.X"}


@pytest.mark.parametrize(
    ("statement", "indexes"),
    [
        (lookups.FIND_BY_ID, ["pk_outbox_messages"]),
        (lookups.FIND_BY_RECIPIENT, ["ix_outbox_messages_recipient"]),
        (lookups.FIND_BY_REFERENCE, ["ix_outbox_messages_reference"]),
        (
            lookups.FIND_BY_WAMID,
            [
                "ix_outbox_messages_message_id",
                "pk_outbox_part_wamids",
                "uq_outbox_statuses_wamid",
            ],
        ),
    ],
    ids=["id", "recipient", "reference", "wamid"],
)
async def test_lookup_uses_its_index(
    engine: AsyncEngine, statement: sa.Executable, indexes: list[str]
) -> None:
    bound = statement.params(**PARAMS, limit=50)  # type: ignore[attr-defined]
    compiled = bound.compile(engine.sync_engine, compile_kwargs={"literal_binds": True})
    async with engine.connect() as conn:
        await conn.exec_driver_sql("SET enable_seqscan = off")
        result = await conn.exec_driver_sql(f"EXPLAIN {compiled}")
        plan = "\n".join(row[0] for row in result)
    assert "Seq Scan" not in plan, plan
    for index in indexes:  # not the primary key walked backwards with a filter
        assert index in plan, plan
