"""`outbox list`: several statuses, a period, and pages that stay put while rows are inserted."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_cli import enqueue, run, sql


def listed(capsys: pytest.CaptureFixture[str], *argv: str) -> list[int]:
    code, out, err = run(capsys, "list", "--json", *argv)
    assert code == 0, err
    return [row["id"] for row in json.loads(out)]


def test_list_takes_several_statuses_in_one_option(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pending, failed, sent = (enqueue(capsys, "923001234567", t) for t in "abc")
    sql(cli_env, f"UPDATE outbox_messages SET status = 'failed' WHERE id = {failed}")
    sql(cli_env, f"UPDATE outbox_messages SET status = 'sent' WHERE id = {sent}")
    assert listed(capsys, "--status", "failed,pending") == [failed, pending]


def test_list_takes_a_repeated_status_option(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pending, failed, _ = (enqueue(capsys, "923001234567", t) for t in "abc")
    sql(cli_env, f"UPDATE outbox_messages SET status = 'failed' WHERE id = {failed}")
    sql(
        cli_env, f"UPDATE outbox_messages SET status = 'sent' WHERE id NOT IN ({pending}, {failed})"
    )
    assert listed(capsys, "--status", "failed", "--status", "pending") == [failed, pending]


def test_list_pages_with_the_printed_cursor(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [enqueue(capsys, "923001234567", str(n)) for n in range(5)]
    code, out, _ = run(capsys, "list", "--limit", "2")
    assert code == 0
    assert out.splitlines()[-1] == f"next page: --before {ids[3]}"
    assert listed(capsys, "--limit", "2", "--before", str(ids[3])) == [ids[2], ids[1]]


def test_a_page_stays_the_same_when_rows_are_inserted_meanwhile(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [enqueue(capsys, "923001234567", str(n)) for n in range(4)]
    first_page = listed(capsys, "--limit", "2")
    enqueue(capsys, "923001234567", "inserted while paging")
    assert listed(capsys, "--limit", "2", "--before", str(first_page[-1])) == [ids[1], ids[0]]


def test_the_last_page_prints_no_cursor(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    enqueue(capsys, "923001234567", "a")
    code, out, err = run(capsys, "list", "--limit", "1")
    assert code == 0
    assert "next page" not in out + err


def test_list_json_prints_the_cursor_on_stderr_keeping_stdout_one_list(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [enqueue(capsys, "923001234567", str(n)) for n in range(2)]
    code, out, err = run(capsys, "list", "--json", "--limit", "1")
    assert code == 0
    assert [row["id"] for row in json.loads(out)] == [ids[1]]
    assert err == f"next page: --before {ids[1]}\n"


def test_list_since_a_duration_leaves_older_rows_out(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = (enqueue(capsys, "923001234567", t) for t in "ab")
    sql(cli_env, f"UPDATE outbox_messages SET created_at = now() - interval '2d' WHERE id = {old}")
    assert listed(capsys, "--since", "1d") == [new]


def test_list_by_recipient_takes_the_number_as_written(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    wanted = enqueue(capsys, "923001234567", "a")
    enqueue(capsys, "923007654321", "b")
    assert listed(capsys, "--recipient", "+92 300 1234567") == [wanted]


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--status", "failed,bogus"], "--status: invalid status bogus"),
        (["--since", "2 hours"], "--since: invalid time '2 hours'"),
        (["--before", "0"], "--before: invalid value '0'"),
    ],
)
def test_a_bad_list_option_is_bad_usage_naming_it(
    cli_env: str, capsys: pytest.CaptureFixture[str], argv: list[str], named: str
) -> None:
    code, out, err = run(capsys, "list", *argv)
    assert (code, out) == (2, "")
    assert named in err
