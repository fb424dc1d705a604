"""What the webhook receiver learns about Meta's rules (issue 16, points 1 and 2): signed bodies
posted to the receiver, then the daemon's next sends. Bodies are Meta's: the real failed-status
example of whatsapp-examples/, and the user_preferences and referral shapes of Meta's webhook
reference (no real capture of those is in whatsapp-examples/)."""

from __future__ import annotations

import copy
import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.simulator import Simulator
from outbox.webhooks import create_app
from outbox.webhooks.payload import sign
from tests.daemon_helpers import PHONE, drain, enqueue, status
from tests.integration.test_webhooks import eventually, example, scalar

SECRET = "test-app-secret"
CUSTOMER = "16505551234"
PROMO = outbox.Template("spring_sale", "en_US", category="marketing")
RECEIPT = outbox.Template("order_receipt", "en_US", ("42",), category="utility")


def change(field: str, value: dict[str, Any]) -> bytes:
    """A signed-body envelope of one change to our number."""
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE},
        **value,
    }
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": "102290129340398", "changes": [{"value": value, "field": field}]}],
        }
    ).encode()


def preference(choice: str, *, at: int | None = None, customer: str = CUSTOMER) -> bytes:
    """A user_preferences webhook (Meta's webhook reference, user_preferences)."""
    return change(
        "user_preferences",
        {
            "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": customer}],
            "user_preferences": [
                {
                    "wa_id": customer,
                    "detail": "User requested to stop marketing messages",
                    "category": "marketing_messages",
                    "value": choice,
                    "timestamp": at or int(time.time()),
                }
            ],
        },
    )


def inbound(text: str, *, wamid: str, referral: bool = False) -> bytes:
    message: dict[str, Any] = {
        "from": CUSTOMER,
        "id": wamid,
        "timestamp": str(int(time.time())),
        "type": "text",
        "text": {"body": text},
    }
    if referral:  # a click-to-WhatsApp ad (Meta's messages webhook reference, referral)
        message["referral"] = {
            "source_url": "https://fb.me/2ZulEu42P",
            "source_id": "120226305854810726",
            "source_type": "ad",
            "headline": "Spring sale",
            "body": "Tap to chat",
            "media_type": "image",
            "image_url": "https://scontent.example/ad.jpg",
            "ctwa_clid": "ARAkLkA8rmlFeiCktEJQ-QTwRiyYHAFDLMNDBH0CD3qpjd0HR4irJ6LEkR7",
        }
    return change(
        "messages",
        {"contacts": [{"profile": {"name": "Kerry"}, "wa_id": CUSTOMER}], "messages": [message]},
    )


def failed_status(code: int) -> bytes:
    """The real failed-status example, for our number and customer, with Meta's `code`."""
    data = copy.deepcopy(example("status_webhook_failed_130472.json"))
    value = data["entry"][0]["changes"][0]["value"]
    value["metadata"]["phone_number_id"] = PHONE
    status = value["statuses"][0]
    status.update(recipient_id=CUSTOMER, timestamp=str(int(time.time())))
    status["errors"][0]["code"] = code
    return json.dumps(data).encode()


@pytest.fixture
async def receiver(database_url: str, tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    settings = outbox.Settings(
        database_url=database_url, app_secret=SECRET, webhook_verify_token="t", home=tmp_path
    )
    async with TestClient(TestServer(create_app(settings))) as client:
        yield client


async def post(client: TestClient[Any, Any], engine: AsyncEngine, body: bytes) -> None:
    """POST a signed body and wait until the receiver has applied it."""
    answer = await client.post(
        "/webhook",
        data=io.BytesIO(body),
        headers={"X-Hub-Signature-256": sign(SECRET, body), "Content-Type": "application/json"},
    )
    assert answer.status == 200

    async def applied() -> bool:
        return bool(
            await scalar(
                engine,
                "SELECT applied_at IS NOT NULL FROM outbox_webhooks WHERE body = :body "
                "ORDER BY id DESC LIMIT 1",
                body=body,
            )
        )

    await eventually(applied)


async def suppressed(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return [o.source for o in await outbox.list_optouts(conn, sender=PHONE)]


async def test_after_a_stop_webhook_marketing_ends_opted_out_and_utility_goes(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    receiver: TestClient[Any, Any],
) -> None:
    await post(receiver, engine, preference("stop"))
    marketing = await enqueue(engine, CUSTOMER, None, template=PROMO)
    utility = await enqueue(engine, CUSTOMER, None, template=RECEIPT)
    await drain(settings)
    delivery = await status(engine, marketing)
    assert delivery.status == "failed"
    assert delivery.last_error is not None
    assert delivery.last_error.startswith("opted_out")
    assert (await status(engine, utility)).status == "sent"
    assert simulator.requests == 1
    assert [a["type"] for a in simulator.accepted] == ["template"]


async def test_a_resume_webhook_lifts_the_suppression(
    engine: AsyncEngine, receiver: TestClient[Any, Any]
) -> None:
    await post(receiver, engine, preference("stop", at=int(time.time()) - 60))
    await post(receiver, engine, preference("resume"))
    assert await suppressed(engine) == []


async def test_a_late_older_stop_does_not_undo_a_newer_resume(
    engine: AsyncEngine, receiver: TestClient[Any, Any]
) -> None:
    await post(receiver, engine, preference("resume"))
    await post(receiver, engine, preference("stop", at=int(time.time()) - 3600))
    assert await suppressed(engine) == []


async def test_an_inbound_stop_keyword_suppresses_the_customer(
    engine: AsyncEngine, receiver: TestClient[Any, Any]
) -> None:
    await post(receiver, engine, inbound(" Alto! ", wamid="wamid.in.alto"))
    assert await suppressed(engine) == ["keyword"]


async def test_an_ordinary_inbound_text_suppresses_no_one(
    engine: AsyncEngine, receiver: TestClient[Any, Any]
) -> None:
    await post(receiver, engine, inbound("please stop by at 5", wamid="wamid.in.text"))
    assert await suppressed(engine) == []


async def test_a_failed_status_with_131050_suppresses_the_customer(
    engine: AsyncEngine, receiver: TestClient[Any, Any]
) -> None:
    await post(receiver, engine, failed_status(131050))
    assert await suppressed(engine) == ["131050"]


async def test_a_failed_status_with_131047_closes_the_window(
    engine: AsyncEngine, receiver: TestClient[Any, Any]
) -> None:
    await post(receiver, engine, inbound("hi", wamid="wamid.in.hi"))
    async with engine.connect() as conn:
        assert (await outbox.window(conn, CUSTOMER, PHONE)).open
    await post(receiver, engine, failed_status(131047))
    async with engine.connect() as conn:
        window = await outbox.window(conn, CUSTOMER, PHONE)
    assert not window.open


async def test_a_referral_message_is_stored_as_one_and_opens_the_24_hour_window(
    engine: AsyncEngine, receiver: TestClient[Any, Any]
) -> None:
    await post(receiver, engine, inbound("I saw your ad", wamid="wamid.in.ad", referral=True))
    async with engine.connect() as conn:
        window = await outbox.window(conn, CUSTOMER, PHONE)
        referral = await conn.scalar(
            sa.text("SELECT referral FROM outbox_inbound WHERE wamid = 'wamid.in.ad'")
        )
    assert referral is True
    assert window.closes_at is not None
    assert window.last_inbound_at is not None
    assert (window.closes_at - window.last_inbound_at).total_seconds() == 24 * 3600
