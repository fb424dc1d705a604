"""The sample alert rules in deploy/ (issue 16, point 6): valid YAML in Prometheus' rule-file
shape, and every metric an expression names is one the daemon or the receiver exports."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from outbox.metrics.daemon import DaemonMetrics
from outbox.metrics.health import NumberHealth
from outbox.metrics.receiver import ReceiverMetrics

RULES = Path(__file__).parents[2] / "deploy" / "prometheus-alerts.yml"
PROMETHEUS_OWN = {"up"}  # series Prometheus makes itself, per scrape target
# outbox_ names in an expression (label names are not metrics: they follow `{` , `(` or `by`).
METRIC = re.compile(r"\b(outbox_[a-z0-9_]+)\b")


def exported(registry: CollectorRegistry) -> set[str]:
    """Every series name a registry can export (a counter's with `_total`)."""
    names = set()
    for family in registry.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        names.update(sample.name for sample in family.samples)
    return names


def daemon_and_receiver_metrics() -> set[str]:
    daemon = DaemonMetrics()
    daemon.registry.register(NumberHealth(None))
    return exported(daemon.registry) | exported(ReceiverMetrics().registry)


def alerts() -> list[dict[str, Any]]:
    rules = yaml.safe_load(RULES.read_text())
    return [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


def test_the_rules_file_has_prometheus_shape() -> None:
    rules = yaml.safe_load(RULES.read_text())
    assert set(rules) == {"groups"}
    for group in rules["groups"]:
        assert isinstance(group["name"], str)
        assert group["rules"]


@pytest.mark.parametrize("alert", alerts(), ids=lambda rule: rule["alert"])
def test_each_alert_names_only_metrics_outbox_exports(alert: dict[str, Any]) -> None:
    names = set(METRIC.findall(alert["expr"]))
    assert names or any(own in alert["expr"] for own in PROMETHEUS_OWN)
    assert names <= daemon_and_receiver_metrics()


@pytest.mark.parametrize("alert", alerts(), ids=lambda rule: rule["alert"])
def test_each_alert_has_a_severity_and_a_summary(alert: dict[str, Any]) -> None:
    assert alert["labels"]["severity"] in ("page", "ticket")
    assert alert["annotations"]["summary"]


def test_the_number_health_alerts_are_there() -> None:
    names = {rule["alert"] for rule in alerts()}
    assert {
        "OutboxNumberQualityDropped",
        "OutboxTierBudgetExhausted",
        "OutboxAccountRestricted",
    } <= names
