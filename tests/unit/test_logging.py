"""Secrets never reach the log, whatever a library writes into a record."""

from __future__ import annotations

import io
import logging

from outbox.logs import RedactSecrets
from outbox.settings import Settings


def test_secrets_in_a_log_record_are_replaced() -> None:
    settings = Settings(
        database_url="postgresql://app:dbpass-123@db/x?sslpassword=ssl-456",
        access_token="EAAG-token-789",
        app_secret="app-secret-000",
    )
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets(settings))
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    try:
        logger.warning(
            "failed with %s %s %s %s", "dbpass-123", "ssl-456", "EAAG-token-789", "app-secret-000"
        )
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue()
    assert line == "failed with *** *** *** ***\n"
