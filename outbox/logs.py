"""Logging for the long-running commands: text or JSON lines on stderr, secrets always masked.

A row's delivery binds its id and recipient (`bind_row`) so every record logged while it is
sent carries them; JSON lines show them as `row_id` and a masked `recipient`, and every other
field a call passes in `extra` (`part`, `wamid`, `code`, `delay`, ...) as a field of its own.
A phone number is never written whole: `mask_recipient` is the one way to show one."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from outbox.settings import Redactor, Settings

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_row: ContextVar[tuple[int, str] | None] = ContextVar("outbox_row", default=None)


def bind_row(row_id: int, recipient: str) -> None:
    """Tag what the current task logs from now on with this row (each row has its own task)."""
    _row.set((row_id, recipient))


def mask_recipient(recipient: str) -> str:
    """`16505554567` → `+*******4567`: the last four digits, enough to tell a customer's
    messages apart in a log, never enough to dial the number."""
    recipient = str(recipient)
    digits = recipient if recipient.isdigit() else "".join(c for c in recipient if c.isdigit())
    if len(digits) <= 4:
        return "+****"
    return f"+{'*' * (len(digits) - 4)}{digits[-4:]}"


# What every LogRecord has: anything else on a record came from a call's `extra`.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class RowFields(logging.Filter):
    """Adds `row_id` and `recipient` of the row being sent, unless the call gave its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        row = _row.get()
        if row is not None:
            if not hasattr(record, "row_id"):
                record.row_id = row[0]
            if not hasattr(record, "recipient"):
                record.recipient = row[1]
        return True


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, with every secret masked in the whole line, tracebacks
    included, whatever a library put in it."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(TEXT_FORMAT)
        self._redact = Redactor(settings)
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """logging's own `2026-12-07 14:45:18,123`, its seconds formatted once per second (a
        busy daemon logs hundreds of lines in each)."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._second, self._stamp = second, super().formatTime(record).partition(",")[0]
        return f"{self._stamp},{int(record.msecs):03d}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then every field the call gave
    in `extra` (the row id and masked recipient first) and the exception; secrets masked in
    every text before encoding."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self._redact = Redactor(settings)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": self._redact(record.getMessage()),
        }
        row_id = getattr(record, "row_id", None)
        if row_id is not None:
            line["row_id"] = row_id
        recipient = getattr(record, "recipient", None)
        if recipient:
            line["recipient"] = mask_recipient(str(recipient))
        for name, value in vars(record).items():
            if name in _RECORD_FIELDS or name in line or name.startswith("_") or value is None:
                continue
            if isinstance(value, str):
                value = self._redact(value)
            line[name] = value
        if record.exc_info:
            line["exception"] = self._redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=self._text)

    def _text(self, value: object) -> str:
        """A field JSON cannot encode, as text, secrets masked."""
        return self._redact(str(value))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is when a record comes: a program that swaps it (a test's
    capture, a daemon redirecting it) never leaves the handler writing to a closed stream."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(settings: Settings, *, fmt: str = "text", level: str = "INFO") -> None:
    """Route every logger to stderr in `fmt` at `level`, with every secret masked."""
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter(settings) if fmt == "json" else TextFormatter(settings))
    handler.addFilter(RowFields())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # Neither format shows where a call was made, nor its thread or process: not looking them
    # up saves a stack walk per record (the logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
