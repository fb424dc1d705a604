"""Meta's rules as pure functions: number forms, the window, the send-time decision, and what a
webhook body says about consent and windows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from outbox.callbacks import same_customer
from outbox.policy.decide import decide
from outbox.policy.numbers import canonical, forms
from outbox.policy.receiver import keyword_set, learned
from outbox.policy.window import Window, window_of

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
FALLBACK = {"name": "we_miss_you", "language": {"code": "en"}}


@pytest.mark.parametrize(
    ("recipient", "wa_id"),
    [
        ("5511987654321", "551187654321"),  # Brazil's ninth digit
        ("5215512345678", "525512345678"),  # Mexico's mobile 1
        ("5491123456789", "541123456789"),  # Argentina's mobile 9
        ("923001234567", "923001234567"),
    ],
)
def test_every_form_of_a_number_is_the_same_customer(recipient: str, wa_id: str) -> None:
    assert wa_id in forms(recipient)
    assert recipient in forms(wa_id)
    assert canonical(recipient) == canonical(wa_id)
    assert all(same_customer(recipient, form) for form in forms(recipient))


def window(last: timedelta | None, *, referral: bool = False, known: bool = True) -> Window:
    at = None if last is None else NOW - last
    facts = {
        "now": NOW,
        "known": known,
        "last_inbound_at": at,
        "referral_at": at if referral else None,
        "closed_at": None,
    }
    return window_of("1", "923001234567", facts)


def test_the_window_is_open_one_second_before_24_hours() -> None:
    assert window(timedelta(hours=24) - timedelta(seconds=1)).open


def test_the_window_is_closed_at_24_hours() -> None:
    assert not window(timedelta(hours=24)).open


def test_a_referral_does_not_open_free_form_past_24_hours() -> None:
    assert not window(timedelta(hours=25), referral=True).open


def test_a_131047_after_the_last_message_closes_the_window() -> None:
    facts = {
        "now": NOW,
        "known": True,
        "last_inbound_at": NOW - timedelta(hours=1),
        "referral_at": None,
        "closed_at": NOW - timedelta(minutes=1),
    }
    assert not window_of("1", "923001234567", facts).open


def test_an_unknown_window_counts_as_open() -> None:
    assert window(None, known=False).open


def rule(**overrides: Any) -> Any:
    arguments: dict[str, Any] = {
        "template_row": False,
        "accepted": 0,
        "window": window(timedelta(hours=30)),
        "suppressed": False,
        "category": None,
        "fallback": FALLBACK,
        "sent_fallback": False,
    }
    return decide(**{**arguments, **overrides})


def test_a_closed_window_switches_to_the_fallback() -> None:
    ruling = rule()
    assert (ruling.fallback, ruling.switch, ruling.fail) == (FALLBACK, True, None)


def test_a_closed_window_after_a_part_was_sent_fails_window_closed() -> None:
    assert rule(accepted=1).fail.startswith("window_closed")


def test_a_closed_window_fails_a_row_whose_first_part_may_have_gone_instead_of_switching() -> None:
    ruling = rule(may_have_sent=True)
    assert (ruling.fallback, ruling.switch) == (None, False)
    assert ruling.fail.startswith("window_closed")
    assert "may have gone already" in ruling.fail


@pytest.mark.parametrize(
    "case",
    [
        {"fallback": None},  # no fallback template
        {"accepted": 1},  # a part was recorded before it
        {"template_row": True, "suppressed": True, "category": "marketing", "fallback": None},
        {"sent_fallback": True, "suppressed": True, "category": "marketing"},
    ],
    ids=["no-fallback", "after-a-part", "opted-out-template", "opted-out-fallback"],
)
def test_every_failure_of_a_row_that_may_have_sent_looks_for_the_part_first(
    case: dict[str, Any],
) -> None:
    ruling = rule(may_have_sent=True, **case)
    assert ruling.fail is not None
    assert ruling.unless_sent
    assert "may have" in ruling.fail, "its reason must not read as not sent"


def test_a_row_that_switched_and_may_have_sent_looks_for_its_fallback_part() -> None:
    ruling = rule(may_have_sent=True, sent_fallback=True, suppressed=True, category="marketing")
    assert ruling.fallback == FALLBACK


def test_a_failure_of_a_row_that_sent_nothing_needs_no_look() -> None:
    assert not rule(fallback=None).unless_sent


def test_an_open_window_sends_a_row_in_doubt_as_it_is() -> None:
    ruling = rule(window=window(timedelta(hours=1)), may_have_sent=True)
    assert (ruling.fail, ruling.fallback) == (None, None)


def test_a_row_that_switched_stays_switched_when_the_window_reopens() -> None:
    ruling = rule(window=window(timedelta(hours=1)), sent_fallback=True, category="utility")
    assert (ruling.fallback, ruling.switch) == (FALLBACK, False)


@pytest.mark.parametrize(("category", "withheld"), [("marketing", True), (None, True)])
def test_marketing_and_uncategorised_templates_are_withheld(
    category: str | None, withheld: bool
) -> None:
    ruling = rule(template_row=True, suppressed=True, category=category, fallback=None)
    assert (ruling.fail is not None) is withheld


@pytest.mark.parametrize("category", ["utility", "authentication"])
def test_utility_and_authentication_templates_go_to_suppressed_customers(category: str) -> None:
    assert rule(template_row=True, suppressed=True, category=category, fallback=None).fail is None


def body(field: str, value: dict[str, Any]) -> bytes:
    value = {"metadata": {"phone_number_id": "106540352242922"}, **value}
    data = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": field, "value": value}]}],
    }
    return json.dumps(data).encode()


def test_a_user_preferences_stop_is_read_with_its_time() -> None:
    found = learned(
        [
            body(
                "user_preferences",
                {
                    "user_preferences": [
                        {
                            "wa_id": "5511987654321",
                            "detail": "User requested to stop marketing messages",
                            "category": "marketing_messages",
                            "value": "stop",
                            "timestamp": 1731705721,
                        }
                    ]
                },
            )
        ],
        keyword_set(["STOP"]),
    )
    assert found.consent == [
        (
            "106540352242922",
            "551187654321",
            True,
            "user_preferences",
            "User requested to stop marketing messages",
            datetime.fromtimestamp(1731705721, UTC),
        )
    ]


def test_preferences_of_another_category_are_ignored() -> None:
    item = {"wa_id": "923001234567", "category": "other", "value": "stop", "timestamp": 1}
    assert (
        learned([body("user_preferences", {"user_preferences": [item]})], frozenset()).consent == []
    )


def test_keywords_match_the_whole_message_in_any_case() -> None:
    messages = [
        {"from": "923001234567", "id": "w1", "type": "text", "text": {"body": "stop."}},
        {"from": "923001234567", "id": "w2", "type": "text", "text": {"body": "stop it now"}},
    ]
    found = learned([body("messages", {"messages": messages})], keyword_set(["STOP"]))
    assert [change[3] for change in found.consent] == ["keyword"]
