"""The daemon's Prometheus metrics, on a registry of its own, so that several daemons in one
process never share (or collide on) a series.

Counters count what this process saw since it started. Gauges of the daemon's own state are read
when scraped; the backlog gauges come from the database, refreshed by backlog.py, never per scrape.
No label ever carries a secret or free text: kinds, Graph codes, classes and reasons are small
fixed vocabularies.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from outbox.errors import GraphError, SendError, TransportError

KINDS = ("text", "image", "video", "document", "audio", "template")
# Why sending stops, as `outbox_paused{reason}` says it:
#   account   an account-level error (an expired token, 190; a blocked account): nothing is sent
#             until a probe succeeds
#   outage    the Graph API fails for everyone (network, 5xx): nothing but probes until it answers
#   throttle  Meta's sender-wide throughput limit: nothing is sent until the hold ends
#   template  Meta paused a template: only that template's rows wait, other messages go on
#   operator  `outbox pause`: a sender's rows, or every row, wait for `outbox resume`
PAUSE_REASONS = ("account", "outage", "throttle", "template", "operator")
# Graph API requests take milliseconds to seconds; the request timeout is 15 s by default.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0)


def code_label(error: SendError) -> str:
    """The `code` label of a refused request: Graph's error code, or `transport` when there was
    no Graph answer (network, timeout, a body that is not Graph's envelope)."""
    if isinstance(error, GraphError) and error.code is not None:
        return str(error.code)
    if isinstance(error, TransportError):
        return "transport"
    return "unknown"  # Graph's envelope without a usable code


class _Paused:
    """`outbox_paused{reason}`: 1 for every reason sending is stopped now, 0 for the others."""

    def __init__(self, reasons: Callable[[], Collection[str]]) -> None:
        self._reasons = reasons

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        current = self._reasons()
        family = self._family()
        for reason in PAUSE_REASONS:
            family.add_metric([reason], 1.0 if reason in current else 0.0)
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "outbox_paused",
            "1 while sending is stopped for this reason "
            "(account, outage, throttle, template, operator)",
            labels=["reason"],
        )


class DaemonMetrics:
    """The daemon's metrics. `in_flight` and `paused_reasons` are read from the daemon at each
    scrape; the rest is counted by the code that sees it happen."""

    def __init__(
        self,
        *,
        in_flight: Callable[[], float] = lambda: 0.0,
        paused_reasons: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self._sent = Counter(
            "outbox_messages_sent",
            "Parts the Graph API accepted from this daemon (an id in the answer, or a send in "
            "doubt a status webhook settled), by kind",
            ["kind"],
            registry=registry,
        )
        # Each part counts: its kind's child is looked up once, not per part (labels() locks).
        self._sent_by_kind = {kind: self._sent.labels(kind) for kind in KINDS}
        self._errors = Counter(
            "outbox_send_errors",
            "Graph API requests refused, by Graph code (or transport) and class: transient, "
            "throttle, permanent, account, in_doubt (maybe accepted), template_paused",
            ["code", "class"],
            registry=registry,
        )
        self._duration = Histogram(
            "outbox_send_duration_seconds",
            "Time of each Graph API request, accepted or not",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.media_uploads = Counter(
            "outbox_media_uploads",
            "Media files this daemon uploaded to Meta (--media-mode upload), by sender",
            ["sender"],
            registry=registry,
        )
        self.failed = Counter(
            "outbox_messages_failed",
            "Rows this daemon marked failed (permanent errors, attempts used up, expiry, bad data)",
            registry=registry,
        )
        self.pending = Gauge(
            "outbox_pending_messages",
            "Rows pending (due or scheduled), from the database every few seconds",
            registry=registry,
        )
        self.oldest_pending = Gauge(
            "outbox_oldest_pending_seconds",
            "How long the oldest due pending row has waited, from the database every few seconds",
            registry=registry,
        )
        Gauge(
            "outbox_in_flight", "Rows being sent by this daemon now", registry=registry
        ).set_function(in_flight)
        registry.register(_Paused(paused_reasons))

    def accepted(self, kind: str) -> None:
        """One part the Graph API accepted from this daemon's own request: its answer held an
        id, or the request was in doubt and a status webhook settled it. A part settled when a
        row is taken over is not counted: its request was another worker's."""
        child = self._sent_by_kind.get(kind)
        (child if child is not None else self._sent.labels(kind)).inc()

    def requested(self, seconds: float, error: SendError | None, error_class: str = "") -> None:
        """One Graph API request took `seconds`; `error` when it was refused, with its class."""
        self._duration.observe(seconds)
        if error is not None:
            self._errors.labels(code_label(error), error_class).inc()
