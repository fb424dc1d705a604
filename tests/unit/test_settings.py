"""Settings come from the environment; secrets stay out of reprs and messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from outbox import ConfigurationError, Settings
from outbox.database import asyncpg_dsn
from outbox.settings import redact_secrets, redact_url


def test_defaults_when_only_credentials_are_set() -> None:
    settings = Settings.from_env({"META_ACCESS_TOKEN": "t", "META_PHONE_NUMBER_ID": "1"})
    assert settings.database_url is None
    assert settings.graph_api_url == "https://graph.facebook.com"
    assert settings.graph_api_version == "v23.0"


@pytest.mark.parametrize(
    ("value", "prepared"),
    [(None, None), ("auto", None), ("on", True), ("TRUE", True), ("1", True), ("off", False)],
)
def test_prepared_statements_are_left_to_each_connection_unless_turned_on_or_off(
    value: str | None, prepared: bool | None
) -> None:
    environ = {} if value is None else {"OUTBOX_PREPARED_STATEMENTS": value}
    assert Settings.from_env(environ).prepared_statements is prepared


def test_a_prepared_statements_value_that_is_not_auto_on_or_off_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="OUTBOX_PREPARED_STATEMENTS: must be auto, on"):
        Settings.from_env({"OUTBOX_PREPARED_STATEMENTS": "maybe"})


def test_outbox_home_overrides_the_default() -> None:
    assert Settings.from_env({"OUTBOX_HOME": "/srv/outbox"}).home == Path("/srv/outbox")


def test_repr_hides_token_secret_and_database_password() -> None:
    settings = Settings.from_env(
        {
            "OUTBOX_DATABASE_URL": "postgresql://app:s3cret-pw@db:5432/app",
            "META_ACCESS_TOKEN": "EAAG-token-value",
            "META_APP_SECRET": "app-secret-value",
            "META_WEBHOOK_VERIFY_TOKEN": "verify-value",
        }
    )
    text = repr(settings) + str(settings)
    for secret in ("s3cret-pw", "EAAG-token-value", "app-secret-value", "verify-value"):
        assert secret not in text
    assert "postgresql://app:***@db:5432/app" in text


def test_non_postgres_url_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="OUTBOX_DATABASE_URL"):
        Settings.from_env({"OUTBOX_DATABASE_URL": "mysql://x@y/z"})


@pytest.mark.parametrize(
    ("url", "dsn"),
    [
        ("postgresql+asyncpg://u@h/db", "postgresql://u@h/db"),
        ("postgresql://postgres@/mydb?host=/run/pg", "postgresql://postgres@/mydb?host=/run/pg"),
        (
            "postgresql+asyncpg://postgres@/mydb?host=/run/pg",
            "postgresql://postgres@/mydb?host=/run/pg",
        ),
    ],
)
def test_asyncpg_dsn_drops_only_the_driver_suffix(url: str, dsn: str) -> None:
    assert asyncpg_dsn(url) == dsn


def test_redact_url_leaves_passwordless_urls_alone() -> None:
    assert (
        redact_url("postgresql://postgres@/db?host=/tmp") == "postgresql://postgres@/db?host=/tmp"
    )


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql://app:s3cret@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("postgresql://app:p@ss:w0rd@db/app", "postgresql://app:***@db/app"),
        ("postgresql://:s3cret@db/app", "postgresql://:***@db/app"),
        ("postgresql://app:s3cret@h1:5432,h2:5433/app", "postgresql://app:***@h1:5432,h2:5433/app"),
        ("postgresql://u@h/x?password=topsecret", "postgresql://u@h/x?password=***"),
        ("postgresql://u@h/x?PassWord=topsecret", "postgresql://u@h/x?PassWord=***"),
        (
            "postgresql://u@h/x?sslmode=require&sslpassword=keypass&application_name=a",
            "postgresql://u@h/x?sslmode=require&sslpassword=***&application_name=a",
        ),
        ("postgresql://u@h/x?SSLPASSWORD=keypass", "postgresql://u@h/x?SSLPASSWORD=***"),
        ("postgresql://u@h/x?pass%77ord=topsecret", "postgresql://u@h/x?pass%77ord=***"),
        ("postgresql://u@h?password=topsecret", "postgresql://u@h?password=***"),
        (
            "postgresql+asyncpg://a:b@h/x?password=c&password=d",
            "postgresql+asyncpg://a:***@h/x?password=***&password=***",
        ),
        ("postgresql://u@h/x?password=top#frag", "postgresql://u@h/x?password=***"),
        ("postgresql://u:p#ss@h/x", "postgresql://u:***@h/x"),  # not percent-encoded
        ("postgresql://u:pa?ss@h/x?password=p2", "postgresql://u:***@h/x?password=***"),
        ("postgresql://u:pa?b=1@h/x?password=p2", "postgresql://u:***@h/x?password=***"),
        ("postgresql://u:pw@h?password=a@b", "postgresql://u:***@b"),  # hides more, never less
        (
            "postgresql://u@/x?host=/run/pg&password=s",
            "postgresql://u@/x?host=/run/pg&password=***",
        ),
    ],
)
def test_redact_url_hides_every_form_of_password(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@/db?host=/tmp",
        "postgresql://u@h/x?passwordless=1&user=p",
        "postgresql://h/x?sslmode=require",
    ],
)
def test_redact_url_keeps_urls_without_a_password(url: str) -> None:
    assert redact_url(url) == url


def test_repr_hides_a_query_string_password() -> None:
    settings = Settings.from_env(
        {"OUTBOX_DATABASE_URL": "postgresql://u@h/x?sslpassword=keypass&password=topsecret"}
    )
    text = repr(settings) + str(settings)
    assert "topsecret" not in text
    assert "keypass" not in text
    assert "password=***" in text


def test_secrets_are_the_database_passwords_token_and_app_secret() -> None:
    settings = Settings.from_env(
        {
            "OUTBOX_DATABASE_URL": "postgresql://u:pw%40one@h/x?password=two&sslpassword=three",
            "META_ACCESS_TOKEN": "EAAG-token",
            "META_APP_SECRET": "app-secret",
            "META_WEBHOOK_VERIFY_TOKEN": "verify-token",
        }
    )
    assert set(settings.secrets()) >= {
        "pw%40one",
        "pw@one",
        "two",
        "three",
        "EAAG-token",
        "app-secret",
        "verify-token",
    }


def test_secrets_of_settings_without_any_are_empty() -> None:
    assert Settings.from_env({"OUTBOX_DATABASE_URL": "postgresql://u@h/x"}).secrets() == ()


def test_redact_secrets_replaces_every_occurrence_of_each_secret() -> None:
    settings = Settings.from_env(
        {
            "OUTBOX_DATABASE_URL": "postgresql://u@h/x?password=topsecret",
            "META_ACCESS_TOKEN": "EAAG-token",
            "META_APP_SECRET": "app-secret",
        }
    )
    text = "dsn password=topsecret; token EAAG-token; again topsecret; app-secret."
    assert redact_secrets(text, settings) == "dsn password=***; token ***; again ***; ***."


def test_redact_secrets_replaces_the_longer_of_two_overlapping_secrets_whole() -> None:
    settings = Settings.from_env({"META_ACCESS_TOKEN": "abcd", "META_APP_SECRET": "abcdefgh"})
    assert redact_secrets("x abcdefgh y abcd", settings) == "x *** y ***"


def test_redact_secrets_leaves_values_too_short_to_be_secrets() -> None:
    settings = Settings.from_env({"META_ACCESS_TOKEN": "t"})
    assert redact_secrets("lease-seconds: must be positive", settings) == (
        "lease-seconds: must be positive"
    )


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e12])
def test_a_duration_setting_out_of_range_is_refused(value: float) -> None:
    with pytest.raises(ConfigurationError, match="lease-seconds"):
        Settings(lease_seconds=value)
