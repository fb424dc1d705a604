"""Every command's --help ends with the environment variables it reads."""

from __future__ import annotations

import pytest

from outbox.arguments import build_parser


def help_of(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([command, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def environment(text: str) -> list[str]:
    section = text.split("\nenvironment:\n", 1)[1]
    return [line.split()[0] for line in section.splitlines() if line.strip()]


COMMANDS = [
    "migrate", "enqueue", "status", "list", "stats", "retry", "cancel", "prune", "run",
    "simulator", "webhook", "optout", "demo", "inbound", "pause", "resume", "tail", "check",
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_names_the_variables_it_reads(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert environment(help_of(command, capsys))


def test_a_database_command_reads_the_database_url_and_home_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert environment(help_of("list", capsys)) == ["OUTBOX_DATABASE_URL", "OUTBOX_HOME"]


def test_run_help_names_the_graph_api_and_listen_variables(
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = environment(help_of("run", capsys))
    assert {"META_ACCESS_TOKEN", "META_PHONE_NUMBER_ID", "OUTBOX_LISTEN_URL"} <= set(names)
    assert "META_WEBHOOK_VERIFY_TOKEN" not in names


def test_webhook_help_names_the_app_secret_and_verify_token(
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = environment(help_of("webhook", capsys))
    assert {"META_APP_SECRET", "META_WEBHOOK_VERIFY_TOKEN", "OUTBOX_DATABASE_URL"} <= set(names)
    assert "META_ACCESS_TOKEN" not in names


def test_simulator_help_reads_no_database(capsys: pytest.CaptureFixture[str]) -> None:
    assert "OUTBOX_DATABASE_URL" not in environment(help_of("simulator", capsys))


def test_check_help_names_the_webhook_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert "OUTBOX_WEBHOOK_URL" in environment(help_of("check", capsys))
