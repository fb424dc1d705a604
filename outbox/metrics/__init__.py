"""Prometheus metrics of the daemon and the webhook receiver."""
