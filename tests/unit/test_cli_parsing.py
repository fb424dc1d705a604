"""Argument parsing of the CLI: durations, times, ids."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from outbox import Settings
from outbox.arguments import UsageError, build_parser, parse_duration, parse_time
from outbox.cli import _describe

SECRETS = {
    "OUTBOX_DATABASE_URL": "postgresql://app:hunter2@db/app?sslpassword=keypass",
    "META_ACCESS_TOKEN": "EAAG-token-value",
    "META_APP_SECRET": "app-secret-value",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90m", timedelta(minutes=90)), ("12h", timedelta(hours=12)), ("30d", timedelta(days=30))],
)
def test_retention_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["30", "0d", "-1d", "1w", "d", "1.5h"])
def test_bad_retention_durations_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="invalid duration"):
        parse_duration(text)


def test_time_without_offset_is_utc() -> None:
    assert parse_time("2030-01-02T03:04:05") == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_time_keeps_its_offset() -> None:
    parsed = parse_time("2030-01-02T03:04:05+05:00")
    assert parsed.utcoffset() == timezone(timedelta(hours=5)).utcoffset(None)


def test_bad_time_is_refused() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="ISO 8601"):
        parse_time("tomorrow")


def test_enqueue_takes_an_expiry_duration() -> None:
    args = build_parser().parse_args(["enqueue", "923001234567", "hi", "--expires-in", "2h"])
    assert args.expires_in == timedelta(hours=2)


def test_enqueue_without_expires_in_never_expires() -> None:
    assert build_parser().parse_args(["enqueue", "923001234567", "hi"]).expires_in is None


@pytest.mark.parametrize("text", ["2", "0h", "2w", "soon"])
def test_bad_expiry_duration_is_bad_usage(text: str) -> None:
    with pytest.raises(UsageError, match="invalid duration"):
        build_parser().parse_args(["enqueue", "923001234567", "hi", "--expires-in", text])


def test_error_line_never_shows_a_secret() -> None:
    settings = Settings.from_env(SECRETS)
    error = RuntimeError(
        "failed with hunter2, sslpassword keypass, token EAAG-token-value, app-secret-value"
    )
    line = _describe(error, settings)
    for secret in ("hunter2", "keypass", "EAAG-token-value", "app-secret-value"):
        assert secret not in line
    assert line == "RuntimeError: failed with ***, sslpassword ***, token ***, ***"


def test_connection_error_line_shows_the_url_without_its_passwords() -> None:
    settings = Settings.from_env(SECRETS)
    line = _describe(OSError("Connect call failed"), settings)
    assert line == (
        "cannot connect to PostgreSQL (postgresql://app:***@db/app?sslpassword=***): "
        "Connect call failed"
    )


def test_run_takes_a_max_age_duration_in_seconds() -> None:
    args = build_parser().parse_args(["run", "--max-age", "2h", "--request-timeout", "5"])
    assert (args.max_age, args.request_timeout) == (7200.0, 5.0)


@pytest.mark.parametrize(
    "flag", [["enqueue", "923001234567", "hi", "--expires-in"], ["run", "--max-age"]]
)
def test_a_duration_too_long_to_store_is_bad_usage(flag: list[str]) -> None:
    with pytest.raises(UsageError, match="at most 100 years"):
        build_parser().parse_args([*flag, "9999999999d"])


def test_every_option_of_every_command_has_a_help_text() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        f"{name} {action.dest}"
        for name, sub in commands.choices.items()
        for action in sub._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert missing == []


def test_every_daemon_option_with_a_value_states_its_default() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    options = [a for a in commands.choices["run"]._actions if a.option_strings and a.nargs != 0]
    assert len(options) >= 16
    assert [a.dest for a in options if "default" not in (a.help or "")] == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--database-url", "postgresql://u@db/app", "stats"],
        ["stats", "--database-url", "postgresql://u@db/app"],
    ],
)
def test_the_database_url_is_taken_before_or_after_the_command(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).database_url == "postgresql://u@db/app"


def test_a_database_url_after_the_command_wins_over_one_before() -> None:
    argv = ["--database-url", "postgresql://u@a/x", "list", "--database-url", "postgresql://u@b/y"]
    assert build_parser().parse_args(argv).database_url == "postgresql://u@b/y"


def test_without_a_database_url_it_is_none() -> None:
    assert build_parser().parse_args(["stats"]).database_url is None


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("outbox 0.")


def test_the_readme_states_the_daemon_flags_defaults_the_code_uses() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    options = readme.split("Options (defaults shown):", 1)[1].split("\n\n", 1)[0]
    stated = dict(re.findall(r"`--([a-z-]+) ([0-9.]+)`", options))
    defaults = Settings()
    assert stated, "the README's options line is gone or no longer parses"
    for flag, value in stated.items():
        assert float(value) == float(getattr(defaults, flag.replace("-", "_"))), flag


@pytest.mark.parametrize("command", ["run", "webhook", "simulator"])
def test_every_long_running_command_takes_the_log_format_and_level(command: str) -> None:
    args = build_parser().parse_args([command, "--log-format", "json", "--log-level", "debug"])
    assert (args.log_format, args.log_level) == ("json", "DEBUG")


@pytest.mark.parametrize("command", ["run", "webhook", "simulator"])
def test_the_log_defaults_are_text_at_info(command: str) -> None:
    args = build_parser().parse_args([command])
    assert (args.log_format, args.log_level) == ("text", "INFO")
