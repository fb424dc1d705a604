"""The template webhooks keep the catalogue: status, quality and category updates.

No example payload of these is in /work/shared/whatsapp-examples/: the bodies follow Meta's
webhook reference (message_template_status_update, message_template_quality_update,
template_category_update), whose entry id is the WABA id.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.store import templates_catalogue
from tests.integration.test_policy_webhooks import post, receiver
from tests.integration.test_webhooks import scalar

__all__ = ["receiver"]  # the fixture, used by name

WABA = "102290129340398"
TEMPLATE_ID = "594425479261596"
SHIPPED = outbox.Template("order_shipped", "en_US", ("Ali", "A-1042", "12 May"))


def template_change(field: str, value: dict[str, Any]) -> bytes:
    value = {
        "message_template_id": int(TEMPLATE_ID),
        "message_template_name": "order_shipped",
        "message_template_language": "en_US",
        **value,
    }
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {"id": WABA, "time": 1733464800, "changes": [{"value": value, "field": field}]}
            ],
        }
    ).encode()


@pytest.fixture
async def known(engine: AsyncEngine) -> None:
    entry = {
        "name": "order_shipped",
        "language": "en_US",
        "template_id": TEMPLATE_ID,
        "category": "UTILITY",
        "status": "APPROVED",
        "quality": "GREEN",
        "parameter_count": 3,
    }
    async with engine.begin() as conn:
        await templates_catalogue.upsert_templates(conn, WABA, [entry])


async def column(engine: AsyncEngine, name: str) -> object:
    return await scalar(engine, f"SELECT {name} FROM outbox_templates")


async def test_a_paused_status_webhook_makes_enqueue_refuse_the_template(
    known: None, receiver: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    body = template_change(
        "message_template_status_update", {"event": "PAUSED", "reason": "LOW_QUALITY"}
    )
    await post(receiver, engine, body)
    assert await column(engine, "status") == "PAUSED"
    with pytest.raises(outbox.InvalidMessage) as raised:
        async with engine.begin() as conn:
            await outbox.enqueue(conn, "923001234567", template=SHIPPED)
    assert raised.value.rule == "not_approved"


async def test_a_reinstated_template_is_approved_again(
    known: None, receiver: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    await post(
        receiver, engine, template_change("message_template_status_update", {"event": "PAUSED"})
    )
    await post(
        receiver, engine, template_change("message_template_status_update", {"event": "REINSTATED"})
    )
    assert await column(engine, "status") == "APPROVED"


async def test_a_quality_webhook_sets_the_quality(
    known: None, receiver: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    body = template_change(
        "message_template_quality_update",
        {"previous_quality_score": "GREEN", "new_quality_score": "YELLOW"},
    )
    await post(receiver, engine, body)
    assert await column(engine, "quality") == "YELLOW"


async def test_a_category_webhook_records_the_change_and_counts_it(
    known: None, receiver: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    body = template_change(
        "template_category_update", {"previous_category": "UTILITY", "new_category": "MARKETING"}
    )
    await post(receiver, engine, body)
    assert (await column(engine, "category"), await column(engine, "previous_category")) == (
        "MARKETING",
        "UTILITY",
    )
    assert await column(engine, "category_changed_at IS NOT NULL")
    metrics = await (await receiver.get("/metrics")).text()
    assert (
        'outbox_webhook_template_category_changes_total{new="MARKETING",old="UTILITY"} 1.0'
        in metrics
    )


async def test_a_webhook_for_a_template_the_catalogue_lacks_adds_nothing(
    receiver: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    await post(
        receiver, engine, template_change("message_template_status_update", {"event": "APPROVED"})
    )
    assert await scalar(engine, "SELECT count(*) FROM outbox_templates") == 0
