"""The `outbox` CLI: what it prints, how it refuses, and that errors are one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest

from outbox import migrate
from outbox.cli import main
from tests.conftest import with_database

BIN = Path(sys.executable).parent


def sql(database_url: str, statement: str) -> list[tuple[object, ...]]:
    connection = psycopg2.connect(database_url)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(statement)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def enqueue(capsys: pytest.CaptureFixture[str], *argv: str) -> int:
    code, out, err = run(capsys, "enqueue", *argv)
    assert code == 0, err
    return int(out)


def test_enqueue_prints_the_new_id_alone(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "enqueue", "+1 (650) 555-1234", "Hello", "--image", "https://a.example/x.jpg"
    )
    assert (code, err) == (0, "")
    assert out.strip().isdigit()
    rows = sql(
        cli_env, f"SELECT recipient, media->0->>'type' FROM outbox_messages WHERE id = {out}"
    )
    assert rows == [("16505551234", "image")]


def test_enqueue_send_at_without_offset_is_utc(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message_id = enqueue(capsys, "923001234567", "later", "--send-at", "2031-01-02T03:04:05")
    code, out, _ = run(capsys, "status", str(message_id), "--json")
    assert code == 0
    assert json.loads(out)["next_attempt_at"] == "2031-01-02T03:04:05+00:00"


def test_enqueue_with_repeated_key_prints_the_first_id(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first = enqueue(capsys, "923001234567", "a", "--idempotency-key", "k")
    assert enqueue(capsys, "923001234567", "b", "--idempotency-key", "k") == first


def test_invalid_input_is_one_line_naming_the_field(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "enqueue", "92-300-abc", "hi")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert err.startswith("outbox: invalid recipient:")
    assert sql(cli_env, "SELECT count(*) FROM outbox_messages") == [(0,)]


def test_status_json_uses_public_column_names(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message_id = enqueue(capsys, "923001234567", "hi")
    code, out, _ = run(capsys, "status", str(message_id), "--json")
    body = json.loads(out)
    assert code == 0
    assert {
        "id",
        "recipient",
        "status",
        "attempts",
        "message_id",
        "last_error",
        "created_at",
    } <= set(body)
    assert body["created_at"].endswith("+00:00")


def test_status_numbers_parts_from_1_alike_in_text_and_json(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message_id = enqueue(capsys, "923001234567", "hi", "--image", "https://a.example/x.jpg")
    sql(  # the text (index 1) accepted: the history's part column holds the index
        cli_env,
        f"INSERT INTO outbox_events (message_id, part, kind, http_status, detail) "
        f"VALUES ({message_id}, 1, 'accepted', 200, 'wamid.T')",
    )
    _, text, _ = run(capsys, "status", str(message_id))
    _, out, _ = run(capsys, "status", str(message_id), "--json")
    document = json.loads(out)
    assert [part["part"] for part in document["parts"]] == [1, 2]
    assert [event["part"] for event in document["history"]] == [2]
    assert "  2. text" in text
    assert any("part 2" in line and "accepted" in line for line in text.splitlines())


def test_status_of_unknown_id_says_so(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "status", "999") == (1, "", "outbox: message 999 not found\n")


def test_list_json_is_newest_first(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    ids = [enqueue(capsys, "923001234567", text) for text in ("a", "b")]
    code, out, _ = run(capsys, "list", "--json")
    assert code == 0
    assert [row["id"] for row in json.loads(out)] == ids[::-1]


def test_retry_requeues_a_failed_row_keeping_its_accepted_parts(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message_id = enqueue(capsys, "923001234567", "hi", "--image", "https://a.example/x.jpg")
    sql(
        cli_env,
        "UPDATE outbox_messages SET status = 'failed', attempts = 10, "
        """parts = '[{"wamid": "wamid.1", "status": "sent"}]' """
        f"WHERE id = {message_id}",
    )
    assert run(capsys, "retry", str(message_id)) == (0, f"retried {message_id}\n", "")
    rows = sql(
        cli_env,
        f"SELECT status, attempts, parts->0->>'wamid' FROM outbox_messages WHERE id = {message_id}",
    )
    assert rows == [("pending", 0, "wamid.1")]


def test_retry_of_a_row_meta_failed_after_accepting_it_is_refused(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A retry never resends an accepted part, so requeueing a row whose accepted part Meta then
    failed (by status webhook) would only have marked it sent: an untruthful status."""
    message_id = enqueue(capsys, "923001234567", "hi")
    sql(
        cli_env,
        "UPDATE outbox_messages SET status = 'failed', last_error = '(#131026) undeliverable', "
        """parts = '[{"wamid": "wamid.1", "status": "failed"}]' """
        f"WHERE id = {message_id}",
    )
    code, out, err = run(capsys, "retry", str(message_id))
    assert (code, out) == (1, "")
    assert err.startswith(f"outbox: message {message_id} failed after Meta accepted it")
    assert "enqueue it again" in err
    rows = sql(cli_env, f"SELECT status FROM outbox_messages WHERE id = {message_id}")
    assert rows == [("failed",)]


