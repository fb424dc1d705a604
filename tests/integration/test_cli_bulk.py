"""`outbox retry` and `outbox cancel` by filter: a count, a confirmation, and only the rows the
filters and the action's status select."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

import pytest

from tests.integration.test_cli import enqueue, run, sql


def fail(database_url: str, message_id: int, code: int = 131026, **columns: str) -> None:
    sets = "".join(f", {name} = {value}" for name, value in columns.items())
    sql(
        database_url,
        f"UPDATE outbox_messages SET status = 'failed', attempts = 10, error_code = {code}, "
        f"last_error = '(#{code}) undeliverable'{sets} WHERE id = {message_id}",
    )


def statuses(database_url: str) -> dict[int, str]:
    return dict(sql(database_url, "SELECT id, status FROM outbox_messages"))  # type: ignore[arg-type]


def test_retry_by_code_requeues_only_failed_rows_with_that_code(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    wanted, other_code, pending = (enqueue(capsys, "923001234567", t) for t in "abc")
    fail(cli_env, wanted, 131026)
    fail(cli_env, other_code, 131047)
    code, out, err = run(capsys, "retry", "--code", "131026", "--yes")
    assert (code, out, err) == (0, "retried 1 messages\n", "")
    assert statuses(cli_env) == {wanted: "pending", other_code: "failed", pending: "pending"}
    assert sql(cli_env, f"SELECT attempts FROM outbox_messages WHERE id = {wanted}") == [(0,)]


def test_retry_by_recipient_takes_the_number_as_written(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    wanted = enqueue(capsys, "923001234567", "a")
    other = enqueue(capsys, "923007654321", "b")
    fail(cli_env, wanted)
    fail(cli_env, other)
    code, out, _ = run(capsys, "retry", "--recipient", "+92 300 1234567", "--yes")
    assert (code, out) == (0, "retried 1 messages\n")
    assert statuses(cli_env) == {wanted: "pending", other: "failed"}


def test_retry_since_a_duration_leaves_older_rows_alone(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = (enqueue(capsys, "923001234567", t) for t in "ab")
    fail(cli_env, old, created_at="now() - interval '3 hours'")
    fail(cli_env, new)
    assert run(capsys, "retry", "--since", "2h", "--yes")[:2] == (0, "retried 1 messages\n")
    assert statuses(cli_env) == {old: "failed", new: "pending"}


def test_retry_since_an_iso_time_leaves_older_rows_alone(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = (enqueue(capsys, "923001234567", t) for t in "ab")
    fail(cli_env, old, created_at="'2020-01-01T00:00:00Z'")
    fail(cli_env, new)
    code, out, _ = run(capsys, "retry", "--since", "2021-01-01T00:00:00", "--yes")
    assert (code, out) == (0, "retried 1 messages\n")
    assert statuses(cli_env) == {old: "failed", new: "pending"}


def test_retry_by_filter_leaves_rows_meta_failed_after_accepting_and_says_so(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    accepted = enqueue(capsys, "923001234567", "a")
    fail(cli_env, accepted, parts="""'[{"wamid": "wamid.1", "status": "failed"}]'""")
    code, out, err = run(capsys, "retry", "--status", "failed", "--yes")
    assert (code, out) == (0, "no failed messages to retry\n")
    assert "1 failed messages failed after Meta accepted a part" in err
    assert statuses(cli_env) == {accepted: "failed"}


def test_cancel_by_recipient_cancels_only_pending_rows(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pending, failed = (enqueue(capsys, "923001234567", t) for t in "ab")
    other = enqueue(capsys, "923007654321", "c")
    fail(cli_env, failed)
    code, out, _ = run(capsys, "cancel", "--recipient", "923001234567", "--yes")
    assert (code, out) == (0, "cancelled 1 messages\n")
    assert statuses(cli_env) == {pending: "cancelled", failed: "failed", other: "pending"}


def test_without_ids_or_filters_nothing_is_done_and_the_filters_are_named(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message_id = enqueue(capsys, "923001234567", "a")
    code, out, err = run(capsys, "cancel", "--yes")
    assert (code, out) == (2, "")
    assert "--status, --recipient, --code, --since" in err
    assert statuses(cli_env) == {message_id: "pending"}


def test_ids_and_filters_together_are_bad_usage(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message_id = enqueue(capsys, "923001234567", "a")
    code, _, err = run(capsys, "cancel", str(message_id), "--recipient", "923001234567")
    assert code == 2
    assert "not both" in err
    assert statuses(cli_env) == {message_id: "pending"}


def test_without_a_terminal_and_without_yes_nothing_changes_and_yes_is_named(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message_id = enqueue(capsys, "923001234567", "a")
    code, out, err = run(capsys, "cancel", "--status", "pending")
    assert (code, out) == (2, "")
    assert err == (
        "outbox cancel: 1 pending messages match; add --yes to cancel them without a terminal "
        "to confirm on\n"
    )
    assert statuses(cli_env) == {message_id: "pending"}


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--status", "sent"], "--status sent: only pending messages can be cancelled"),
        (["--status", "bogus"], "--status: invalid status bogus"),
        (["--since", "yesterday"], "--since: invalid time 'yesterday'"),
        (["--code", "x"], "--code: invalid code 'x'"),
        (["--recipient", "92-abc"], "--recipient: may hold only digits"),
    ],
)
def test_a_bad_filter_is_bad_usage_naming_the_flag_and_the_rule(
    cli_env: str, capsys: pytest.CaptureFixture[str], argv: list[str], named: str
) -> None:
    message_id = enqueue(capsys, "923001234567", "a")
    code, out, err = run(capsys, "cancel", *argv, "--yes")
    assert (code, out) == (2, "")
    assert named in err
    assert statuses(cli_env) == {message_id: "pending"}


def test_several_statuses_in_one_flag_are_accepted_when_they_are_the_actions(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message_id = enqueue(capsys, "923001234567", "a")
    code, out, _ = run(capsys, "cancel", "--status", "pending,pending", "--yes")
    assert (code, out) == (0, "cancelled 1 messages\n")
    assert statuses(cli_env) == {message_id: "cancelled"}


def _on_a_terminal(database_url: str, answer: bytes, *argv: str) -> tuple[int, str]:
    """Run `outbox` with a terminal as its stdin and stdout, typing `answer`."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "OUTBOX_DATABASE_URL": database_url}
    process = subprocess.Popen(
        [sys.executable, "-m", "outbox", *argv],
        stdin=terminal,
        stdout=terminal,
        stderr=subprocess.STDOUT,
        env=env,
    )
    os.close(terminal)
    output = b""
    try:
        while b"[y/N]" not in output:
            output += os.read(controller, 1024)
        os.write(controller, answer)
        code = process.wait(timeout=30)
        while True:
            try:
                chunk = os.read(controller, 1024)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    finally:
        process.kill()
        process.wait()
        os.close(controller)
    return code, output.decode()


def test_on_a_terminal_the_count_is_confirmed_before_anything_changes(database_url: str) -> None:
    message_id = enqueue_sql(database_url)
    code, output = _on_a_terminal(database_url, b"y\n", "cancel", "--status", "pending")
    assert code == 0
    assert "cancel 1 pending messages? [y/N]" in output
    assert "cancelled 1 messages" in output
    assert statuses(database_url) == {message_id: "cancelled"}


def test_on_a_terminal_any_answer_but_yes_changes_nothing(database_url: str) -> None:
    message_id = enqueue_sql(database_url)
    code, output = _on_a_terminal(database_url, b"\n", "cancel", "--status", "pending")
    assert code == 1
    assert "nothing changed" in output
    assert statuses(database_url) == {message_id: "pending"}


def enqueue_sql(database_url: str) -> int:
    rows = sql(
        database_url,
        "INSERT INTO outbox_messages (recipient, message) VALUES ('923001234567', 'a') "
        "RETURNING id",
    )
    return int(rows[0][0])  # type: ignore[call-overload]
