"""Texts from outside are cleaned before they are stored, logged or printed."""

from __future__ import annotations

import pytest

from outbox.errors import GraphError, clean


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("a\x00b", "a?b"),
        ("lone \ud800 surrogate", "lone ? surrogate"),
        ("two\nlines\r\n", "two lines"),
        ("bell\x07", "bell?"),
        ("ünïcödé ✓", "ünïcödé ✓"),
    ],
)
def test_clean_keeps_text_storable_and_on_one_line(raw: str, cleaned: str) -> None:
    assert clean(raw) == cleaned


def test_clean_caps_the_length() -> None:
    assert len(clean("x" * 10_000)) == 500


def test_graph_errors_are_cleaned_on_creation() -> None:
    error = GraphError(http_status=400, code=100, message="bad\x00param \udc80")
    assert str(error) == "(#100) bad?param ?"
