"""Template messages on a real PostgreSQL: stored as Meta's object, CHECKed, sent as is."""

from __future__ import annotations

import json

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox import cli

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
