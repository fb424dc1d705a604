"""`outbox inbound`: what customers wrote, and when each one's 24-hour window closes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from outbox import Settings
from outbox.cli import main
from outbox.webhooks import create_app
from outbox.webhooks.payload import sign
from tests.integration.test_cli import run, sql
from tests.integration.test_webhooks import SECRET, envelope

NUMBER = "1234567890"


def inbound(
    database_url: str, customer: str, ago: str, *, phone: str = NUMBER, kind: str = "text"
) -> None:
    sql(
        database_url,
        "INSERT INTO outbox_inbound (wamid, phone_number_id, customer, type, at) VALUES "
        f"('wamid.{customer}.{ago.replace(' ', '')}', '{phone}', '{customer}', '{kind}', "
        f"now() - interval '{ago}')",
    )


def shown(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = run(capsys, "inbound", "--json", *argv)
    assert code == 0, err
    document: dict[str, Any] = json.loads(out)
    return document


def test_inbound_lists_the_latest_messages_first(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    inbound(cli_env, "923001234567", "2 hours", kind="image")
    inbound(cli_env, "923007654321", "1 hour")
    messages = shown(capsys)["messages"]
    assert [(m["customer"], m["type"]) for m in messages] == [
        ("923007654321", "text"),
        ("923001234567", "image"),
    ]


def test_a_window_closes_24_hours_after_the_customers_last_message(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    inbound(cli_env, "923001234567", "5 hours")
    inbound(cli_env, "923001234567", "2 hours")
    (window,) = shown(capsys)["windows"]
    assert window["open"] is True
    assert window["last_message_at"] == shown(capsys)["messages"][0]["at"]
    closes = sql(cli_env, "SELECT max(at) + interval '24 hours' FROM outbox_inbound")[0][0]
    assert window["closes_at"] == closes.isoformat()  # type: ignore[attr-defined]


def test_a_window_meta_closed_early_shows_closed_as_the_daemon_judges_it(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    inbound(cli_env, "923001234567", "2 hours")
    sql(
        cli_env,
        "INSERT INTO outbox_window_closures (phone_number_id, customer, closed_at) "
        f"VALUES ('{NUMBER}', '923001234567', now() - interval '1 hour')",
    )
    (window,) = shown(capsys)["windows"]
    assert window["open"] is False
    assert window["closed_by_meta_at"] is not None


def test_closed_windows_are_listed_only_for_the_customer_asked_for(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    inbound(cli_env, "923001234567", "30 hours")
    assert shown(capsys)["windows"] == []
    (window,) = shown(capsys, "--recipient", "+92 300 1234567")["windows"]
    assert window["open"] is False


def test_inbound_by_recipient_and_sender_shows_only_theirs(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    inbound(cli_env, "923001234567", "1 hour")
    inbound(cli_env, "923001234567", "2 hours", phone="555")
    inbound(cli_env, "923007654321", "3 hours")
    document = shown(capsys, "--recipient", "923001234567", "--sender", NUMBER)
    assert [(m["customer"], m["phone_number_id"]) for m in document["messages"]] == [
        ("923001234567", NUMBER)
    ]
    assert [(w["customer"], w["phone_number_id"]) for w in document["windows"]] == [
        ("923001234567", NUMBER)
    ]


def test_inbound_text_says_until_when_a_window_is_open(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    inbound(cli_env, "923001234567", "1 hour")
    code, out, _ = run(capsys, "inbound")
    assert code == 0
    assert "923001234567" in out
    assert "open until" in out


def test_a_sender_that_is_not_a_phone_number_id_is_bad_usage(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "inbound", "--sender", "my-number")
    assert (code, out) == (2, "")
    assert err == "outbox inbound: --sender: a phone number id is digits only\n"


async def test_inbound_text_shows_what_the_customer_wrote_from_the_stored_webhook(
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Through the real receiver: the words come back from the body it stored."""
    settings = Settings(
        database_url=database_url, app_secret=SECRET, webhook_verify_token="verify", home=tmp_path
    )
    words = {
        "from": "923001234567",
        "id": "wamid.WORDS",
        "timestamp": "1700000000",
        "type": "text",
        "text": {"body": "Can I check in early?"},
    }
    photo = {**words, "id": "wamid.PHOTO", "type": "image", "image": {"caption": "my passport"}}
    del photo["text"]
    body = envelope(messages=[words, photo])
    async with TestClient(TestServer(create_app(settings))) as client:
        answer = await client.post(
            "/webhook", data=body, headers={"X-Hub-Signature-256": sign(SECRET, body)}
        )
        assert answer.status == 200
        for _ in range(100):  # applied in the background
            if sql(database_url, "SELECT count(*) FROM outbox_inbound") == [(2,)]:
                break
            await asyncio.sleep(0.05)
    monkeypatch.setenv("OUTBOX_DATABASE_URL", database_url)
    code = await asyncio.to_thread(main, ["inbound", "--text", "--json"])
    out, _ = capsys.readouterr()
    assert code == 0
    shown = {m["wamid"]: m["text"] for m in json.loads(out)["messages"]}
    assert shown == {"wamid.WORDS": "Can I check in early?", "wamid.PHOTO": "my passport"}
