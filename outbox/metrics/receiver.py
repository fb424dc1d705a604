"""The webhook receiver's Prometheus metrics, on a registry of its own per app (an app may be
created more than once in a process, or mounted beside a daemon).

A status or body is counted once its transaction committed, never before. Labels are fixed
vocabularies (HTTP answers, Meta's status names, outcomes); no secret and no payload text.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

STATUSES = ("sent", "delivered", "read", "failed", "played", "deleted", "warning")


class ReceiverMetrics:
    """Counters of the receiver: requests, signature failures, statuses applied, bodies."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "outbox_webhook_requests",
            "Requests to /webhook, by the HTTP status answered",
            ["answer"],
            registry=registry,
        )
        self.signature_failures = Counter(
            "outbox_webhook_signature_failures",
            "POSTs refused for their X-Hub-Signature-256: missing (401) or invalid (403)",
            ["reason"],
            registry=registry,
        )
        for reason in ("missing", "invalid"):
            self.signature_failures.labels(reason)
        self.statuses_applied = Counter(
            "outbox_webhook_statuses_applied",
            "Status updates applied to their part and row, by status (a failed status for a "
            "part already delivered or read is ignored, not counted)",
            ["status"],
            registry=registry,
        )
        for status in STATUSES:
            self.statuses_applied.labels(status)
        self.statuses = Counter(
            "outbox_webhook_statuses",
            "Status updates received, by outcome: applied, waiting (for their part to be "
            "recorded), other_copy, no_row, duplicate",
            ["outcome"],
            registry=registry,
        )
        self.bodies = Counter(
            "outbox_webhook_bodies",
            "Webhook bodies by outcome: stored (committed from a request), spooled (written to "
            "the local spool while the database could not take them), replayed (from the spool "
            "into the database), refused (neither: answered 503), applied (in a batch), "
            "reapplied (one by one after a batch failed)",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("stored", "spooled", "replayed", "refused", "applied", "reapplied"):
            self.bodies.labels(outcome)
        self.reported_errors = Counter(
            "outbox_webhook_reported_errors",
            "Errors Meta reported about a number or the app rather than one message "
            "(value.errors of a webhook), by Graph code (outbox_webhook_errors keeps them)",
            ["code"],
            registry=registry,
        )
        self.charged_messages = Counter(
            "outbox_webhook_charged_messages",
            "Our parts Meta's status webhooks showed charged (pricing billable, type regular), "
            "each counted once, by the recipient's country (ISO 3166) and Meta's category",
            ["country", "category"],
            registry=registry,
        )
        self.charged_amount = Counter(
            "outbox_webhook_charged_amount",
            "What those parts cost by the rate card (OUTBOX_RATE_CARD) valid when each was "
            "billed, by country, category and currency; parts without a rate add nothing here",
            ["country", "category", "currency"],
            registry=registry,
        )
        self.template_category_changes = Counter(
            "outbox_webhook_template_category_changes",
            "Templates of the catalogue whose category Meta changed (template_category_update), "
            "by the old and the new category",
            ["old", "new"],
            registry=registry,
        )
        self.spool_bytes = Gauge(
            "outbox_webhook_spool_bytes",
            "Bytes of webhook bodies in the local spool, waiting for the database",
            registry=registry,
        )
        self.connections = Gauge(
            "outbox_webhook_connections",
            "Open client connections of `outbox webhook`",
            registry=registry,
        )
        self.connections_closed = Counter(
            "outbox_webhook_connections_closed",
            "Client connections closed by the receiver, by reason: deadline (a request did not "
            "arrive in time), evicted (the oldest idle one, for a new connection at the bound), "
            "refused (the bound was reached with every connection busy)",
            ["reason"],
            registry=registry,
        )
        for reason in ("deadline", "evicted", "refused"):
            self.connections_closed.labels(reason)
