"""Template messages on a real PostgreSQL: stored as Meta's object, CHECKed, sent as is."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox import cli, retry, store
from outbox.delivery.daemon import Daemon
from outbox.simulator import Simulator
from tests.daemon_helpers import drain, enqueue, script, status

BOOKING = outbox.Template(
    "booking_confirmed",
    "en_US",
    ("Ali", "12 May"),
    header_image="https://cdn.example.com/room.jpg",
)


async def test_a_template_is_stored_as_metas_object(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        row = await outbox.enqueue(conn, "923001234567", template=BOOKING)
    async with engine.connect() as conn:
        delivery = await outbox.get_status(conn, row)
    assert delivery.template == outbox.templates.template_object(BOOKING)
    assert (delivery.message, delivery.media, [p.type for p in delivery.parts]) == (
        None,
        (),
        ["template"],
    )


async def test_a_template_is_stored_through_asyncpg_too(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            row = await outbox.enqueue(conn, "923001234567", template=BOOKING)
        stored = await conn.fetchval("SELECT template FROM outbox_messages WHERE id = $1", row)
    finally:
        await conn.close()
    assert json.loads(stored)["name"] == "booking_confirmed"


async def test_text_beside_a_template_is_refused_before_any_sql(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        with pytest.raises(outbox.InvalidMessage) as caught:
            await outbox.enqueue(conn, "923001234567", "hi", template=BOOKING)
        assert caught.value.field == "template"
        assert await outbox.enqueue(conn, "923001234567", "still usable") > 0


@pytest.mark.parametrize(
    ("columns", "values"),
    [
        ("message, template", """'hi', '{"name": "t", "language": {"code": "en"}}'"""),
        (
            "media, template",
            """'[{"type": "image", "url": "https://a.example/a.jpg"}]',
               '{"name": "t", "language": {"code": "en"}}'""",
        ),
        ("template", """'{"name": "Bad Name", "language": {"code": "en"}}'"""),
        ("template", """'{"name": "t"}'"""),
        ("template", """'{"name": "t", "language": {"code": "en"}, "components": {}}'"""),
        ("template", """'"hello_world"'"""),
    ],
)
async def test_raw_sql_template_rows_are_checked(
    database_url: str, columns: str, values: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                f"INSERT INTO outbox_messages (recipient, {columns}) "
                f"VALUES ('923001234567', {values})"
            )
    finally:
        await conn.close()


async def test_a_raw_sql_template_row_is_accepted(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO outbox_messages (recipient, template) VALUES ('923001234567', "
            """'{"name": "order_shipped", "language": {"code": "en_US"}, "components": []}')"""
        )
    finally:
        await conn.close()


def test_the_cli_enqueues_a_template(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["enqueue", "923001234567", "--template", "booking_confirmed", "--language", "en_US"]
    argv += ["--body-param", "Ali", "--body-param", "12 May"]
    argv += ["--header-image", "https://cdn.example.com/room.jpg"]
    assert cli.main(argv) == 0
    row = int(capsys.readouterr().out)
    assert cli.main(["status", str(row), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["template"] == outbox.templates.template_object(
        BOOKING
    )


@pytest.mark.parametrize(
    "extra",
    [["--template", "t"], ["--language", "en"], ["--body-param", "x"], ["hi", "--template", "t"]],
)
def test_the_cli_refuses_template_options_that_do_not_go_together(
    cli_env: str, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    code = cli.main(["enqueue", "923001234567", *extra])
    if extra[0] == "hi":
        code = cli.main(["enqueue", "923001234567", "hi", "--template", "t", "--language", "en"])
        assert code == 1
        assert "template: a template message takes no text" in capsys.readouterr().err
    else:
        assert code == 2


async def test_a_template_paused_by_meta_holds_only_its_own_rows(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    paused = outbox.Template("spring_sale", "en_US")
    script(simulator, "923001234567", {"error": 132015})
    async with engine.begin() as conn:
        held = await outbox.enqueue(conn, "923001234567", template=paused)
        other = await outbox.enqueue(conn, "4915112345678", template=BOOKING)
    text = await enqueue(engine, "16505551234", "plain text goes on")
    daemon = Daemon(settings)  # a drain would wait out the hold: the rows wait for a retry
    running = asyncio.create_task(daemon.run())
    for _ in range(200):
        if [(await status(engine, row)).status for row in (held, other, text)] == [
            "pending",
            "sent",
            "sent",
        ]:
            break
        await asyncio.sleep(0.05)
    async with engine.begin() as conn:  # enqueued once Meta said the template is paused
        also_held = await outbox.enqueue(conn, "447700900123", template=paused)
    await asyncio.sleep(1)
    daemon.stop()
    assert await asyncio.wait_for(running, 10) == 0
    for row in (held, also_held):
        delivery = await status(engine, row)
        assert (delivery.status, delivery.attempts) == ("pending", 0)
        assert delivery.next_attempt_at is not None
        assert "paused" in (delivery.last_error or "")
    assert [(await status(engine, row)).status for row in (other, text)] == ["sent", "sent"]
    assert [a["to"] for a in simulator.accepted if a["type"] == "template"] == ["4915112345678"]
    assert simulator.requests == 3, "the paused template's later row is not even tried"


async def test_a_row_held_for_its_paused_template_lets_its_recipients_later_rows_pass(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Issue 15.11: per-recipient FIFO held the recipient's text behind the template for an hour.
    monkeypatch.setattr(retry, "TEMPLATE_PAUSE_HOLD", 3.0)  # Meta lifts the pause this soon
    script(simulator, "923001234567", {"error": 132015})
    async with engine.begin() as conn:
        held = await outbox.enqueue(conn, "923001234567", template=outbox.Template("sale", "en"))
    text = await enqueue(engine, "923001234567", "your table is ready")
    daemon = Daemon(settings)  # a drain would wait out the hold: the rows wait for a retry
    running = asyncio.create_task(daemon.run())
    for _ in range(400):
        if [(await status(engine, row)).status for row in (held, text)] == ["sent", "sent"]:
            break
        await asyncio.sleep(0.05)
    daemon.stop()
    assert await asyncio.wait_for(running, 10) == 0
    assert [(await status(engine, row)).status for row in (held, text)] == ["sent", "sent"]
    assert [a["callback"].split(":")[-2] for a in simulator.accepted] == [str(text), str(held)]


async def test_a_disabled_template_fails_its_row(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    script(simulator, "923001234567", {"error": 132016})
    async with engine.begin() as conn:
        row = await outbox.enqueue(conn, "923001234567", template=BOOKING)
    assert await drain(settings) == 0
    delivery = await status(engine, row)
    assert (delivery.status, delivery.error_code) == ("failed", 132016)


async def test_the_simulator_refuses_a_template_meta_would_refuse(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, database_url: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchval(
            "INSERT INTO outbox_messages (recipient, template) VALUES ('923001234567', "
            """'{"name": "t", "language": {"code": "en"}, "components": [{"type": "body", """
            """"parameters": [{"type": "text", "text": ""}]}]}') RETURNING id"""
        )
    finally:
        await conn.close()
    assert await drain(settings) == 0
    assert (await status(engine, row)).error_code == 131008


async def test_prune_deletes_a_rows_history_with_it(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, database_url: str
) -> None:
    row = await enqueue(engine, "923001234567", "soon gone")
    assert await drain(settings) == 0
    await asyncio.sleep(0.5)  # the history is written in batches
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM outbox_events WHERE message_id = $1", row)
        await conn.execute("UPDATE outbox_messages SET updated_at = now() - interval '40 days'")
        async with engine.connect() as sa_conn:
            assert await store.prune_finished(sa_conn, timedelta(days=30)) == 1
        assert not await conn.fetchval("SELECT count(*) FROM outbox_events")
    finally:
        await conn.close()
