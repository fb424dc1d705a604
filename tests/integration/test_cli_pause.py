"""`outbox pause` and `outbox resume` as commands: what they store and say."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_cli import run, sql


def test_pause_stores_a_pause_of_every_sender_with_its_reason(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "pause", "--reason", "wrong template")
    assert code == 0
    assert out.startswith("paused every sender: running daemons stop claiming within a second")
    assert sql(cli_env, "SELECT sender, reason FROM outbox_pauses") == [("*", "wrong template")]


def test_pausing_again_keeps_the_first_pause_and_says_so(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "pause", "--sender", "5550001111", "--reason", "first")
    code, out, _ = run(capsys, "pause", "--sender", "5550001111", "--reason", "second")
    assert code == 0
    assert out.startswith("sender 5550001111 was already paused, since ")
    assert sql(cli_env, "SELECT reason FROM outbox_pauses") == [("first",)]


def test_resume_lifts_the_pause_of_every_sender_and_names_senders_still_paused(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "pause")
    run(capsys, "pause", "--sender", "5550001111")
    code, out, _ = run(capsys, "resume")
    assert code == 0
    assert out.splitlines() == [
        "resumed every sender",
        "still paused: sender 5550001111 (outbox resume --sender 5550001111)",
    ]
    assert sql(cli_env, "SELECT sender FROM outbox_pauses") == [("5550001111",)]


def test_resume_without_a_pause_says_there_was_none(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "resume") == (0, "every sender was not paused\n", "")


def test_stats_text_shows_an_operator_pause(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "pause", "--reason", "maintenance")
    code, out, _ = run(capsys, "stats")
    assert code == 0
    assert "paused by operator    every sender since " in out
    assert ": maintenance\n" in out


def test_stats_json_lists_pauses(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "pause", "--sender", "5550001111")
    stats = json.loads(run(capsys, "stats", "--json")[1])
    assert [(p["sender"], p["reason"]) for p in stats["pauses"]] == [("5550001111", None)]


def test_a_sender_that_is_not_a_phone_number_id_is_bad_usage(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "pause", "--sender", "+1 555")
    assert (code, out) == (2, "")
    assert err == "outbox pause: --sender: a phone number id is 1 to 32 digits\n"
    assert sql(cli_env, "SELECT count(*) FROM outbox_pauses") == [(0,)]
