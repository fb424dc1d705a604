"""Settings come from the environment; secrets stay out of reprs and messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from outbox import ConfigurationError, Settings
from outbox.database import asyncpg_dsn
from outbox.settings import redact_url


def test_defaults_when_only_credentials_are_set() -> None:
    settings = Settings.from_env({"META_ACCESS_TOKEN": "t", "META_PHONE_NUMBER_ID": "1"})
    assert settings.database_url is None
    assert settings.graph_api_url == "https://graph.facebook.com"
    assert settings.graph_api_version == "v23.0"


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
