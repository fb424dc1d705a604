"""What the catalogue's status of a row's template means for the row at send time (issue 16,
point 3): pure functions, fixed clocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from outbox.policy.template_holds import pause_length, ruling
from tests.unit.test_policy import rule, window

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def test_a_paused_template_holds_its_row_until_the_pause_ends() -> None:
    found = ruling("PAUSED", NOW + timedelta(hours=1), NOW, "promo", "en")
    assert found is not None
    assert found.hold_until == NOW + timedelta(hours=1)
    assert found.reason == "template_paused: Meta paused promo (en) until 2026-12-06 13:00 UTC"


def test_a_pause_that_is_over_lets_the_row_go() -> None:
    assert ruling("PAUSED", NOW - timedelta(seconds=1), NOW, "promo", "en") is None


@pytest.mark.parametrize("status", ["DISABLED", "REJECTED", "PENDING_DELETION", "DELETED"])
def test_a_refused_template_fails_its_row(status: str) -> None:
    found = ruling(status, None, NOW, "promo", "en")
    assert found is not None
    assert found.hold_until is None
    assert found.reason == f"template_disabled: Meta says promo (en) is {status}; not sent"


@pytest.mark.parametrize("status", [None, "APPROVED", "FLAGGED", "IN_APPEAL", "LIMIT_EXCEEDED"])
def test_any_other_status_leaves_the_row_to_meta(status: str | None) -> None:
    assert ruling(status, None, NOW, "promo", "en") is None


@pytest.mark.parametrize(
    ("title", "hours"), [("FIRST_PAUSE", 3), ("SECOND_PAUSE", 6), ("SOMETHING_NEW", 3)]
)
def test_metas_pause_lasts_three_hours_then_six(title: str, hours: int) -> None:
    assert pause_length({"title": title}) == timedelta(hours=hours)


def test_a_paused_template_row_is_held_before_the_consent_rule_lets_it_go() -> None:
    paused = ruling("PAUSED", NOW + timedelta(hours=3), NOW, "promo", "en")
    found = rule(template_row=True, category="utility", fallback=None, template=paused)
    assert (found.hold, found.fail, found.hold_until) == (
        paused.reason if paused else None,
        None,
        NOW + timedelta(hours=3),
    )


def test_a_closed_window_with_a_paused_fallback_waits_without_switching() -> None:
    paused = ruling("PAUSED", NOW + timedelta(hours=3), NOW, "we_miss_you", "en")
    found = rule(category="utility", template=paused)
    assert (found.fallback, found.switch, found.hold is not None) == (None, False, True)


def test_a_closed_window_with_a_disabled_fallback_fails() -> None:
    disabled = ruling("DISABLED", None, NOW, "we_miss_you", "en")
    found = rule(category="utility", template=disabled)
    assert str(found.fail).startswith("template_disabled")


def test_an_open_window_ignores_its_fallbacks_status() -> None:
    disabled = ruling("DISABLED", None, NOW, "we_miss_you", "en")
    found = rule(window=window(timedelta(hours=1)), category="utility", template=disabled)
    assert (found.fail, found.hold, found.fallback) == (None, None, None)
