"""Number health in the daemon: read from the database every few seconds (what the webhook
receiver stored, and the daily limit's count), shown in /metrics and in /readyz's reason.

A scrape never touches the database; a failed refresh keeps the last values, logged once.
Gauges: outbox_number_quality{number} (2 GREEN, 1 YELLOW, 0 RED), outbox_account_restricted
{waba} (1 while an account_update restricts sending), outbox_messaging_limit (the portfolio's
limit in effect, +Inf when unlimited, absent when none is known) and outbox_messaging_limit_used
(unique customers counted in the last 24 h).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from outbox.connections import AsyncConnectionLike
from outbox.metrics.refresh import REFRESH_SECONDS, Refresher
from outbox.policy import health as policy_health
from outbox.policy.tier import DailyLimit


class NumberHealth(Refresher):
    """The last number health read (None before the first), as a Prometheus collector."""

    what = "the number health"

    def __init__(self, configured: DailyLimit | None, *, interval: float = REFRESH_SECONDS) -> None:
        super().__init__(interval=interval)
        self._configured = configured
        self.health: policy_health.Health | None = None

    @property
    def restricted(self) -> str | None:
        """Why an account_update restricts sending now, or None."""
        return None if self.health is None else self.health.restricted

    @property
    def warning(self) -> str | None:
        """A warning that does not stop sending (a RED quality rating), or None."""
        return None if self.health is None else self.health.warning

    async def _read(self, conn: AsyncConnectionLike) -> None:
        self.health = await policy_health.read(conn, self._configured)

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        yield from self._families()

    def _families(self) -> Iterator[Metric]:
        quality = GaugeMetricFamily(
            "outbox_number_quality",
            "The business number's quality rating from Meta's phone_number_quality_update "
            "webhooks: 2 GREEN, 1 YELLOW, 0 RED (FLAGGED); by display number",
            labels=["number"],
        )
        restricted = GaugeMetricFamily(
            "outbox_account_restricted",
            "1 while an account_update webhook restricts the WABA's sending (a messaging "
            "restriction, a disabled account), else 0",
            labels=["waba"],
        )
        limit = GaugeMetricFamily(
            "outbox_messaging_limit",
            "The portfolio's messaging limit in effect: unique customers per moving 24 h outside "
            "a customer-service window (+Inf: unlimited; absent: none known); source: "
            "configured or webhook",
            labels=["source"],
        )
        used = GaugeMetricFamily(
            "outbox_messaging_limit_used",
            "Unique customers the daily limit counted in the last 24 h (every daemon's)",
        )
        health = self.health
        if health is not None:
            for number in health.numbers:
                score = policy_health.QUALITY_SCORES.get(number["quality"] or "")
                if score is not None:
                    quality.add_metric([number["phone"]], float(score))
            for account in health.accounts:
                restricted.add_metric([account["waba_id"]], 1.0 if account["restricted"] else 0.0)
            if health.limit is not None:
                customers = health.limit.customers
                value = float("inf") if customers is None else float(customers)
                limit.add_metric([health.limit_source], value)
            used.add_metric([], float(health.used))
        yield from (quality, restricted, limit, used)
