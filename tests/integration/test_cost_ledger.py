"""The cost ledger through the receiver: signed status webhooks with Meta's `pricing` object are
stored once per part, and priced with a dated rate card to the cent."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.callbacks import callback_data
from outbox.cost.ledger import Charged, in_cents, price
from outbox.cost.rates import parse_rate_card
from outbox.store import cost
from outbox.webhooks import create_app
from tests.integration.test_webhooks import (
    SECRET,
    VERIFY_TOKEN,
    claimed_row,
    envelope,
    example_status,
    post,
    record_part,
    scalar,
)

CARD = """\
country,category,currency,price,valid_from
IN,marketing,USD,0.0107,2025-07-01
IN,marketing,USD,0.0118,2026-10-01
BR,utility,USD,0.0068,2025-07-01
*,authentication,USD,0.0040,2025-07-01
"""
PMP = "PMP"
SEP_30_LATE = int(datetime(2026, 9, 30, 23, 59, tzinfo=UTC).timestamp())
OCT_1 = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp())


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> outbox.Settings:
    return outbox.Settings(
        database_url=database_url,
        app_secret=SECRET,
        webhook_verify_token=VERIFY_TOKEN,
        home=tmp_path,
    )


@pytest.fixture
async def client(settings: outbox.Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(settings))) as client:
        yield client


@pytest.fixture
async def installation(engine: AsyncEngine) -> str:
    return str(await scalar(engine, "SELECT id FROM outbox_installation"))


async def rows(engine: AsyncEngine, count: int, recipient: str = "919876543210") -> list[int]:
    async with engine.begin() as conn:
        return [await outbox.enqueue(conn, recipient, f"message {n}") for n in range(count)]


def priced_status(
    wamid: str,
    *,
    status: str = "sent",
    timestamp: int = OCT_1,
    recipient: str = "919876543210",
    category: str = "marketing",
    kind: str | None = "regular",
    billable: bool = True,
    callback: str | None = None,
) -> dict[str, Any]:
    """The delivered example's status entry with a current (PMP) pricing object."""
    entry = example_status(wamid=wamid, status=status, timestamp=timestamp, callback=callback)
    entry["recipient_id"] = recipient
    entry.pop("conversation", None)
    entry["pricing"] = {"billable": billable, "pricing_model": PMP, "category": category}
    if kind is not None:
        entry["pricing"]["type"] = kind
    return entry


