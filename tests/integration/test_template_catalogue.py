"""The template catalogue: `outbox templates sync|list` and the enqueue check against it."""

from __future__ import annotations

import json
import re

import pytest
from aioresponses import aioresponses
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.store import templates_catalogue
from tests.integration.test_cli import run, sql

WABA = "102290129340398"
LIST_URL = re.compile(rf"^https://graph\.facebook\.com/v[0-9.]+/{WABA}/message_templates.*$")
NEXT = "https://graph.facebook.com/v23.0/102290129340398/message_templates?after=QVFI&limit=100"


def graph_template(name: str, language: str = "en_US", **fields: object) -> dict[str, object]:
    return {
        "id": f"{abs(hash((name, language))) % 10**15}",
        "name": name,
        "language": language,
        "category": "UTILITY",
        "status": "APPROVED",
        "quality_score": {"score": "GREEN", "date": 1733464800},
        "components": [
            {"type": "HEADER", "format": "TEXT", "text": "Order {{1}}"},
            {"type": "BODY", "text": "Hi {{1}}, your order {{2}} ships on {{3}}. {{1}}!"},
        ],
        **fields,
    }


@pytest.fixture
def meta_env(cli_env: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("META_WABA_ID", WABA)
    monkeypatch.setenv("META_ACCESS_TOKEN", "EAAtest")
    monkeypatch.delenv("META_GRAPH_API_URL", raising=False)
    return cli_env


def catalogue(database_url: str) -> list[tuple[object, ...]]:
    return sql(
        database_url,
        "SELECT waba_id, name, language, category, status, quality, parameter_count "
        "FROM outbox_templates ORDER BY name, language",
    )


def test_sync_follows_paging_and_stores_every_template(
    meta_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with aioresponses() as mocked:
        mocked.get(
            LIST_URL,
            payload={"data": [graph_template("order_shipped")], "paging": {"next": NEXT}},
        )
        mocked.get(
            NEXT,
            payload={
                "data": [
                    graph_template(
                        "promo",
                        "de",
                        category="MARKETING",
                        status="PAUSED",
                        quality_score={"score": "RED"},
                        components=[{"type": "BODY", "text": "Hallo {{first_name}}"}],
                    )
                ],
                "paging": {"cursors": {"before": "x", "after": "y"}},
            },
        )
        code, out, err = run(capsys, "templates", "sync")
    assert (code, err, out.strip()) == (0, "", f"synced 2 templates of WABA {WABA}")
    assert catalogue(meta_env) == [
        (WABA, "order_shipped", "en_US", "UTILITY", "APPROVED", "GREEN", 3),
        (WABA, "promo", "de", "MARKETING", "PAUSED", "RED", 1),
    ]


def test_sync_again_updates_a_template_in_place(
    meta_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with aioresponses() as mocked:
        mocked.get(LIST_URL, payload={"data": [graph_template("order_shipped")]})
        mocked.get(LIST_URL, payload={"data": [graph_template("order_shipped", status="DISABLED")]})
        run(capsys, "templates", "sync")
        run(capsys, "templates", "sync")
    assert [row[4] for row in catalogue(meta_env)] == ["DISABLED"]


def test_sync_refused_by_graph_is_one_line_naming_the_waba_variable(
    meta_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    error = {"error": {"message": "Invalid OAuth access token", "code": 190, "type": "OAuth"}}
    with aioresponses() as mocked:
        mocked.get(LIST_URL, status=401, payload=error)
        code, out, err = run(capsys, "templates", "sync")
    assert (code, out) == (1, "")
    assert err.startswith(f"outbox: the Graph API refused the templates of WABA {WABA}")
    assert "META_WABA_ID" in err
    assert "190" in err
    assert len(err.strip().splitlines()) == 1
    assert catalogue(meta_env) == []


def test_sync_without_a_waba_id_names_the_variable(
    meta_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("META_WABA_ID")
    code, out, err = run(capsys, "templates", "sync")
    assert (code, out) == (1, "")
    assert err.startswith("outbox: META_WABA_ID: needed by `outbox templates sync`")


def test_sync_without_a_token_names_the_variable(
    meta_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("META_ACCESS_TOKEN")
    code, out, err = run(capsys, "templates", "sync")
    assert (code, out) == (1, "")
    assert err.startswith("outbox: META_ACCESS_TOKEN: needed by `outbox templates sync`")


def test_list_json_shows_the_catalogue(meta_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    with aioresponses() as mocked:
        mocked.get(LIST_URL, payload={"data": [graph_template("order_shipped")]})
        run(capsys, "templates", "sync")
    code, out, err = run(capsys, "templates", "list", "--json")
    assert (code, err) == (0, "")
    [entry] = json.loads(out)
    assert {k: entry[k] for k in ("name", "language", "status", "parameter_count")} == {
        "name": "order_shipped",
        "language": "en_US",
        "status": "APPROVED",
        "parameter_count": 3,
    }


def test_list_prints_one_line_per_template(
    meta_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with aioresponses() as mocked:
        mocked.get(LIST_URL, payload={"data": [graph_template("a"), graph_template("b", "fr")]})
        run(capsys, "templates", "sync")
    code, out, _ = run(capsys, "templates", "list")
    assert code == 0
    assert [line.split()[:2] for line in out.splitlines()] == [["a", "en_US"], ["b", "fr"]]


# The enqueue check.

SHIPPED = outbox.Template("order_shipped", "en_US", ("Ali", "A-1042", "12 May"))


async def known(engine: AsyncEngine, **fields: object) -> None:
    entry = {
        "name": "order_shipped",
        "language": "en_US",
        "template_id": "1",
        "category": "UTILITY",
        "status": "APPROVED",
        "quality": "GREEN",
        "parameter_count": 3,
        **fields,
    }
    async with engine.begin() as conn:
        await templates_catalogue.upsert_templates(conn, WABA, [entry])


async def refusal(engine: AsyncEngine, template: outbox.Template) -> outbox.InvalidMessage:
    with pytest.raises(outbox.InvalidMessage) as raised:
        async with engine.begin() as conn:
            await outbox.enqueue(conn, "923001234567", template=template)
    return raised.value


async def test_an_empty_catalogue_lets_any_template_through(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        assert await outbox.enqueue(conn, "923001234567", template=SHIPPED) > 0


async def test_a_name_the_catalogue_does_not_know_goes_through(engine: AsyncEngine) -> None:
    await known(engine, name="something_else")
    async with engine.begin() as conn:
        assert await outbox.enqueue(conn, "923001234567", template=SHIPPED) > 0


async def test_a_known_approved_template_with_the_right_count_goes_through(
    engine: AsyncEngine,
) -> None:
    await known(engine)
    async with engine.begin() as conn:
        assert await outbox.enqueue(conn, "923001234567", template=SHIPPED) > 0


async def test_a_known_name_in_an_unknown_language_is_refused(engine: AsyncEngine) -> None:
    await known(engine)
    error = await refusal(engine, outbox.Template("order_shipped", "de", ("a", "b", "c")))
    assert (error.field, error.rule) == ("template.language", "unknown_template")


async def test_a_template_not_approved_is_refused(engine: AsyncEngine) -> None:
    await known(engine, status="PAUSED")
    error = await refusal(engine, SHIPPED)
    assert (error.field, error.rule) == ("template", "not_approved")
    assert "PAUSED" in error.text


async def test_a_wrong_body_parameter_count_is_refused(engine: AsyncEngine) -> None:
    await known(engine)
    error = await refusal(engine, outbox.Template("order_shipped", "en_US", ("Ali",)))
    assert (error.field, error.rule) == ("template.body_params", "parameter_count")


async def test_a_refused_template_inserts_nothing(engine: AsyncEngine, database_url: str) -> None:
    await known(engine, status="REJECTED")
    await refusal(engine, SHIPPED)
    assert sql(database_url, "SELECT count(*) FROM outbox_messages") == [(0,)]


async def test_own_components_skip_the_count_but_not_the_status(engine: AsyncEngine) -> None:
    await known(engine)
    components = [{"type": "body", "parameters": [{"type": "text", "text": "x"}]}]
    async with engine.begin() as conn:
        template = outbox.Template("order_shipped", "en_US", components=components)
        assert await outbox.enqueue(conn, "923001234567", template=template) > 0


def test_enqueue_sync_refuses_a_template_not_approved(database_url: str) -> None:
    sql(
        database_url,
        "INSERT INTO outbox_templates (waba_id, name, language, status, parameter_count) "
        f"VALUES ('{WABA}', 'order_shipped', 'en_US', 'DISABLED', 3)",
    )
    from sqlalchemy import create_engine

    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        with pytest.raises(outbox.InvalidMessage) as raised, engine.begin() as conn:
            outbox.enqueue_sync(conn, "923001234567", template=SHIPPED)
    finally:
        engine.dispose()
    assert raised.value.rule == "not_approved"
