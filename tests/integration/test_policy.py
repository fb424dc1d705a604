"""Meta's rules in the daemon (issue 16, points 1 and 2), against the simulator and a real
PostgreSQL: the customer-service window with fallback templates, and the suppression list."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.delivery.daemon import Daemon
from outbox.policy.quiet import parse_quiet_hours
from outbox.simulator import Simulator
from tests.daemon_helpers import PHONE, drain, enqueue, run_until_ruled, script, status

CUSTOMER = "923001234567"
FALLBACK = outbox.Template("we_miss_you", "en_US", ("Ali",), category="utility")
PROMO = outbox.Template("spring_sale", "en_US", category="marketing")
RECEIPT = outbox.Template("order_receipt", "en_US", ("42",), category="utility")


async def wrote(
    engine: AsyncEngine,
    ago: timedelta,
    *,
    customer: str = CUSTOMER,
    phone: str = PHONE,
    referral: bool = False,
) -> None:
    """An inbound message from `customer` to `phone`, `ago` before now, as the receiver stores
    it."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO outbox_inbound (wamid, phone_number_id, customer, type, at, referral)"
                " VALUES (:wamid, :phone, :customer, 'text',"
                " now() - make_interval(secs => :ago), :referral)"
            ),
            {
                "wamid": f"wamid.in.{customer}.{ago.total_seconds()}",
                "phone": phone,
                "customer": customer,
                "ago": ago.total_seconds(),
                "referral": referral,
            },
        )


async def held_by_a_dead_daemon(engine: AsyncEngine, row: int) -> None:
    """The row as a daemon killed while sending it leaves it: `sending`, its lease long over."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE outbox_messages SET status = 'sending', attempts = 1,"
                " lease_token = gen_random_uuid(), locked_until = now() - interval '1 hour'"
                " WHERE id = :id"
            ),
            {"id": row},
        )


async def went(engine: AsyncEngine, row: int, *, part: int, wamid: str) -> None:
    """A delivered status webhook for the row's `part`, stored before that part was recorded."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO outbox_statuses (wamid, message_id, part, status, at, recipient)"
                " VALUES (:wamid, :id, :part, 'delivered', now(), :customer)"
            ),
            {"wamid": wamid, "id": row, "part": part, "customer": CUSTOMER},
        )


async def sent_as_its_status_said(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, row: int
) -> None:
    """Drained with no request made, the row is sent with the wamid its stored status named
    (`went`); the waiting delivered status may be applied after the drain, or by the sweep."""
    assert await drain(replace(settings, reconcile_seconds=0)) == 0
    assert simulator.accepted == []
    delivery = await status(engine, row)
    assert delivery.status in ("sent", "delivered")
    assert delivery.message_id == "wamid.lost"


async def events(engine: AsyncEngine, row: int) -> list[str]:
    async with engine.connect() as conn:
        result = await conn.execute(
            sa.text("SELECT kind FROM outbox_events WHERE message_id = :id ORDER BY id"),
            {"id": row},
        )
        return [kind for (kind,) in result]


