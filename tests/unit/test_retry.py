"""Error classes from whatsapp-api.md section 4, and the outcome each leads to."""

from __future__ import annotations

import pytest

from outbox.errors import GraphError, InDoubt, TransportError
from outbox.retry import (
    MAX_IN_DOUBT,
    MAX_IN_DOUBT_IN_OUTAGE,
    MAX_RETRY_DELAY,
    MAX_SENDER_HOLD,
    MAX_SPAM_HOLD,
    SPAM_HOLD,
    TEMPLATE_PAUSE_HOLD,
    Doubt,
    Fail,
    HoldSender,
    HoldTemplate,
    Pause,
    Retry,
    Throttle,
    WaitOutage,
    classify,
    decide,
    pauses_every_sender,
    retry_delay,
)


def graph(code: int | None, status: int = 400, subcode: int | None = None) -> GraphError:
    return GraphError(http_status=status, code=code, subcode=subcode, message="m")


@pytest.mark.parametrize("code", [1, 2, 131000, 131016, 133004])
def test_transient_codes_are_retried(code: int) -> None:
    outcome = decide(graph(code, 500), attempts=1, max_attempts=10, base_delay=1)
    assert isinstance(outcome, Retry)


@pytest.mark.parametrize("status", [400, 429])
@pytest.mark.parametrize("code", [130429, 131056, 4, 80007, 131057])
def test_throttling_codes_wait_whatever_the_http_status(code: int, status: int) -> None:
    outcome = decide(graph(code, status), attempts=10, max_attempts=10, base_delay=1)
    assert isinstance(outcome, Throttle)


def test_pair_rate_limit_slows_only_that_recipient_by_four_to_the_x() -> None:
    outcome = decide(graph(131056), attempts=1, max_attempts=10, base_delay=1, pair_strikes=2)
    assert outcome == Throttle(16.0, outcome.reason, recipient_only=True)  # type: ignore[union-attr]


def test_throttle_honours_retry_after() -> None:
    error = GraphError(http_status=429, code=130429, message="m", retry_after=9.0)
    outcome = decide(error, attempts=1, max_attempts=10, base_delay=1)
    assert outcome == Throttle(9.0, str(error), recipient_only=False)


@pytest.mark.parametrize(
    "code", [100, 131008, 131009, 131026, 131047, 131051, 131053, 132000, 132001, 132016]
)
def test_permanent_codes_fail_at_once(code: int) -> None:
    outcome = decide(graph(code), attempts=1, max_attempts=10, base_delay=1)
    assert isinstance(outcome, Fail)
    assert f"(#{code})" in outcome.reason


@pytest.mark.parametrize("code", [0, 3, 10, 190, 200, 299, 368, 131031, 131042])
def test_account_level_codes_pause(code: int) -> None:
    assert isinstance(decide(graph(code), attempts=1, max_attempts=10, base_delay=1), Pause)


def test_unknown_phone_number_id_pauses_instead_of_failing() -> None:
    assert isinstance(
        decide(graph(100, subcode=33), attempts=1, max_attempts=10, base_delay=1), Pause
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [(500, "transient"), (503, "transient"), (429, "throttle"), (400, "permanent")],
)
def test_unknown_codes_fall_back_on_the_http_status(status: int, expected: str) -> None:
    assert classify(graph(987654, status)) == expected


def test_network_errors_are_transient() -> None:
    assert classify(TransportError("reset")) == "transient"


def test_transient_error_fails_the_row_after_max_attempts() -> None:
    outcome = decide(TransportError("reset"), attempts=10, max_attempts=10, base_delay=1)
    assert isinstance(outcome, Fail)
    assert "gave up after 10 attempts" in outcome.reason


def test_retry_delay_doubles_with_jitter_and_is_capped() -> None:
    for attempts, full in ((1, 1.0), (2, 2.0), (5, 16.0)):
        delay = retry_delay(attempts, 1.0)
        assert full / 2 <= delay <= full
    assert retry_delay(40, 1.0) <= 3600


def test_a_send_in_doubt_is_resent_later_without_using_an_attempt() -> None:
    error = InDoubt("request timed out (the part may have been accepted)")
    outcome = decide(error, attempts=10, max_attempts=10, base_delay=1, in_doubt=0)
    assert isinstance(outcome, Doubt)
    assert outcome.delay >= 0.5


def test_a_row_fails_after_three_sends_in_doubt() -> None:
    error = InDoubt("HTTP 200 without a message id")
    outcome = decide(error, attempts=1, max_attempts=10, base_delay=1, in_doubt=MAX_IN_DOUBT - 1)
    assert isinstance(outcome, Fail)
    assert outcome.reason.startswith(f"in doubt after {MAX_IN_DOUBT} sends")


DROPPED = "no answer: ServerDisconnectedError (the part may have been accepted)"


def test_a_dropped_connection_is_resent_later_using_an_attempt_not_a_doubt() -> None:
    """Closed before any answer: maybe accepted, so never resent at once, but a front end that
    closes connections unread is common enough that three of them must not fail the row."""
    error = InDoubt(DROPPED, dropped=True)
    outcome = decide(error, attempts=3, max_attempts=10, base_delay=1, in_doubt=MAX_IN_DOUBT - 1)
    assert isinstance(outcome, Retry)
    assert outcome.delay >= 2


