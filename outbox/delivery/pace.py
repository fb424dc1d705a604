"""How many rows to keep in flight: enough to send at the rate, no more (Little's law).

A fixed in-flight count caps a daemon at count / latency: 64 rows at Meta's typical 200 ms is
320 messages/s, a third of the top tier, while at 80 messages/s a few dozen rows would do. The
target is rate x request latency (a moving average of what the API answers) with headroom,
bounded by --concurrency.
"""

from __future__ import annotations

import math

INITIAL_LATENCY = 0.5  # seconds, before any answer: generous, so the first claims are not starved
HEADROOM = 1.5  # latency varies; rows also spend time being recorded
MINIMUM = 8  # rows in flight whatever the figures (probes, slow recipients, a few big rows)
WEIGHT = 0.1  # of each new request in the moving average


class InFlightTarget:
    """The number of rows a daemon should hold in flight, from the rate and the latency."""

    def __init__(self, rate: float, ceiling: int) -> None:
        self._rate = rate
        self._ceiling = ceiling
        self.latency = INITIAL_LATENCY

    def observe(self, seconds: float) -> None:
        """One Graph API request took `seconds` (answered, refused or timed out)."""
        self.latency += WEIGHT * (seconds - self.latency)

    def rows(self, senders: int = 1) -> int:
        """Rows to keep in flight for `senders` phone numbers sending at the rate each."""
        wanted = math.ceil(self._rate * max(senders, 1) * self.latency * HEADROOM) + MINIMUM
        return max(1, min(self._ceiling, wanted))
