"""`outbox stats --by code|template`: failures by Graph error code, templates by status."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_cli import enqueue, run, sql


def fail(database_url: str, message_id: int, code: int | None, error: str) -> None:
    sql(
        database_url,
        "UPDATE outbox_messages SET status = 'failed', "
        f"error_code = {'NULL' if code is None else code}, last_error = '{error}' "
        f"WHERE id = {message_id}",
    )


def test_stats_by_code_counts_failed_rows_per_code_with_the_latest_title(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second, third, expired = (enqueue(capsys, "923001234567", t) for t in "abcd")
    fail(cli_env, first, 131026, "(#131026) Message undeliverable")
    fail(cli_env, second, 131026, "(#131026) Message undeliverable")
    fail(cli_env, third, 131047, "(#131047) Re-engagement message")
    fail(cli_env, expired, None, "expired: not sent by 2026-01-01T00:00:00Z")
    code, out, _ = run(capsys, "stats", "--by", "code", "--json")
    assert code == 0
    assert [(e["code"], e["count"], e["title"]) for e in json.loads(out)] == [
        (131026, 2, "Message undeliverable"),
        (131047, 1, "Re-engagement message"),
        (None, 1, "expired: not sent by 2026-01-01T00:00:00Z"),
    ]


def test_stats_by_code_text_shows_each_code_and_its_title(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fail(cli_env, enqueue(capsys, "923001234567", "a"), 131026, "(#131026) Message undeliverable")
    code, out, _ = run(capsys, "stats", "--by", "code")
    assert code == 0
    assert "failed messages created in the last 24h, by Graph error code" in out
    assert "  131026        1  Message undeliverable" in out


def test_stats_by_code_leaves_out_rows_created_before_the_period(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    old = enqueue(capsys, "923001234567", "a")
    fail(cli_env, old, 131026, "(#131026) Message undeliverable")
    sql(cli_env, f"UPDATE outbox_messages SET created_at = now() - interval '3d' WHERE id = {old}")
    assert json.loads(run(capsys, "stats", "--by", "code", "--json")[1]) == []
    counted = json.loads(run(capsys, "stats", "--by", "code", "--since", "7d", "--json")[1])
    assert [entry["count"] for entry in counted] == [1]


def test_stats_by_template_counts_each_name_and_language_by_status(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(2):
        enqueue(capsys, "923001234567", "--template", "order_update", "--language", "en_US")
    failed = enqueue(capsys, "923001234567", "--template", "order_update", "--language", "ur")
    enqueue(capsys, "923001234567", "plain text is not a template")
    fail(cli_env, failed, 132001, "(#132001) Template does not exist")
    code, out, _ = run(capsys, "stats", "--by", "template", "--json")
    assert code == 0
    found = {(e["name"], e["language"]): e["counts"] for e in json.loads(out)}
    assert set(found) == {("order_update", "en_US"), ("order_update", "ur")}
    assert found["order_update", "en_US"]["pending"] == 2
    assert found["order_update", "ur"]["failed"] == 1


def test_stats_since_without_by_is_bad_usage(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "stats", "--since", "2h")
    assert (code, out) == (2, "")
    assert err == "outbox stats: --since needs --by code or --by template\n"


def test_stats_without_by_keeps_its_overview(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    enqueue(capsys, "923001234567", "a")
    code, out, _ = run(capsys, "stats")
    assert code == 0
    assert out.startswith("pending               1\n")
