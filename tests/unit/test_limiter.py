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


def test_many_recipients_paced_at_once_are_swept_rarely_not_at_every_send() -> None:
    """More recipients than the limiter remembers before sweeping, all still paced (sent to in
    the last interval): a sweep frees nothing, so the next waits until twice as many are
    remembered, instead of walking every pair at each send."""
    clock = Clock()
    limiter = RateLimiter(45, 6.0, clock=clock)
    for number in range(40_000):
        assert limiter.reserve("phone", f"92300{number:07d}", 2.0) == 0.0
    assert limiter.sweeps == 2  # past 10,000 remembered, then past 20,000


def test_a_peaks_recipients_are_forgotten_an_interval_after_it() -> None:
    clock = Clock()
    limiter = RateLimiter(45, 6.0, clock=clock)
    for number in range(40_000):
        limiter.reserve("phone", f"92300{number:07d}", 2.0)
    clock.now += 7  # the peak's pacing is over; one recipient goes on
    limiter.reserve("phone", "923001111111", 2.0)
    assert limiter.sweeps == 3
    assert len(limiter._pairs) == 1


def test_a_sweep_forgets_the_recipients_whose_pacing_is_over_and_keeps_the_rest() -> None:
    clock = Clock()
    limiter = RateLimiter(1, 6.0, clock=clock)
    for number in range(10_000):
        limiter.reserve("phone", f"old{number}", 2.0)
    clock.now += 7  # their pacing is over
    limiter.reserve("phone", "recent", 2.0)
    limiter.reserve("phone", "newest", 2.0)  # the 10,002nd: the sweep
    assert limiter.sweeps == 1
    assert limiter.reserve("phone", "old1", 2.0) == 0.0  # forgotten: free to send at once
    assert limiter.reserve("phone", "recent", 2.0) is None  # still paced: 6 s to wait