async def test_text_goes_when_the_customer_wrote_23h59m_ago(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await wrote(engine, timedelta(hours=23, minutes=59))
    row = await enqueue(engine, CUSTOMER, "your table is ready", fallback=FALLBACK)
    await drain(settings)
    assert [a["type"] for a in simulator.accepted] == ["text"]
    delivery = await status(engine, row)
    assert delivery.status == "sent"


async def test_closed_window_sends_exactly_one_fallback_template_request(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await wrote(engine, timedelta(hours=24, seconds=1))
    row = await enqueue(engine, CUSTOMER, "your table is ready", fallback=FALLBACK)
    await drain(settings)
    assert simulator.requests == 1
    assert [a["type"] for a in simulator.accepted] == ["template"]
    async with engine.connect() as conn:
        sent_fallback = await conn.scalar(
            sa.text("SELECT sent_fallback FROM outbox_messages WHERE id = :id"), {"id": row}
        )
    assert sent_fallback is True
    assert (await status(engine, row)).status == "sent"
    assert "fallback" in await events(engine, row)


async def test_closed_window_without_fallback_fails_window_closed_with_no_request(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await wrote(engine, timedelta(hours=24, seconds=1))
    row = await enqueue(engine, CUSTOMER, "your table is ready")
    await drain(settings)
    assert simulator.requests == 0
    delivery = await status(engine, row)
    assert delivery.status == "failed"
    assert delivery.last_error is not None
    assert delivery.last_error.startswith("window_closed")
    assert await events(engine, row) == ["failed"]


async def test_a_closed_window_fails_only_its_own_row(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    other = "923009999999"
    await wrote(engine, timedelta(hours=30))
    await wrote(engine, timedelta(minutes=5), customer=other)
    closed = await enqueue(engine, CUSTOMER, "late")
    fine = await enqueue(engine, other, "on time")
    await drain(settings)
    assert (await status(engine, closed)).status == "failed"
    assert (await status(engine, fine)).status == "sent"
    assert [a["to"] for a in simulator.accepted] == [other]


async def test_a_sender_with_no_inbound_messages_sends_as_before(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    row = await enqueue(engine, CUSTOMER, "hello")
    await drain(settings)
    assert (await status(engine, row)).status == "sent"


async def test_a_customer_who_never_wrote_to_a_known_sender_gets_the_fallback(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await wrote(engine, timedelta(minutes=1), customer="923009999999")
    await enqueue(engine, CUSTOMER, "hello", fallback=FALLBACK)
    await drain(settings)
    assert [a["type"] for a in simulator.accepted] == ["template"]


async def test_the_window_is_per_sender(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await wrote(engine, timedelta(minutes=1), phone="5550001")  # another number of ours
    await wrote(engine, timedelta(hours=25))
    row = await enqueue(engine, CUSTOMER, "hello")
    await drain(settings)
    assert (await status(engine, row)).last_error is not None
    assert simulator.requests == 0


async def test_a_referral_does_not_keep_free_form_open_past_24_hours(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    # Meta: the entry point's 72 hours are free of charge; free-form still needs the 24 h window.
    await wrote(engine, timedelta(hours=25), referral=True)
    row = await enqueue(engine, CUSTOMER, "thanks for your interest")
    await drain(settings)
    assert (await status(engine, row)).last_error.startswith("window_closed")  # type: ignore[union-attr]
    assert simulator.requests == 0


async def test_a_brazilian_number_matches_metas_wa_id_without_the_ninth_digit(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await wrote(engine, timedelta(hours=1), customer="551187654321")  # Meta's wa_id
    row = await enqueue(engine, "5511987654321", "olá")
    await drain(settings)
    assert (await status(engine, row)).status == "sent"


async def test_a_131047_closes_the_window_and_the_row_goes_as_its_fallback(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await wrote(engine, timedelta(hours=2))
    script(simulator, CUSTOMER, {"error": 131047})
    row = await enqueue(engine, CUSTOMER, "hello", fallback=FALLBACK)
    await drain(settings)
    assert simulator.requests == 2
    assert [a["type"] for a in simulator.accepted] == ["template"]
    assert (await status(engine, row)).status == "sent"
    async with engine.connect() as conn:
        window = await outbox.window(conn, CUSTOMER, PHONE)
    assert not window.open
    assert window.closed_by_meta_at is not None


async def test_a_131047_without_fallback_fails_window_closed_and_closes_the_window(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await wrote(engine, timedelta(hours=2))
    script(simulator, CUSTOMER, {"error": 131047})
    first = await enqueue(engine, CUSTOMER, "hello")
    await drain(settings)
    second = await enqueue(engine, CUSTOMER, "are you there?")
    await drain(settings)
    assert simulator.requests == 1
    for row in (first, second):
        delivery = await status(engine, row)
        assert delivery.last_error is not None
        assert delivery.last_error.startswith("window_closed")


async def test_a_new_inbound_message_reopens_a_window_meta_closed(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await wrote(engine, timedelta(hours=2))
    script(simulator, CUSTOMER, {"error": 131047})
    await enqueue(engine, CUSTOMER, "hello")
    await drain(settings)
    await wrote(engine, timedelta(seconds=-1))  # the customer answers (a second from now)
    row = await enqueue(engine, CUSTOMER, "welcome back")
    await drain(settings)
    assert (await status(engine, row)).status == "sent"


async def opt_out(engine: AsyncEngine, customer: str = CUSTOMER) -> None:
    async with engine.begin() as conn:
        await outbox.add_optout(conn, customer, sender=PHONE)


async def test_an_opted_out_customer_gets_no_marketing_template(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await opt_out(engine)
    row = await enqueue(engine, CUSTOMER, None, template=PROMO)
    await drain(settings)
    assert simulator.requests == 0
    delivery = await status(engine, row)
    assert delivery.status == "failed"
    assert delivery.last_error is not None
    assert delivery.last_error.startswith("opted_out")


async def test_a_taken_over_marketing_row_a_status_webhook_shows_went_is_sent_after_a_stop(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    # Its daemon died after Meta accepted the template; the customer said stop before another
    # took it over. It went: the row says so, not opted_out.
    row = await enqueue(engine, CUSTOMER, None, template=PROMO)
    await held_by_a_dead_daemon(engine, row)
    await opt_out(engine)
    await went(engine, row, part=0, wamid="wamid.lost")
    await sent_as_its_status_said(engine, settings, simulator, row)


async def test_an_opted_out_customer_still_gets_utility_templates(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await opt_out(engine)
    row = await enqueue(engine, CUSTOMER, None, template=RECEIPT)
    await drain(settings)
    assert (await status(engine, row)).status == "sent"


async def test_an_uncategorised_template_counts_as_marketing(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await opt_out(engine)
    row = await enqueue(engine, CUSTOMER, None, template=outbox.Template("hello", "en"))
    await drain(settings)
    assert (await status(engine, row)).status == "failed"
    assert simulator.requests == 0


async def test_removing_an_optout_lets_marketing_go_again(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await opt_out(engine)
    async with engine.begin() as conn:
        await outbox.remove_optout(conn, CUSTOMER, sender=PHONE)
        assert await outbox.list_optouts(conn) == []
    row = await enqueue(engine, CUSTOMER, None, template=PROMO)
    await drain(settings)
    assert (await status(engine, row)).status == "sent"


async def test_a_131050_suppresses_the_customer_for_the_next_marketing_row(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    script(simulator, CUSTOMER, {"error": 131050})
    first = await enqueue(engine, CUSTOMER, None, template=PROMO)
    await drain(settings)
    second = await enqueue(engine, CUSTOMER, None, template=PROMO)
    await drain(settings)
    assert simulator.requests == 1
    for row in (first, second):
        delivery = await status(engine, row)
        assert delivery.last_error is not None
        assert delivery.last_error.startswith("opted_out")
    async with engine.connect() as conn:
        assert [o.source for o in await outbox.list_optouts(conn, sender=PHONE)] == ["131050"]


async def test_a_marketing_fallback_is_withheld_from_an_opted_out_customer(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await wrote(engine, timedelta(hours=30))
    await opt_out(engine)
    row = await enqueue(engine, CUSTOMER, "hello", fallback=PROMO)
    await drain(settings)
    assert simulator.requests == 0
    delivery = await status(engine, row)
    assert delivery.last_error is not None
    assert delivery.last_error.startswith("opted_out")


@pytest.mark.parametrize("category", ["sales", ""])
async def test_an_unknown_category_is_refused_at_enqueue(
    engine: AsyncEngine, category: str
) -> None:
    template = outbox.Template("t", "en", category=category)
    with pytest.raises(outbox.InvalidMessage) as caught:
        await enqueue(engine, CUSTOMER, None, template=template)
    assert (caught.value.field, caught.value.rule) == ("template.category", "choice")


async def test_a_bad_fallback_is_refused_at_enqueue_naming_the_fallback(
    engine: AsyncEngine,
) -> None:
    fallback = outbox.Template("Bad Name", "en", category="utility")
    with pytest.raises(outbox.InvalidMessage) as caught:
        await enqueue(engine, CUSTOMER, "hi", fallback=fallback)
    assert (caught.value.field, caught.value.rule) == ("fallback.name", "name_format")


async def test_a_fallback_beside_a_template_is_refused_at_enqueue(engine: AsyncEngine) -> None:
    with pytest.raises(outbox.InvalidMessage) as caught:
        await enqueue(engine, CUSTOMER, None, template=PROMO, fallback=FALLBACK)
    assert (caught.value.field, caught.value.rule) == ("fallback", "exclusive")


async def test_window_says_when_the_window_closes(engine: AsyncEngine) -> None:
    await wrote(engine, timedelta(hours=1))
    async with engine.connect() as conn:
        window = await outbox.window(conn, "+92 300 1234567", PHONE)
        assert window.known
        assert window.open
        assert window.closes_at is not None
        assert window.last_inbound_at is not None
        assert window.closes_at - window.last_inbound_at == timedelta(hours=24)


@pytest.mark.parametrize(
    ("columns", "values"),
    [
        (
            "template, fallback",
            """'{"name": "a", "language": {"code": "en"}}',
                                  '{"name": "b", "language": {"code": "en"}}'""",
        ),
        ("message, fallback", """'hi', '{"name": "Bad Name", "language": {"code": "en"}}'"""),
        ("message, sent_fallback", "'hi', true"),
        ("message, category", "'hi', 'promotional'"),
    ],
)
async def test_raw_sql_fallback_and_category_are_checked(
    engine: AsyncEngine, columns: str, values: str
) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    f"INSERT INTO outbox_messages (recipient, {columns}) "
                    f"VALUES ('923001234567', {values})"
                )
            )


async def test_window_without_a_sender_uses_meta_phone_number_id(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("META_PHONE_NUMBER_ID", PHONE)
    await wrote(engine, timedelta(hours=25))
    async with engine.connect() as conn:
        window = await outbox.window(conn, CUSTOMER)
    assert window.sender == PHONE
    assert not window.open


async def test_enqueue_sync_takes_a_fallback(database_url: str) -> None:
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg2://"))
    try:
        with engine.begin() as conn:
            row = outbox.enqueue_sync(conn, CUSTOMER, "hi", fallback=FALLBACK)
            stored = conn.execute(
                sa.text("SELECT fallback ->> 'name', category FROM outbox_messages WHERE id = :id"),
                {"id": row},
            ).one()
    finally:
        engine.dispose()
    assert tuple(stored) == ("we_miss_you", "utility")


async def test_a_text_in_doubt_is_never_followed_by_its_fallback_when_the_window_closes(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await wrote(engine, timedelta(hours=1))
    script(simulator, CUSTOMER, {"accept_and_hang": True})  # accepted, the answer never comes
    row = await enqueue(engine, CUSTOMER, "Your table is ready", fallback=FALLBACK)
    options = replace(settings, request_timeout=1.0, reconcile_seconds=0, retry_delay=0.2)
    daemon = asyncio.create_task(Daemon(options, drain=True).run())
    await simulator.wait_for_accepted(1)
    async with engine.begin() as conn:  # meanwhile Meta closes the window (a 131047 elsewhere)
        await conn.execute(
            sa.text(
                "INSERT INTO outbox_window_closures (phone_number_id, customer, closed_at)"
                " VALUES (:phone, :customer, now())"
            ),
            {"phone": PHONE, "customer": CUSTOMER},
        )
    assert await asyncio.wait_for(daemon, 30) == 0
    assert [m["type"] for m in simulator.accepted] == ["text"], "text and template both went"
    delivery = await status(engine, row)
    assert delivery.status == "failed"
    assert (delivery.last_error or "").startswith("window_closed")
    assert "may have gone already" in (delivery.last_error or "")


async def test_a_taken_over_row_released_and_claimed_again_never_switches_to_its_fallback(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    # A daemon died holding the row: it may have sent the text. Another takes the row over, and
    # quiet hours give it back; by its next claim the window has closed.
    await wrote(engine, timedelta(hours=1))
    row = await enqueue(engine, CUSTOMER, "Your table is ready", fallback=FALLBACK)
    await held_by_a_dead_daemon(engine, row)
    local = datetime.now(ZoneInfo("Asia/Karachi"))
    hours = f"{local - timedelta(hours=1):%H:%M}-{local + timedelta(hours=1):%H:%M}"
    quiet = replace(settings, quiet_hours=parse_quiet_hours(hours, "--quiet-hours"))
    ruled = await run_until_ruled(quiet, engine, row)
    assert (ruled.status, ruled.last_error[:11]) == ("pending", "quiet hours")
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO outbox_window_closures (phone_number_id, customer, closed_at)"
                " VALUES (:phone, :customer, now())"
            ),
            {"phone": PHONE, "customer": CUSTOMER},
        )
        await conn.execute(
            sa.text("UPDATE outbox_messages SET available_at = now() WHERE id = :id"), {"id": row}
        )
    assert await drain(replace(settings, reconcile_seconds=0)) == 0
    assert simulator.accepted == [], "the fallback went after a text that may have gone"
    delivery = await status(engine, row)
    assert delivery.status == "failed"
    assert "may have gone already" in (delivery.last_error or "")


@pytest.mark.parametrize("fallback", [FALLBACK, None], ids=["with-fallback", "no-fallback"])
async def test_a_taken_over_row_a_status_webhook_shows_went_is_sent_though_its_window_closed(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    fallback: outbox.Template | None,
) -> None:
    # Its daemon died after Meta accepted the text; the window closed before another took it
    # over. The delivered status says the text went: the row is sent, not failed (with a
    # fallback, not switched to it; without one, not failed window_closed).
    await wrote(engine, timedelta(hours=30))
    row = await enqueue(engine, CUSTOMER, "Your table is ready", fallback=fallback)
    await held_by_a_dead_daemon(engine, row)
    await went(engine, row, part=0, wamid="wamid.lost")
    await sent_as_its_status_said(engine, settings, simulator, row)


async def test_a_taken_over_row_whose_next_part_a_status_webhook_shows_went_is_sent(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    # Its image was recorded, then its daemon died after Meta accepted the text.
    await wrote(engine, timedelta(hours=30))
    row = await enqueue(
        engine,
        CUSTOMER,
        "Your room",
        media_urls={"images": ["https://x.test/a.jpg"]},
        fallback=FALLBACK,
    )
    await held_by_a_dead_daemon(engine, row)
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "WITH recorded AS (UPDATE outbox_messages SET parts = jsonb_build_array("
                " jsonb_build_object('wamid', 'wamid.image', 'status', 'sent', 'sent_at', now()))"
                " WHERE id = :id RETURNING id)"
                " INSERT INTO outbox_part_wamids (wamid, message_id, part)"
                " SELECT 'wamid.image', id, 0 FROM recorded"
            ),
            {"id": row},
        )
    await went(engine, row, part=1, wamid="wamid.lost")
    await sent_as_its_status_said(engine, settings, simulator, row)


async def in_doubt_row(engine: AsyncEngine, expires_in: str, **columns: object) -> int:
    """A row whose last request got no clear answer (in doubt), given back to pending."""
    async with engine.begin() as conn:
        result = await conn.execute(
            sa.text(
                "INSERT INTO outbox_messages (recipient, message, media, expires_at, in_doubt,"
                " last_error) VALUES (:customer, 'Your room', CAST(:media AS jsonb),"
                " now() + CAST(CAST(:expires_in AS text) AS interval), 1, 'in doubt: no answer')"
                " RETURNING id"
            ),
            {"customer": CUSTOMER, "expires_in": expires_in, "media": columns.get("media", "[]")},
        )
        return int(result.scalar_one())


async def test_a_row_in_doubt_expiring_in_quiet_hours_is_sent_when_its_status_shows_went(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    row = await in_doubt_row(engine, "10 minutes")
    await went(engine, row, part=0, wamid="wamid.lost")
    local = datetime.now(ZoneInfo("Asia/Karachi"))
    hours = f"{local - timedelta(hours=1):%H:%M}-{local + timedelta(hours=1):%H:%M}"
    quiet = replace(settings, quiet_hours=parse_quiet_hours(hours, "--quiet-hours"))
    await sent_as_its_status_said(engine, quiet, simulator, row)


async def test_a_row_whose_doubtful_part_was_settled_says_its_next_part_was_not_sent(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    # Its image's request was in doubt and went (the status says so); its text was never
    # requested before the deadline: that is what the row says.
    media = '[{"type": "image", "url": "https://x.test/a.jpg"}]'
    row = await in_doubt_row(engine, "-1 second", media=media)
    await went(engine, row, part=0, wamid="wamid.lost")
    assert await drain(replace(settings, reconcile_seconds=0)) == 0
    assert simulator.accepted == []
    delivery = await status(engine, row)
    assert (delivery.status, delivery.last_error) == (
        "failed",
        "expired: not sent before its deadline",
    )
