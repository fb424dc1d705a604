"""Paces sends to one recipient inside Meta's pair rate (a burst, then one message per interval),
and holds the whole sender when Meta throttles it. GCRA, so no timers and O(1) per send. The
sender's messages per second are paced across daemons by outbox.rate."""

from __future__ import annotations

import time
from collections.abc import Callable

_PRUNE_AT = 10_000


class _Cell:
    """Generic cell rate algorithm: `burst` at once, then one per `interval` seconds."""

    def __init__(self, interval: float, burst: int) -> None:
        self.interval = interval
        self.tolerance = (burst - 1) * interval
        self.tat = 0.0  # theoretical arrival time of the next conforming send

    def wait(self, now: float) -> float:
        return max(0.0, max(self.tat, now) - self.tolerance - now)

    def take(self, now: float) -> None:
        self.tat = max(self.tat, now) + self.interval


class RateLimiter:
    def __init__(
        self,
        pair_burst: int,
        pair_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._pair_interval = pair_interval
        self._pair_burst = pair_burst
        self._pairs: dict[str, _Cell] = {}
        self._strikes: dict[str, int] = {}
        self._hold_until = 0.0

    def reserve(self, recipient: str, max_wait: float) -> float | None:
        """Seconds to wait before sending to `recipient` (the slot is taken), or None, taking
        nothing, when that wait would exceed `max_wait`."""
        now = self._clock()
        pair = self._pairs.get(recipient) or _Cell(self._pair_interval, self._pair_burst)
        wait = max(pair.wait(now), self._hold_until - now)
        if wait > max_wait:
            return None
        pair.take(now + wait)
        self._pairs[recipient] = pair
        if len(self._pairs) > _PRUNE_AT:
            self._pairs = {r: c for r, c in self._pairs.items() if c.tat > now}
        return wait

    def hold_all(self, seconds: float) -> None:
        """The sender hit its throughput limit: nobody sends for `seconds`."""
        self._hold_until = max(self._hold_until, self._clock() + seconds)

    def hold_remaining(self) -> float:
        """Seconds left of a sender-wide hold (0 when none)."""
        return max(0.0, self._hold_until - self._clock())

    def penalize(self, recipient: str, seconds: float) -> None:
        """The pair rate limit was hit: this recipient waits `seconds` more, others go on."""
        pair = self._pairs.setdefault(recipient, _Cell(self._pair_interval, self._pair_burst))
        pair.tat = max(pair.tat, self._clock() + seconds + pair.tolerance)
        self._strikes[recipient] = self._strikes.get(recipient, 0) + 1

    def strikes(self, recipient: str) -> int:
        return self._strikes.get(recipient, 0)

    def succeeded(self, recipient: str) -> None:
        self._strikes.pop(recipient, None)
