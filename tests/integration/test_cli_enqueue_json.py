"""`outbox enqueue --json`: the Python enqueue()'s fields as JSON, from an argument or stdin."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from tests.integration.test_cli import run, sql


def test_enqueue_json_argument_inserts_the_message_and_prints_its_id(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    document = {
        "recipient": "+92 300 1234567",
        "message": "Hello",
        "media_urls": {"images": ["https://a.example/x.jpg"]},
        "idempotency_key": "order-1",
    }
    code, out, err = run(capsys, "enqueue", "--json", json.dumps(document))
    assert (code, err) == (0, "")
    rows = sql(
        cli_env,
        "SELECT recipient, message, media->0->>'type', idempotency_key FROM outbox_messages "
        f"WHERE id = {int(out)}",
    )
    assert rows == [("923001234567", "Hello", "image", "order-1")]


def test_enqueue_json_takes_a_template_object(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    document = {
        "recipient": "923001234567",
        "template": {"name": "order_update", "language": "en_US", "body_params": ["42"]},
    }
    code, out, _ = run(capsys, "enqueue", "--json", json.dumps(document))
    assert code == 0
    rows = sql(cli_env, f"SELECT template->>'name' FROM outbox_messages WHERE id = {int(out)}")
    assert rows == [("order_update",)]


def test_enqueue_json_send_at_without_offset_is_utc(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    document = {"recipient": "923001234567", "message": "later", "send_at": "2031-01-02T03:04:05"}
    code, out, _ = run(capsys, "enqueue", "--json", json.dumps(document))
    assert code == 0
    code, status, _ = run(capsys, "status", out.strip(), "--json")
    assert json.loads(status)["next_attempt_at"] == "2031-01-02T03:04:05+00:00"


def test_enqueue_json_lines_from_stdin_print_one_id_per_message(
    cli_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = "\n".join(
        json.dumps({"recipient": "923001234567", "message": text}) for text in ("a", "b")
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines + "\n"))
    code, out, _ = run(capsys, "enqueue", "--json")
    assert code == 0
    ids = [int(line) for line in out.splitlines()]
    assert sql(cli_env, "SELECT id, message FROM outbox_messages ORDER BY id") == [
        (ids[0], "a"),
        (ids[1], "b"),
    ]


def test_one_invalid_message_among_several_inserts_none_and_names_it(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    documents = [
        {"recipient": "923001234567", "message": "fine"},
        {"recipient": "923001234567", "media_urls": {"images": ["ftp://x"]}},
    ]
    code, out, err = run(capsys, "enqueue", "--json", json.dumps(documents))
    assert (code, out) == (1, "")
    assert err.startswith("outbox: invalid message 2: media")
    assert sql(cli_env, "SELECT count(*) FROM outbox_messages") == [(0,)]


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ('{"recipient": "923001234567", "text": "hi"}', "invalid text: unknown field: use"),
        ('{"message": "hi"}', "invalid recipient: is required"),
        ('{"recipient": "923001234567", "message": "hi", "send_at": "soon"}', "invalid send_at:"),
        ('{"recipient": 923001234567, "message": "hi"}', "invalid recipient: must be a string"),
        ("{not json", "invalid --json line 1: is not JSON"),
        (
            '{"recipient": "923001234567", "template": {"name": "x"}}',
            "invalid template.language: is required",
        ),
    ],
)
def test_bad_json_names_the_field_and_the_rule_and_inserts_nothing(
    cli_env: str, capsys: pytest.CaptureFixture[str], document: str, named: str
) -> None:
    code, out, err = run(capsys, "enqueue", "--json", document)
    assert (code, out) == (1, "")
    assert err.startswith(f"outbox: {named}"), err
    assert sql(cli_env, "SELECT count(*) FROM outbox_messages") == [(0,)]


def test_json_with_the_message_options_is_bad_usage(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "enqueue", "923001234567", "--json", "{}")
    assert (code, out) == (2, "")
    assert err == "outbox enqueue: --json replaces RECIPIENT: give one or the other\n"


def test_enqueue_without_a_recipient_or_json_is_bad_usage(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "enqueue")
    assert code == 2
    assert "recipient" in err


def test_enqueue_json_reads_stdin_through_the_console_script(cli_env: str) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "outbox", "enqueue", "--json"],
        input='{"recipient": "923001234567", "message": "piped"}',
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (process.returncode, process.stderr) == (0, "")
    assert sql(
        cli_env, f"SELECT message FROM outbox_messages WHERE id = {int(process.stdout)}"
    ) == [("piped",)]
