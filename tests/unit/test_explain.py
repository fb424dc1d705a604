"""Every Graph code outbox classifies has plain words and a next step."""

from __future__ import annotations

import pytest

from outbox import retry
from outbox.explain import explain, explain_line

KNOWN = sorted(
    retry.TRANSIENT_CODES | retry.THROTTLE_CODES | retry.ACCOUNT_CODES | retry.PERMANENT_CODES
)


@pytest.mark.parametrize("code", KNOWN)
def test_every_classified_code_has_meaning_and_next_step(code: int) -> None:
    explanation = explain(code)
    assert explanation is not None, code
    assert explanation.meaning
    assert explanation.next_step


def test_closed_window_tells_to_send_a_template() -> None:
    explanation = explain(131047)
    assert explanation is not None
    assert "24 h" in explanation.meaning
    assert "template" in explanation.next_step


def test_unknown_code_has_no_explanation() -> None:
    assert explain(999_999) is None
    assert explain_line(999_999) == "-"


def test_no_code_has_no_explanation() -> None:
    assert explain(None) is None
