"""Reading number health from Meta's webhooks (issue 16, point 6): quality, tier, the
portfolio's limit and account restrictions; what is malformed teaches nothing."""

from __future__ import annotations

import json
from typing import Any

from outbox.policy.health import health_changes

WABA = "102290129340398"


def body(field: str, value: object, *, entry_id: object = WABA) -> bytes:
    entry = {"id": entry_id, "time": 1765000000, "changes": [{"field": field, "value": value}]}
    return json.dumps({"object": "whatsapp_business_account", "entry": [entry]}).encode()


def quality(**value: Any) -> bytes:
    return body("phone_number_quality_update", {"display_phone_number": "15550783881", **value})


def account(value: dict[str, Any]) -> dict[str, Any]:
    (found,) = health_changes([body("account_update", value)]).accounts
    return found


def test_flagged_is_red_and_unflagged_green() -> None:
    found = health_changes([quality(event="FLAGGED"), quality(event="UNFLAGGED")])
    assert [n["quality"] for n in found.numbers] == ["RED", "GREEN"]


def test_an_explicit_rating_wins_over_the_event() -> None:
    (number,) = health_changes([quality(event="UPGRADE", quality_rating="MEDIUM")]).numbers
    assert number["quality"] == "YELLOW"


def test_a_downgrade_keeps_the_rating_unknown_and_records_the_tier() -> None:
    (number,) = health_changes([quality(event="DOWNGRADE", current_limit="TIER_1K")]).numbers
    assert (number["quality"], number["tier"], number["event"]) == (None, "TIER_1K", "DOWNGRADE")


def test_the_portfolio_limit_is_preferred_to_the_numbers_tier() -> None:
    found = health_changes(
        [quality(current_limit="TIER_1K", max_daily_conversations_per_business="TIER_2K")]
    )
    assert [(limit["limit"], limit["tier"]) for limit in found.limits] == [(2000, "TIER_2K")]


def test_tier_not_set_teaches_no_limit() -> None:
    assert health_changes([quality(event="ONBOARDING", current_limit="TIER_NOT_SET")]).limits == []


def test_a_business_capability_update_reads_as_the_portfolio_limit() -> None:
    value = {"max_daily_conversations_per_business": 100000}
    (limit,) = health_changes([body("business_capability_update", value)]).limits
    assert (limit["waba"], limit["limit"]) == (WABA, 100000)


def test_unlimited_is_a_limit_of_no_number() -> None:
    found = health_changes([quality(current_limit="TIER_UNLIMITED")])
    assert [limit["limit"] for limit in found.limits] == [None]


def test_a_messaging_restriction_restricts_until_its_expiration() -> None:
    info = [
        {
            "restriction_type": "RESTRICTED_ADD_PHONE_NUMBER_ACTION",
            "expiration": "2030-01-01T00:00:00+0000",
        },
        {
            "restriction_type": "RESTRICTED_BIZ_INITIATED_MESSAGING",
            "expiration": "2026-04-19T13:59:20+0000",
        },
    ]
    found = account({"event": "ACCOUNT_RESTRICTION", "restriction_info": info})
    assert (found["decides"], found["restricted"]) == (True, True)
    assert found["restriction"] == "RESTRICTED_BIZ_INITIATED_MESSAGING"
    assert found["until"].isoformat() == "2026-04-19T13:59:20+00:00"


def test_a_restriction_on_adding_numbers_only_lifts_a_messaging_one() -> None:
    info = [{"restriction_type": "RESTRICTED_ADD_PHONE_NUMBER_ACTION"}]
    found = account({"event": "ACCOUNT_RESTRICTION", "restriction_info": info})
    assert (found["decides"], found["restricted"]) == (True, False)


def test_a_disabled_account_is_restricted_and_a_reinstated_one_is_not() -> None:
    disabled = account({"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": "DISABLE"}})
    reinstated = account({"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": "REINSTATE"}})
    assert (disabled["restricted"], reinstated["restricted"]) == (True, False)
    assert reinstated["decides"]


def test_other_account_events_leave_the_restriction_as_it_was() -> None:
    assert not account({"event": "VERIFIED_ACCOUNT"})["decides"]


def test_malformed_bodies_and_values_teach_nothing() -> None:
    found = health_changes(
        [
            b"not json",
            b"[]",
            body("phone_number_quality_update", "FLAGGED"),
            body("phone_number_quality_update", {"event": "FLAGGED"}, entry_id=None),
            body("account_update", {"restriction_info": "x"}),
        ]
    )
    assert (found.numbers, found.limits, found.accounts) == ([], [], [])
