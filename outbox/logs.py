"""Logging for the long-running commands: text or JSON lines on stderr, secrets always masked."""

from __future__ import annotations

import logging
import sys

from outbox.settings import Settings, redact_secrets

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class RedactSecrets(logging.Filter):
    """Replaces every configured secret in a record's text: whatever a library logs, the token,
    the app secret and database passwords never reach the log."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self._settings = settings

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_secrets(message, self._settings)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure_logging(settings: Settings, *, fmt: str = "text", level: str = "INFO") -> None:
    """Route every logger to stderr in `fmt` at `level`, through the secret filter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(settings))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