def test_a_dropped_connection_fails_the_row_after_max_attempts() -> None:
    error = InDoubt(DROPPED, dropped=True)
    outcome = decide(error, attempts=10, max_attempts=10, base_delay=1)
    assert isinstance(outcome, Fail)
    assert "gave up after 10 attempts" in outcome.reason


def test_in_an_outage_a_dropped_connection_counts_as_a_send_in_doubt() -> None:
    error = InDoubt(DROPPED, dropped=True)
    outcome = decide(error, attempts=10, max_attempts=10, base_delay=1, outage=True)
    assert isinstance(outcome, WaitOutage)
    assert outcome.doubt == 1


def test_in_an_outage_a_transient_failure_waits_with_its_attempt_given_back() -> None:
    outcome = decide(graph(131000, 500), attempts=10, max_attempts=10, base_delay=1, outage=True)
    assert isinstance(outcome, WaitOutage)
    assert outcome.doubt == 0


def test_in_an_outage_a_timeout_waits_past_the_usual_in_doubt_limit() -> None:
    error = InDoubt("request timed out")
    outcome = decide(
        error, attempts=1, max_attempts=10, base_delay=1, in_doubt=MAX_IN_DOUBT, outage=True
    )
    assert isinstance(outcome, WaitOutage)
    assert outcome.doubt == 1


def test_in_an_outage_a_timeout_still_fails_the_row_at_the_outage_limit() -> None:
    error = InDoubt("request timed out")
    outcome = decide(
        error,
        attempts=1,
        max_attempts=10,
        base_delay=1,
        in_doubt=MAX_IN_DOUBT_IN_OUTAGE - 1,
        outage=True,
    )
    assert isinstance(outcome, Fail)


def test_a_sender_wide_hold_is_capped_at_a_minute() -> None:
    error = GraphError(http_status=429, code=130429, message="m", retry_after=86400.0)
    outcome = decide(error, attempts=1, max_attempts=10, base_delay=1)
    assert outcome == Throttle(MAX_SENDER_HOLD, str(error), recipient_only=False)


def test_a_row_retry_is_capped_at_an_hour_whatever_retry_after_says() -> None:
    error = GraphError(http_status=500, code=131000, message="m", retry_after=1e9)
    outcome = decide(error, attempts=1, max_attempts=10, base_delay=1)
    assert outcome == Retry(MAX_RETRY_DELAY, str(error))


def test_a_pair_rate_hold_is_capped_at_an_hour() -> None:
    error = GraphError(http_status=400, code=131056, message="m", retry_after=1e9)
    outcome = decide(error, attempts=1, max_attempts=10, base_delay=1)
    assert outcome == Throttle(MAX_RETRY_DELAY, str(error), recipient_only=True)


def test_a_paused_template_holds_its_rows_without_using_attempts() -> None:
    outcome = decide(graph(132015), attempts=10, max_attempts=10, base_delay=1)
    assert outcome == HoldTemplate(TEMPLATE_PAUSE_HOLD, "(#132015) m")


# --- issue 15.12: codes checked against whatsapp-api.md section 4 and Meta's pages -----------


def test_a_messaging_limit_for_template_classification_pauses_the_sender_not_the_token() -> None:
    """131064: the account may send nothing, templates or not, until Meta lifts the limit."""
    error = graph(131064)
    assert isinstance(decide(error, attempts=1, max_attempts=10, base_delay=1), Pause)
    assert not pauses_every_sender(error)


def test_a_country_the_business_may_not_message_fails_the_row() -> None:
    """131063: that recipient's country is closed to this business; other rows go on."""
    assert isinstance(decide(graph(131063), attempts=1, max_attempts=10, base_delay=1), Fail)


def test_a_phone_number_not_registered_pauses_its_sender() -> None:
    """133010: no row of that number can be sent until it is registered again."""
    error = graph(133010)
    assert isinstance(decide(error, attempts=1, max_attempts=10, base_delay=1), Pause)
    assert not pauses_every_sender(error)


def test_the_spam_rate_limit_holds_the_sender_for_an_hour_at_first() -> None:
    outcome = decide(graph(131048), attempts=10, max_attempts=10, base_delay=1)
    assert outcome == HoldSender(SPAM_HOLD, "(#131048) m")


def test_the_spam_rate_limit_hold_doubles_with_each_strike_up_to_a_day() -> None:
    delays = [
        decide(graph(131048), attempts=1, max_attempts=10, base_delay=1, sender_strikes=strikes)
        for strikes in (1, 2, 20)
    ]
    assert [d.delay for d in delays] == [2 * SPAM_HOLD, 4 * SPAM_HOLD, MAX_SPAM_HOLD]  # type: ignore[union-attr]


def test_a_throttled_flow_holds_its_row_an_hour_not_the_sender() -> None:
    """132069: ten sends per hour per flow; the sender's other messages go on."""
    outcome = decide(graph(132069), attempts=1, max_attempts=10, base_delay=1)
    assert outcome == Throttle(3600.0, "(#132069) m", recipient_only=True)
