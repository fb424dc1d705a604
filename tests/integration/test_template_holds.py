"""Meta's word on a template reaches its rows (issue 16, point 3): a PAUSED status webhook holds
the template's unsent rows with no request, a DISABLED one fails them, an APPROVED one lets them
go; the daemon reads the catalogue before each send, so a row claimed after the webhook is held
too. Against the simulator, the receiver and a real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.delivery.daemon import Daemon
from outbox.simulator import Simulator
from outbox.store import templates_catalogue
from tests.daemon_helpers import drain, enqueue, script
from tests.integration.test_policy_webhooks import post, receiver
from tests.integration.test_template_catalogue_webhooks import known, template_change

__all__ = ["known", "receiver"]  # fixtures, used by name

CUSTOMER = "923001234567"
SHIPPED = outbox.Template("order_shipped", "en_US", ("Ali", "A-1042", "12 May"), category="utility")
DISABLED = {"event": "DISABLED", "disable_info": {"disable_date": "1733468400"}}
NOT_SENT_AGAIN = (
    "template_disabled: Meta says order_shipped (en_US) is DISABLED; not sent again "
    "(an earlier request with no clear answer may have been accepted)"
)
PAUSED = template_change(
    "message_template_status_update",
    {"event": "PAUSED", "other_info": {"title": "FIRST_PAUSE", "description": "3 hours"}},
)


async def row_of(engine: AsyncEngine, row: int) -> sa.Row[Any]:
    async with engine.connect() as conn:
        return (
            await conn.execute(
                sa.text(
                    "SELECT status, attempts, error_code, last_error, available_at,"
                    " available_at - now() AS wait FROM outbox_messages WHERE id = :id"
                ),
                {"id": row},
            )
        ).one()


async def raw_template_row(engine: AsyncEngine, name: str = "order_shipped") -> int:
    """A template row inserted with plain SQL (enqueue checks nothing of the catalogue there)."""
    async with engine.begin() as conn:
        return int(
            await conn.scalar(
                sa.text(
                    "INSERT INTO outbox_messages (recipient, template, category) VALUES"
                    " (:to, CAST(:template AS jsonb), 'utility') RETURNING id"
                ),
                {
                    "to": CUSTOMER,
                    "template": f'{{"name": "{name}", "language": {{"code": "en_US"}}}}',
                },
            )
        )


async def ruled(settings: outbox.Settings, engine: AsyncEngine, row: int) -> sa.Row[Any]:
    """Run a daemon until it has ruled on the row (no longer pending without a reason)."""
    daemon = Daemon(settings)
    running = asyncio.create_task(daemon.run())
    try:
        for _ in range(200):
            found = await row_of(engine, row)
            if found.status != "sending" and found.last_error is not None:
                return found
            await asyncio.sleep(0.05)
        raise AssertionError("the daemon never ruled on the row")
    finally:
        daemon.stop()
        assert await asyncio.wait_for(running, 10) == 0


async def test_a_paused_webhook_holds_the_templates_waiting_rows_at_once(
    known: None, receiver: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    row = await enqueue(engine, CUSTOMER, None, template=SHIPPED)
    await post(receiver, engine, PAUSED)
    found = await row_of(engine, row)
    assert (found.status, found.error_code) == ("pending", 132015)
    assert found.last_error.startswith("template_paused: Meta paused order_shipped (en_US) until")
    # FIRST_PAUSE: three hours from the webhook's time (2024-12-06), long past: due now.
    until = await templates_catalogue_paused_until(engine)
    assert until == datetime(2024, 12, 6, 6, 0, tzinfo=UTC) + timedelta(hours=3)


async def templates_catalogue_paused_until(engine: AsyncEngine) -> object:
    async with engine.connect() as conn:
        return await conn.scalar(sa.text("SELECT paused_until FROM outbox_templates"))


def paused_now() -> bytes:
    """A PAUSED webhook sent now (its pause ends three hours from now)."""
    body = PAUSED.decode().replace("1733464800", str(int(datetime.now(UTC).timestamp())))
    return body.encode()


async def test_a_row_claimed_after_a_paused_webhook_makes_no_request_and_waits(
    known: None,
    receiver: TestClient[Any, Any],
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
) -> None:
    await post(receiver, engine, paused_now())
    row = await raw_template_row(engine)
    found = await ruled(settings, engine, row)
    assert simulator.requests == 0
    assert (found.status, found.attempts, found.error_code) == ("pending", 0, 132015)
    assert found.last_error.startswith("template_paused:")
    assert timedelta(hours=2, minutes=59) < found.wait <= timedelta(hours=3)


async def test_an_approved_webhook_makes_held_rows_due_and_they_go(
    known: None,
    receiver: TestClient[Any, Any],
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
) -> None:
    row = await enqueue(engine, CUSTOMER, None, template=SHIPPED)
    await post(receiver, engine, paused_now())
    assert (await row_of(engine, row)).wait > timedelta(hours=2)
    reinstated = {"event": "REINSTATED"}
    await post(receiver, engine, template_change("message_template_status_update", reinstated))
    assert (await row_of(engine, row)).wait <= timedelta(0)
    await drain(settings)
    assert simulator.requests == 1
    assert (await row_of(engine, row)).status == "sent"


async def test_a_row_goes_once_metas_pause_is_over_without_a_webhook(
    known: None,
    receiver: TestClient[Any, Any],
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
) -> None:
    await post(receiver, engine, PAUSED)  # paused for 3 hours from 2024: over long ago
    row = await raw_template_row(engine)
    await drain(settings)
    assert simulator.requests == 1
    assert (await row_of(engine, row)).status == "sent"


@pytest.mark.parametrize("event", ["DISABLED", "REJECTED", "PENDING_DELETION"])
async def test_a_disabled_webhook_fails_the_templates_waiting_rows_with_no_request(
    known: None,
    receiver: TestClient[Any, Any],
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    event: str,
) -> None:
    row = await enqueue(engine, CUSTOMER, None, template=SHIPPED)
    other = await enqueue(engine, "923001234568", "not a template")
    await post(
        receiver, engine, template_change("message_template_status_update", {"event": event})
    )
    found = await row_of(engine, row)
    assert found.status == "failed"
    assert (
        found.last_error
        == f"template_disabled: Meta says order_shipped (en_US) is {event}; not sent"
    )
    async with engine.connect() as conn:
        kinds = (
            (
                await conn.execute(
                    sa.text("SELECT kind FROM outbox_events WHERE message_id = :id"), {"id": row}
                )
            )
            .scalars()
            .all()
        )
    assert kinds == ["failed"]
    assert (await row_of(engine, other)).status == "pending"
    await drain(settings)
    assert simulator.requests == 1  # the other row only


async def test_a_row_claimed_after_a_disabled_webhook_fails_with_no_request(
    known: None,
    receiver: TestClient[Any, Any],
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
) -> None:
    await post(receiver, engine, template_change("message_template_status_update", DISABLED))
    row = await raw_template_row(engine)
    await drain(settings)
    assert simulator.requests == 0
    found = await row_of(engine, row)
    assert (found.status, found.last_error) == (
        "failed",
        "template_disabled: Meta says order_shipped (en_US) is DISABLED; not sent",
    )


async def test_a_template_approved_in_another_waba_is_not_held(
    known: None,
    receiver: TestClient[Any, Any],
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
) -> None:
    entry = {
        "name": "order_shipped",
        "language": "en_US",
        "template_id": "1",
        "category": "UTILITY",
        "status": "APPROVED",
        "quality": "GREEN",
        "parameter_count": 3,
    }
    async with engine.begin() as conn:
        await templates_catalogue.upsert_templates(conn, "999", [entry])
    row = await enqueue(engine, CUSTOMER, None, template=SHIPPED)
    await post(receiver, engine, paused_now())
    assert (await row_of(engine, row)).last_error is None
    await drain(settings)
    assert simulator.requests == 1


async def test_a_132015_answer_holds_the_templates_next_rows_with_no_request(
    known: None, engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    script(simulator, CUSTOMER, {"error": 132015})
    first = await enqueue(engine, CUSTOMER, None, template=SHIPPED)
    await ruled(settings, engine, first)
    assert simulator.requests == 1
    second = await raw_template_row(engine)
    found = await ruled(settings, engine, second)  # a new daemon: nothing held in its memory
    assert simulator.requests == 1
    assert (found.status, found.error_code) == ("pending", 132015)
    assert found.last_error.startswith("template_paused:")


async def in_doubt(engine: AsyncEngine, row: int) -> None:
    """The row as a request with no clear answer leaves it: Meta may have accepted it."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE outbox_messages SET in_doubt = 1 WHERE id = :id"), {"id": row}
        )


async def test_a_disabled_webhook_does_not_say_not_sent_of_a_row_that_may_have_gone(
    known: None,
    receiver: TestClient[Any, Any],
    engine: AsyncEngine,
) -> None:
    row = await enqueue(engine, CUSTOMER, None, template=SHIPPED)
    await in_doubt(engine, row)
    await post(receiver, engine, template_change("message_template_status_update", DISABLED))
    found = await row_of(engine, row)
    assert (found.status, found.last_error) == ("failed", NOT_SENT_AGAIN)


async def test_a_row_in_doubt_claimed_after_a_disabled_webhook_does_not_say_not_sent(
    known: None,
    receiver: TestClient[Any, Any],
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
) -> None:
    await post(receiver, engine, template_change("message_template_status_update", DISABLED))
    row = await raw_template_row(engine)
    await in_doubt(engine, row)
    await drain(settings)
    assert simulator.requests == 0
    found = await row_of(engine, row)
    assert (found.status, found.last_error) == ("failed", NOT_SENT_AGAIN)