async def ledger(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(sa.text("SELECT * FROM outbox_costs ORDER BY wamid"))
        return [dict(row) for row in result.mappings()]


async def totals(engine: AsyncEngine, group: str = "total") -> list[Any]:
    async with engine.connect() as conn:
        found = await cost.charged_parts(conn, group, None)
    return price(
        [Charged(r["grp"], r["country"], r["category"], r["day"], int(r["count"])) for r in found],
        parse_rate_card(CARD),
    )


async def test_example_payload_pricing_is_stored_with_our_part(
    client: TestClient[Any, Any], engine: AsyncEngine, installation: str
) -> None:
    [row_id] = await rows(engine, 1)
    entry = example_status(wamid="wamid.A", callback=callback_data(installation, row_id, 0))
    assert await post(client, engine, envelope(entry)) == 200
    [part] = await ledger(engine)
    assert (part["message_id"], part["part"], part["category"], part["billable"]) == (
        row_id,
        0,
        "service",
        True,
    )
    assert (part["pricing_model"], part["pricing_type"], part["country"]) == ("CBP", None, "IL")


async def test_pricing_repeated_on_sent_delivered_and_replays_counts_the_part_once(
    client: TestClient[Any, Any], engine: AsyncEngine, installation: str
) -> None:
    [row_id] = await rows(engine, 1)
    callback = callback_data(installation, row_id, 0)
    sent = envelope(priced_status("wamid.A", callback=callback))
    delivered = envelope(priced_status("wamid.A", status="delivered", callback=callback))
    for body in (sent, delivered, sent, delivered):
        assert await post(client, engine, body) == 200
    [total] = await totals(engine)
    assert (total.messages, total.amounts) == (1, {"USD": Decimal("0.0118")})
    assert [part["changed"] for part in await ledger(engine)] == [False]


async def test_later_different_pricing_keeps_the_first_and_marks_the_part_changed(
    client: TestClient[Any, Any], engine: AsyncEngine, installation: str
) -> None:
    [row_id] = await rows(engine, 1)
    callback = callback_data(installation, row_id, 0)
    await post(client, engine, envelope(priced_status("wamid.A", callback=callback)))
    free = priced_status(
        "wamid.A", status="delivered", kind="free_entry_point", billable=False, callback=callback
    )
    await post(client, engine, envelope(free))
    [part] = await ledger(engine)
    assert (part["pricing_type"], part["billable"], part["changed"]) == ("regular", True, True)


async def test_one_body_pricing_a_part_twice_differently_keeps_the_first_and_marks_it(
    client: TestClient[Any, Any], engine: AsyncEngine, installation: str
) -> None:
    [row_id] = await rows(engine, 1)
    callback = callback_data(installation, row_id, 0)
    free = priced_status(
        "wamid.A", status="delivered", kind="free_entry_point", billable=False, callback=callback
    )
    await post(client, engine, envelope(priced_status("wamid.A", callback=callback), free))
    [part] = await ledger(engine)
    assert (part["pricing_type"], part["billable"], part["changed"]) == ("regular", True, True)


async def test_pricing_of_parts_not_ours_is_stored_but_not_in_our_totals(
    client: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    other = callback_data("someoneelse1", 1, 0)
    await post(client, engine, envelope(priced_status("wamid.theirs", callback=other)))
    await post(client, engine, envelope(priced_status("wamid.nocallback")))
    assert [part["message_id"] for part in await ledger(engine)] == [None, None]
    assert await totals(engine) == []


@pytest.mark.parametrize("last", [False, True], ids=["an earlier part", "the last part"])
async def test_part_without_callback_data_is_ours_by_its_recorded_wamid(
    client: TestClient[Any, Any], engine: AsyncEngine, last: bool
) -> None:
    """Recorded as the daemon records it: an earlier part's wamid in outbox_part_wamids, the
    last part's as the row's message_id alone."""
    row_id = await claimed_row(engine, media=0 if last else 1)
    await record_part(engine, row_id, 0, "wamid.A", final=last)
    await post(client, engine, envelope(priced_status("wamid.A")))
    [total] = await totals(engine)
    assert total.messages == 1


async def test_hundred_status_webhooks_total_to_the_cent(
    client: TestClient[Any, Any], engine: AsyncEngine, installation: str
) -> None:
    # 60 parts, each `sent` in its own webhook, 40 of them `delivered` in another: 100 webhooks.
    #   25 IN marketing billed 2026-09-30 23:59 (delivered after midnight: the first counts)
    #      25 x 0.0107 = 0.2675
    #   15 IN marketing billed 2026-10-01 00:00, the new rate's first moment: 15 x 0.0118 = 0.1770
    #   10 BR utility: 10 x 0.0068 = 0.0680
    #    5 US authentication, the `*` rate: 5 x 0.0040 = 0.0200
    #    3 IN utility free_customer_service, 1 DE marketing free_entry_point: not charged
    #    1 IN marketing_lite, a category without a rate: charged but unpriced
    # total 0.5325 USD, shown as 0.53; 56 charged parts, 1 of them unpriced.
    ids = await rows(engine, 60)
    plan: list[dict[str, Any]] = []
    for n, row_id in enumerate(ids):
        spec: dict[str, Any] = {"callback": callback_data(installation, row_id, 0)}
        if n < 25:
            spec.update(timestamp=SEP_30_LATE)
        elif n < 40:
            spec.update(timestamp=OCT_1)
        elif n < 50:
            spec.update(recipient="5511987654321", category="utility")
        elif n < 55:
            spec.update(recipient="15551234567", category="authentication")
        elif n < 58:
            spec.update(category="utility", kind="free_customer_service", billable=False)
        elif n < 59:
            spec.update(recipient="4915112345678", kind="free_entry_point", billable=False)
        else:
            spec.update(category="marketing_lite")
        plan.append(spec)
    bodies = [envelope(priced_status(f"wamid.{n}", **spec)) for n, spec in enumerate(plan)]
    for n, spec in enumerate(plan[:40]):
        later = {**spec, "timestamp": spec["timestamp"] + 90}
        bodies.append(envelope(priced_status(f"wamid.{n}", status="delivered", **later)))
    assert len(bodies) == 100
    for body in bodies:
        assert await post(client, engine, copy.copy(body)) == 200
    [total] = await totals(engine)
    assert (total.messages, total.unpriced) == (56, 1)
    assert total.amounts == {"USD": Decimal("0.5325")}
    assert in_cents(total.amounts["USD"]) == Decimal("0.53")


async def test_totals_by_country_split_the_charged_parts(
    client: TestClient[Any, Any], engine: AsyncEngine, installation: str
) -> None:
    in_row, br_row = await rows(engine, 2)
    await post(
        client,
        engine,
        envelope(
            priced_status("wamid.in", callback=callback_data(installation, in_row, 0)),
            priced_status(
                "wamid.br",
                recipient="5511987654321",
                category="utility",
                callback=callback_data(installation, br_row, 0),
            ),
        ),
    )
    found = {total.group: total.amounts for total in await totals(engine, "country")}
    assert found == {"BR": {"USD": Decimal("0.0068")}, "IN": {"USD": Decimal("0.0118")}}


async def test_metrics_count_charged_parts_once_and_their_amount_by_the_rate_card(
    settings: outbox.Settings,
    engine: AsyncEngine,
    installation: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    card = tmp_path / "rates.csv"
    card.write_text(CARD)
    monkeypatch.setenv("OUTBOX_RATE_CARD", str(card))
    [row_id] = await rows(engine, 1)
    callback = callback_data(installation, row_id, 0)
    async with TestClient(TestServer(create_app(settings))) as client:
        for status in ("sent", "delivered"):
            body = envelope(priced_status("wamid.A", status=status, callback=callback))
            assert await post(client, engine, body) == 200
        text = await (await client.get("/metrics")).text()
    assert 'outbox_webhook_charged_messages_total{category="marketing",country="IN"} 1.0' in text
    assert (
        'outbox_webhook_charged_amount_total{category="marketing",country="IN",currency="USD"} '
        "0.0118" in text
    )
