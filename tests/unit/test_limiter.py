"""The sender holds of the in-memory limiter: Meta's spam rate limit (131048)."""

from __future__ import annotations

from outbox.delivery.limiter import RateLimiter

DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rows_hitting_the_spam_limit_during_its_hold_count_one_strike() -> None:
    clock = Clock()
    limiter = RateLimiter(45, 6.0, clock=clock)
    for _ in range(5):  # the rows in flight when Meta began refusing
        limiter.hold_for_spam("phone", 3600.0, "held by Meta: (#131048) m", DAY)
    assert limiter.spam_strikes("phone", DAY) == 1
    assert limiter.hold_remaining("phone") == 3600.0
    assert limiter.hold_reason("phone") == "held by Meta: (#131048) m"


def test_a_spam_hold_after_the_last_one_ended_counts_another_strike() -> None:
    clock = Clock()
    limiter = RateLimiter(45, 6.0, clock=clock)
    limiter.hold_for_spam("phone", 3600.0, "spam", DAY)
    clock.now += 3601
    assert limiter.hold_reason("phone") is None
    limiter.hold_for_spam("phone", 7200.0, "spam", DAY)
    assert limiter.spam_strikes("phone", DAY) == 2


def test_spam_strikes_are_forgotten_after_a_quiet_day() -> None:
    clock = Clock()
    limiter = RateLimiter(45, 6.0, clock=clock)
    limiter.hold_for_spam("phone", 3600.0, "spam", DAY)
    clock.now += DAY + 1
    assert limiter.spam_strikes("phone", DAY) == 0
