"""Log lines: text or JSON, tagged with the row being sent, and never a secret."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from outbox.logs import (
    JsonFormatter,
    RowFields,
    TextFormatter,
    bind_row,
    configure_logging,
    mask_recipient,
)
from outbox.settings import Settings

SETTINGS = Settings(
    database_url="postgresql://app:dbpass-123@db/x?sslpassword=ssl-456",
    access_token="EAAG-token-789",
    app_secret="app-secret-000",
)
SECRETS = ("dbpass-123", "ssl-456", "EAAG-token-789", "app-secret-000")


@contextmanager
def capture(
    name: str, formatter: logging.Formatter
) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through the daemon's handler setup (formatter and row filter)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RowFields())
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


@pytest.fixture(params=["text", "json"])
def logged(request: pytest.FixtureRequest) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger in either format."""
    formatter = JsonFormatter(SETTINGS) if request.param == "json" else TextFormatter(SETTINGS)
    with capture(f"test.logs.{request.param}", formatter) as logged:
        yield logged


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_secrets_in_a_message_are_replaced_in_either_format(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    logger.warning("failed with %s %s %s %s", *SECRETS)
    assert "failed with *** *** *** ***" in stream.getvalue()
    assert not any(secret in stream.getvalue() for secret in SECRETS)


def test_secrets_in_a_traceback_are_replaced_in_either_format(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    try:
        raise ConnectionError("could not reach postgresql://app:dbpass-123@db/x")
    except ConnectionError:
        logger.exception("the database went away")
    assert "ConnectionError" in stream.getvalue()
    assert "dbpass-123" not in stream.getvalue()


def test_a_secret_with_json_special_characters_is_masked_in_json() -> None:
    settings = Settings(access_token='tok"en\\with-quotes')
    with capture("test.logs.quotes", JsonFormatter(settings)) as (logger, stream):
        logger.error("token %s refused", 'tok"en\\with-quotes')
    assert json_lines(stream)[0]["message"] == "token *** refused"


@pytest.mark.parametrize(
    "created", [1796000000.0, 1796000000.999, 1796000001.0005, 1796000001.5, 1796003601.25]
)
def test_a_text_lines_time_reads_as_loggings_own(created: float) -> None:
    """The seconds are formatted once per second, and read the same as logging's."""
    formatter = TextFormatter(SETTINGS)
    for at in (created - 1.5, created):  # the stamp of an earlier second is not reused
        record = logging.LogRecord("outbox", logging.INFO, "", 0, "m", None, None)
        record.created, record.msecs = at, (at - int(at)) * 1000
        assert formatter.formatTime(record) == logging.Formatter().formatTime(record)


def test_a_json_line_has_time_level_logger_and_message() -> None:
    with capture("outbox.test.fields", JsonFormatter(SETTINGS)) as (logger, stream):
        logger.info("drained: %s", "nothing left to send")
    (line,) = json_lines(stream)
    assert set(line) == {"time", "level", "logger", "message"}
    assert (line["level"], line["logger"]) == ("INFO", "outbox.test.fields")
    assert line["message"] == "drained: nothing left to send"
    assert str(line["time"]).endswith("+00:00")


def test_what_a_row_task_logs_carries_its_id_masked_recipient_and_code() -> None:
    async def deliver(row_id: int, recipient: str) -> None:
        bind_row(row_id, recipient)
        await asyncio.sleep(0)
        logger.warning("message %d failed", row_id, extra={"code": 131026})

    async def main() -> None:
        await asyncio.gather(deliver(7, "923001234567"), deliver(8, "16505551234"))
        logger.info("after the rows")

    with capture("outbox.test.rows", JsonFormatter(SETTINGS)) as (logger, stream):
        asyncio.run(main())
    lines = json_lines(stream)
    assert [(line.get("row_id"), line.get("recipient"), line.get("code")) for line in lines] == [
        (7, "+********4567", 131026),
        (8, "+*******1234", 131026),
        (None, None, None),
    ]


@pytest.mark.parametrize(
    ("recipient", "masked"),
    [
        ("923001234567", "+********4567"),
        ("16505554567", "+*******4567"),
        ("4915123456789", "+*********6789"),
        ("1234567", "+***4567"),
        ("+92 300-123 4567", "+********4567"),
        ("1234", "+****"),
    ],
)
def test_a_recipient_is_masked_but_for_its_last_four_digits(recipient: str, masked: str) -> None:
    assert mask_recipient(recipient) == masked


def test_every_extra_field_of_a_call_is_a_json_field_with_secrets_masked() -> None:
    with capture("outbox.test.extra", JsonFormatter(SETTINGS)) as (logger, stream):
        logger.info(
            "accepted",
            extra={"part": 1, "parts": 2, "wamid": "wamid.X", "delay": 1.5, "reason": SECRETS[2]},
        )
    (line,) = json_lines(stream)
    assert (line["part"], line["parts"], line["wamid"], line["delay"]) == (1, 2, "wamid.X", 1.5)
    assert line["reason"] == "***"


def test_a_field_json_cannot_encode_is_written_as_text_with_secrets_masked() -> None:
    class Opaque:
        def __str__(self) -> str:
            return f"holding {SECRETS[0]}"

    with capture("outbox.test.opaque", JsonFormatter(SETTINGS)) as (logger, stream):
        logger.info("odd", extra={"thing": Opaque()})
    assert json_lines(stream)[0]["thing"] == "holding ***"


def test_logging_follows_stderr_when_it_is_replaced_and_the_old_one_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging(Settings())
    first.close()  # a test's capture ends; a later one captures anew
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("outbox.test").warning("still heard")
    assert "still heard" in second.getvalue()
    assert "Logging error" not in second.getvalue()


def test_a_configured_line_looks_up_no_process_or_thread_it_never_shows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # os.getpid() is a system call, and neither format shows it: a busy daemon logs a line a part.
    for flag in ("logProcesses", "logThreads", "logMultiprocessing"):
        monkeypatch.setattr(logging, flag, True)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    configure_logging(SETTINGS)
    record = logging.getLogger("outbox.test").makeRecord(
        "outbox.test", logging.INFO, __file__, 1, "sent", (), None
    )
    assert (record.process, record.thread, record.processName) == (None, None, None)
