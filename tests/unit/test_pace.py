"""Rows in flight follow the rate and the API's latency (Little's law), under --concurrency."""

from __future__ import annotations

from outbox.delivery.pace import INITIAL_LATENCY, MINIMUM, InFlightTarget


def settle(target: InFlightTarget, seconds: float) -> None:
    for _ in range(200):
        target.observe(seconds)


def test_before_any_answer_it_assumes_a_slow_api() -> None:
    assert InFlightTarget(80, 500).latency == INITIAL_LATENCY


def test_a_top_tier_rate_at_meta_s_typical_latency_keeps_hundreds_in_flight() -> None:
    target = InFlightTarget(1000, 500)
    settle(target, 0.2)
    assert 300 <= target.rows() <= 500


def test_the_default_rate_needs_only_a_few_dozen_rows() -> None:
    target = InFlightTarget(80, 500)
    settle(target, 0.2)
    assert target.rows() < 40


def test_a_fast_api_still_keeps_a_minimum_in_flight() -> None:
    target = InFlightTarget(80, 500)
    settle(target, 0.001)
    assert target.rows() == MINIMUM + 1


def test_concurrency_caps_it() -> None:
    target = InFlightTarget(1000, 64)
    settle(target, 0.5)
    assert target.rows() == 64


def test_more_senders_need_more_rows() -> None:
    target = InFlightTarget(80, 500)
    settle(target, 0.2)
    assert target.rows(senders=3) > target.rows(senders=1)