def test_retry_of_a_pending_row_is_refused(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message_id = enqueue(capsys, "923001234567", "hi")
    code, out, err = run(capsys, "retry", str(message_id))
    assert (code, out) == (1, "")
    assert err == f"outbox: message {message_id} is pending; only failed messages can be retried\n"


def test_cancel_cancels_pending_and_refuses_the_rest(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pending = enqueue(capsys, "923001234567", "a")
    sent = enqueue(capsys, "923001234567", "b")
    sql(cli_env, f"UPDATE outbox_messages SET status = 'sent' WHERE id = {sent}")
    code, out, err = run(capsys, "cancel", str(pending), str(sent), "777")
    assert code == 1
    assert out == f"cancelled {pending}\n"
    assert err.splitlines() == [
        f"outbox: message {sent} is sent; only pending messages can be cancelled",
        "outbox: message 777 not found",
    ]
    assert sql(cli_env, f"SELECT status FROM outbox_messages WHERE id = {pending}") == [
        ("cancelled",)
    ]


def test_prune_deletes_only_old_finished_rows(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    old_sent, old_pending, new_sent = (enqueue(capsys, "923001234567", t) for t in "abc")
    sql(cli_env, f"UPDATE outbox_messages SET status = 'sent' WHERE id IN ({old_sent}, {new_sent})")
    sql(
        cli_env,
        "UPDATE outbox_messages SET updated_at = now() - interval '31 days' "
        f"WHERE id IN ({old_sent}, {old_pending})",
    )
    assert run(capsys, "prune", "--older-than", "30d") == (0, "pruned 1 finished messages\n", "")
    remaining = sql(cli_env, "SELECT id FROM outbox_messages ORDER BY id")
    assert remaining == [(old_pending,), (new_sent,)]


def test_stats_counts_every_status(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    enqueue(capsys, "923001234567", "a")
    failed = enqueue(capsys, "923001234567", "b")
    sql(cli_env, f"UPDATE outbox_messages SET status = 'failed' WHERE id = {failed}")
    code, out, _ = run(capsys, "stats", "--json")
    assert code == 0
    stats = json.loads(out)
    assert stats["counts"] == {
        "pending": 1,
        "sending": 0,
        "sent": 0,
        "delivered": 0,
        "read": 0,
        "failed": 1,
        "cancelled": 0,
    }
    assert stats["oldest_pending_seconds"] >= 0


def test_stats_keeps_a_long_daemon_id_apart_from_its_state(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sql(
        cli_env,
        "INSERT INTO outbox_daemons (id, state, reason, state_since) "
        "VALUES ('vm-1.example:26337:fb4ab871', 'outage', 'timed out', now())",
    )
    code, out, _ = run(capsys, "stats")
    assert code == 0
    assert "daemon vm-1.example:26337:fb4ab871 outage since " in out


def test_stats_shows_the_errors_meta_reported_about_a_number_in_the_last_day(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sql(
        cli_env,
        "INSERT INTO outbox_webhook_errors (phone_number_id, code, title, detail, received_at) "
        "VALUES ('106540352242922', 130429, 'Rate limit hit', 'throughput reached', now()), "
        "('106540352242922', 130429, 'Rate limit hit', 'throughput reached', now()), "
        "('106540352242922', 131000, 'Old', NULL, now() - interval '2 days')",
    )
    code, out, _ = run(capsys, "stats")
    assert code == 0
    [line] = [line for line in out.splitlines() if line.startswith("Meta reported")]
    assert (
        "(#130429) Rate limit hit: throughput reached for number 106540352242922, 2 times" in line
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["prune", "--older-than", "30x"],
        ["status", "abc"],
        ["frobnicate"],
        ["list", "--status", "x"],
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1


def test_missing_schema_says_to_migrate(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OUTBOX_DATABASE_URL", empty_database_url)
    assert run(capsys, "status", "1") == (
        1,
        "",
        "outbox: the outbox schema is missing: run `outbox migrate` first\n",
    )


def test_unreachable_database_is_one_line_without_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OUTBOX_DATABASE_URL", "postgresql://app:hunter2@127.0.0.1:1/db")
    code, out, err = run(capsys, "list")
    assert (code, out) == (1, "")
    assert err.startswith(
        "outbox: cannot connect to PostgreSQL (postgresql://app:***@127.0.0.1:1/db)"
    )
    assert err.count("\n") == 1
    assert "hunter2" not in err


def test_console_script_and_module_run_with_the_asyncpg_suffix(cli_env: str) -> None:
    env = {
        **os.environ,
        "OUTBOX_DATABASE_URL": cli_env.replace("postgresql://", "postgresql+asyncpg://"),
    }
    made = subprocess.run(
        [str(BIN / "outbox"), "enqueue", "923001234567", "hi"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "outbox", "status", made.stdout.strip()],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "pending" in shown.stdout


def test_run_without_a_token_fails_fast_in_one_line(
    cli_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("META_ACCESS_TOKEN", raising=False)
    monkeypatch.setenv("META_PHONE_NUMBER_ID", "1234567890")
    assert run(capsys, "run", "--drain") == (
        1,
        "",
        "outbox: META_ACCESS_TOKEN is required to send\n",
    )


def test_run_without_token_and_phone_number_id_names_both_at_once(
    cli_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("META_ACCESS_TOKEN", raising=False)
    monkeypatch.delenv("META_PHONE_NUMBER_ID", raising=False)
    assert run(capsys, "run", "--drain") == (
        1,
        "",
        "outbox: META_ACCESS_TOKEN and META_PHONE_NUMBER_ID are required to send\n",
    )


BEHIND = f"{int(migrate.HEAD_REVISION) - 1:04d}"


def _refused_run(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    """`outbox run --drain` on `database_url`, which must refuse to start: its one line."""
    monkeypatch.setenv("OUTBOX_DATABASE_URL", database_url)
    monkeypatch.setenv("META_ACCESS_TOKEN", "test-access-token")
    monkeypatch.setenv("META_PHONE_NUMBER_ID", "1234567890")
    code, out, err = run(capsys, "run", "--drain")
    assert (code, out) == (1, "")
    return err


def test_run_on_an_unmigrated_database_says_to_migrate(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _refused_run(empty_database_url, monkeypatch, capsys) == (
        f"outbox: the outbox schema is at revision none, not {migrate.head_revision()}: "
        "run `outbox migrate` first\n"
    )


def test_run_on_a_database_one_revision_behind_names_both_revisions(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    migrate.upgrade(empty_database_url, BEHIND)
    assert _refused_run(empty_database_url, monkeypatch, capsys) == (
        f"outbox: the outbox schema is at revision {BEHIND}, not {migrate.HEAD_REVISION}: "
        "run `outbox migrate` first\n"
    )


def test_run_on_a_version_table_recording_two_revisions_names_both(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute("INSERT INTO outbox_alembic_version VALUES (%s)", (BEHIND,))
    connection.close()
    assert _refused_run(database_url, monkeypatch, capsys) == (
        "outbox: the outbox schema records several revisions at once "
        f"({BEHIND}, {migrate.HEAD_REVISION} in outbox_alembic_version), not "
        f"{migrate.HEAD_REVISION} alone: keep the one it is at, then run `outbox migrate`\n"
    )


def test_enqueue_expires_in_counts_from_the_database_clock(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message_id = enqueue(capsys, "923001234567", "hi", "--expires-in", "2h")
    rows = sql(
        cli_env,
        f"SELECT expires_at - created_at FROM outbox_messages WHERE id = {message_id}",
    )
    assert rows == [(timedelta(hours=2),)]


def test_enqueue_expiring_before_its_send_at_is_refused(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    later = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    code, out, err = run(
        capsys, "enqueue", "923001234567", "hi", "--send-at", later, "--expires-in", "1d"
    )
    assert (code, out) == (1, "")
    assert err == "outbox: invalid expires_at: must be later than send_at\n"
    assert sql(cli_env, "SELECT count(*) FROM outbox_messages") == [(0,)]


def test_status_text_shows_expires_at(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    message_id = enqueue(capsys, "923001234567", "hi", "--expires-in", "90m")
    (expires_at,) = sql(cli_env, f"SELECT expires_at FROM outbox_messages WHERE id = {message_id}")[
        0
    ]
    assert isinstance(expires_at, datetime)
    code, out, _ = run(capsys, "status", str(message_id))
    assert code == 0
    assert f"expires_at      {expires_at.isoformat(timespec='seconds')}" in out.splitlines()


def test_status_text_shows_no_expiry_as_a_dash(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message_id = enqueue(capsys, "923001234567", "hi")
    _, out, _ = run(capsys, "status", str(message_id))
    assert "expires_at      -" in out.splitlines()


def test_status_json_has_expires_at(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    message_id = enqueue(capsys, "923001234567", "hi", "--expires-in", "30d")
    _, out, _ = run(capsys, "status", str(message_id), "--json")
    expires_at = datetime.fromisoformat(json.loads(out)["expires_at"])
    assert timedelta(days=29) < expires_at - datetime.now(UTC) <= timedelta(days=30)


@pytest.mark.parametrize(
    ("recipient", "rule"),
    [
        ("00999123456789", "+999123456789 has no valid country code"),
        ("+0 123 4567890", "+01234567890 has no valid country code"),
        ("+1 234 567", "+1234567 has too few digits for country code 1"),
    ],
)
def test_enqueue_refuses_a_recipient_that_cannot_exist(
    cli_env: str, capsys: pytest.CaptureFixture[str], recipient: str, rule: str
) -> None:
    assert run(capsys, "enqueue", recipient, "hi") == (
        1,
        "",
        f"outbox: invalid recipient: {rule}\n",
    )
    assert sql(cli_env, "SELECT count(*) FROM outbox_messages") == [(0,)]


def test_enqueue_refuses_more_than_ten_media_parts(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    images = [arg for i in range(11) for arg in ("--image", f"https://a.example/{i}.jpg")]
    code, out, err = run(capsys, "enqueue", "923001234567", *images)
    assert (code, out) == (1, "")
    assert err == "outbox: invalid media_urls: must have at most 10 parts, got 11\n"


def test_enqueue_stores_an_uppercase_url_scheme_lowercased(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message_id = enqueue(capsys, "923001234567", "--image", "HTTPS://cdn.example.com/a.jpg")
    rows = sql(cli_env, f"SELECT media->0->>'url' FROM outbox_messages WHERE id = {message_id}")
    assert rows == [("https://cdn.example.com/a.jpg",)]


def _cli_without_config(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real `python -m outbox` with only the given OUTBOX_/META_ variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "META_"))}
    return subprocess.run(
        [sys.executable, "-m", "outbox", *argv],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("command", ["stats", "list", "status"])
def test_query_string_password_of_an_unreachable_database_is_never_printed(command: str) -> None:
    argv = [command, "1"] if command == "status" else [command]
    shown = _cli_without_config(
        "--database-url", "postgresql://u@127.0.0.1:1/x?password=topsecret", *argv
    )
    assert shown.returncode == 1
    assert "topsecret" not in shown.stdout + shown.stderr
    assert shown.stderr.startswith(
        "outbox: cannot connect to PostgreSQL (postgresql://u@127.0.0.1:1/x?password=***)"
    )
    assert shown.stderr.count("\n") == 1


def test_query_string_password_of_a_wrong_database_is_never_printed(server_dsn: str) -> None:
    url = with_database(server_dsn, "outbox_no_such_database") + "?password=topsecret"
    shown = _cli_without_config("--database-url", url, "stats")
    assert shown.returncode == 1
    assert "topsecret" not in shown.stdout + shown.stderr
    assert "outbox_no_such_database" in shown.stderr
    assert shown.stderr.count("\n") == 1


def test_no_configured_secret_is_ever_printed_in_an_error() -> None:
    shown = _cli_without_config(
        "stats",
        OUTBOX_DATABASE_URL="postgresql://app:pw-userinfo@127.0.0.1:1/x?sslpassword=pw-ssl",
        META_ACCESS_TOKEN="EAAG-token-value",
        META_APP_SECRET="app-secret-value",
    )
    assert shown.returncode == 1
    output = shown.stdout + shown.stderr
    for secret in ("pw-userinfo", "pw-ssl", "EAAG-token-value", "app-secret-value"):
        assert secret not in output
