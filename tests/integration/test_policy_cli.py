"""`outbox optout add|remove|list` and the window line of `outbox status`."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_cli import enqueue, run, sql

PHONE = "1234567890"


@pytest.fixture
def sender_env(cli_env: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("META_PHONE_NUMBER_ID", PHONE)
    return cli_env


def test_optout_add_then_list_shows_the_customer(
    sender_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "optout", "add", "+92 300 1234567", "--note", "asked by email")[0] == 0
    code, out, err = run(capsys, "optout", "list", "--json")
    assert (code, err) == (0, "")
    [entry] = json.loads(out)
    assert (entry["sender"], entry["customer"], entry["source"], entry["detail"]) == (
        PHONE,
        "923001234567",
        "api",
        "asked by email",
    )


def test_optout_remove_takes_the_customer_off_the_list(
    sender_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "optout", "add", "923001234567")
    assert run(capsys, "optout", "remove", "923001234567")[0] == 0
    assert run(capsys, "optout", "list")[1] == ""


def test_optout_add_without_a_sender_is_one_line_and_exit_1(
    cli_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("META_PHONE_NUMBER_ID", raising=False)
    code, out, err = run(capsys, "optout", "add", "923001234567")
    assert (code, out) == (1, "")
    assert err.strip() == "outbox: META_PHONE_NUMBER_ID: needed when no sender is given"


def test_status_says_when_the_window_closes(
    sender_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sql(
        sender_env,
        "INSERT INTO outbox_inbound (wamid, phone_number_id, customer, type, at) "
        f"VALUES ('wamid.in', '{PHONE}', '923001234567', 'text', now() - interval '1 hour')",
    )
    row = enqueue(capsys, "923001234567", "hello")
    code, out, _ = run(capsys, "status", str(row))
    assert code == 0
    [line] = [line for line in out.splitlines() if line.startswith("window")]
    assert line.split()[1:3] == ["open", "until"]
    code, out, _ = run(capsys, "status", str(row), "--json")
    assert json.loads(out)["window"]["open"] is True


def test_status_of_a_sender_without_inbound_messages_says_unknown(
    sender_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    row = enqueue(capsys, "923001234567", "hello")
    out = run(capsys, "status", str(row))[1]
    assert "window          unknown: no inbound message stored" in out
