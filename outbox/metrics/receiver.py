"""The webhook receiver's Prometheus metrics, on a registry of its own per app (an app may be
created more than once in a process, or mounted beside a daemon).

A status or body is counted once its transaction committed, never before. Labels are fixed
vocabularies (HTTP answers, Meta's status names, outcomes); no secret and no payload text.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

STATUSES = ("sent", "delivered", "read", "failed")


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
            "Webhook bodies by outcome: stored, unapplied (stored, left to the background "
            "task), reapplied (by that task)",
            ["outcome"],
            registry=registry,
        )
