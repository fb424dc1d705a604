"""Paces sends to one recipient inside Meta's pair rate (a burst, then one message per interval),
and holds the whole sender when Meta throttles it. GCRA, so no timers and O(1) per send. The
sender's messages per second are paced across daemons by outbox.delivery.rate."""

from __future__ import annotations

import time
from collections.abc import Callable

_PRUNE_AT = 10_000  # pairs remembered before those whose pacing is over are forgotten


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
        self._prune_at = _PRUNE_AT
        self._sweep_at = 0.0
        self.sweeps = 0  # how often the pairs were swept for those whose pacing is over
        self._strikes: dict[str, int] = {}
        self._hold_until: dict[str, float] = {}  # sender -> held until
        self._hold_reason: dict[str, str] = {}  # sender -> why, for a hold that is not a throttle
        self._spam_strikes: dict[str, tuple[int, float]] = {}  # sender -> (strikes, last strike)

    def reserve(self, sender: str, recipient: str, max_wait: float) -> float | None:
        """Seconds to wait before `sender` sends to `recipient` (the slot is taken), or None,
        taking nothing, when that wait would exceed `max_wait`."""
        now = self._clock()
        recipient = f"{sender}>{recipient}"  # the pair Meta paces: this number, that person
        pair = self._pairs.get(recipient) or _Cell(self._pair_interval, self._pair_burst)
        wait = max(pair.wait(now), self._hold_until.get(sender, 0.0) - now)
        if wait > max_wait:
            return None
        pair.take(now + wait)
        self._pairs[recipient] = pair
        remembered = len(self._pairs)
        if remembered > self._prune_at or (remembered > _PRUNE_AT and now >= self._sweep_at):
            self._pairs = {r: c for r, c in self._pairs.items() if c.tat > now}
            # Swept again once as many more are remembered, or an interval later (a peak's
            # pairs are then over): a sweep that frees little (every pair sent to in the last
            # interval is still paced) is never made per send.
            self._prune_at = max(_PRUNE_AT, 2 * len(self._pairs))
            self._sweep_at = now + self._pair_interval
            self.sweeps += 1
        return wait

    def seed(self, sender: str, recipient: str, due_in: float) -> None:
        """Another daemon sent this conversation last: its pacing clock stands `due_in` seconds
        ahead of now (GCRA's theoretical arrival time), whatever this daemon remembers."""
        recipient = f"{sender}>{recipient}"
        pair = self._pairs.setdefault(recipient, _Cell(self._pair_interval, self._pair_burst))
        pair.tat = max(pair.tat, self._clock() + due_in)

    def hold(self, sender: str, seconds: float) -> None:
        """The sender hit its throughput limit: it sends nothing for `seconds`."""
        until = max(self._hold_until.get(sender, 0.0), self._clock() + seconds)
        if until > self._hold_until.get(sender, 0.0) and self.hold_remaining(sender) <= 0:
            self._hold_reason.pop(sender, None)  # a new hold: a throttle's
        self._hold_until[sender] = until

    def spam_strikes(self, sender: str, forget_after: float) -> int:
        """The sender's spam-limit holds (131048) so far; forgotten after `forget_after` seconds
        without one."""
        strikes, last = self._spam_strikes.get(sender, (0, 0.0))
        return strikes if self._clock() - last < forget_after else 0

    def hold_for_spam(self, sender: str, seconds: float, reason: str, forget_after: float) -> None:
        """Meta's spam rate limit: hold the sender `seconds`, counting one strike. Rows in flight
        when it began hit it too: while the hold lasts they neither strike nor lengthen it."""
        if self._hold_reason.get(sender) and self.hold_remaining(sender) > 0:
            return
        strikes = self.spam_strikes(sender, forget_after)
        self._spam_strikes[sender] = (strikes + 1, self._clock())
        self._hold_reason[sender] = reason
        self._hold_until[sender] = max(self._hold_until.get(sender, 0.0), self._clock() + seconds)

    def hold_reason(self, sender: str) -> str | None:
        """Why the sender is held, when that is more than a throttle (None otherwise)."""
        return self._hold_reason.get(sender) if self.hold_remaining(sender) > 0 else None

    def hold_remaining(self, sender: str) -> float:
        """Seconds left of this sender's hold (0 when none)."""
        return max(0.0, self._hold_until.get(sender, 0.0) - self._clock())

    def held(self) -> dict[str, float]:
        """The senders held now, with the seconds left of each hold."""
        now = self._clock()
        return {sender: until - now for sender, until in self._hold_until.items() if until > now}

    def penalize(self, sender: str, recipient: str, seconds: float) -> None:
        """The pair rate limit was hit: this recipient waits `seconds` more, others go on."""
        recipient = f"{sender}>{recipient}"
        pair = self._pairs.setdefault(recipient, _Cell(self._pair_interval, self._pair_burst))
        pair.tat = max(pair.tat, self._clock() + seconds + pair.tolerance)
        self._strikes[recipient] = self._strikes.get(recipient, 0) + 1

    def strikes(self, sender: str, recipient: str) -> int:
        return self._strikes.get(f"{sender}>{recipient}", 0)

    def succeeded(self, sender: str, recipient: str) -> None:
        self._strikes.pop(f"{sender}>{recipient}", None)
