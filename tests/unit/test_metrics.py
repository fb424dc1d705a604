"""The metric definitions: labels, series present from the start, registries kept apart."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from outbox.errors import GraphError, InDoubt, TransportError
from outbox.metrics.daemon import KINDS, PAUSE_REASONS, DaemonMetrics, code_label
from outbox.metrics.receiver import ReceiverMetrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(registry: object) -> Samples:
    text = generate_latest(registry).decode()  # type: ignore[arg-type]
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_code_label_is_the_graph_code() -> None:
    error = GraphError(http_status=400, code=131026, message="Message undeliverable")
    assert code_label(error) == "131026"


def test_code_label_is_transport_without_a_graph_answer() -> None:
    assert code_label(TransportError("HTTP 502 without a Graph error body")) == "transport"
    assert code_label(InDoubt("request timed out")) == "transport"


def test_code_label_of_a_graph_error_without_a_code_is_unknown() -> None:
    assert code_label(GraphError(http_status=400, code=None, message="odd")) == "unknown"


def test_every_kind_is_exported_at_zero_before_any_send() -> None:
    samples = scrape(DaemonMetrics().registry)
    assert {
        k: value(samples, "outbox_messages_sent_total", kind=k) for k in KINDS
    } == dict.fromkeys(KINDS, 0.0)


def test_paused_is_1_for_the_current_reasons_and_0_for_the_others() -> None:
    reasons = {"outage", "throttle"}
    samples = scrape(DaemonMetrics(paused_reasons=lambda: reasons).registry)
    paused = {r: value(samples, "outbox_paused", reason=r) for r in PAUSE_REASONS}
    assert paused == {"account": 0, "outage": 1, "throttle": 1, "template": 0, "operator": 0}


def test_in_flight_is_read_from_the_daemon_when_scraped() -> None:
    rows = [1, 2]
    metrics = DaemonMetrics(in_flight=lambda: len(rows))
    rows.append(3)
    assert value(scrape(metrics.registry), "outbox_in_flight") == 3


def test_a_refused_request_counts_its_code_class_and_duration() -> None:
    metrics = DaemonMetrics()
    metrics.requested(0.2, GraphError(http_status=401, code=190, message="expired"), "account")
    metrics.requested(0.1, None)
    samples = scrape(metrics.registry)
    assert value(samples, "outbox_send_errors_total", code="190", **{"class": "account"}) == 1
    assert value(samples, "outbox_send_duration_seconds_count") == 2
    assert value(samples, "outbox_send_duration_seconds_sum") == pytest.approx(0.3)


def test_two_daemons_in_one_process_count_apart() -> None:
    first, second = DaemonMetrics(), DaemonMetrics()
    first.accepted("image")
    assert value(scrape(first.registry), "outbox_messages_sent_total", kind="image") == 1
    assert value(scrape(second.registry), "outbox_messages_sent_total", kind="image") == 0


def test_receiver_exports_every_status_and_signature_failure_at_zero() -> None:
    samples = scrape(ReceiverMetrics().registry)
    for status in ("sent", "delivered", "read", "failed"):
        assert value(samples, "outbox_webhook_statuses_applied_total", status=status) == 0
    for reason in ("missing", "invalid"):
        assert value(samples, "outbox_webhook_signature_failures_total", reason=reason) == 0
