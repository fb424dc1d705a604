"""Argument parsing of the CLI: durations, times, ids."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta, timezone

import pytest

from outbox.cli import parse_duration, parse_time


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
