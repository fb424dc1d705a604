"""Meta's webhooks: status updates for what outbox sent, and customers' inbound messages."""

from outbox.webhooks.app import create_app

__all__ = ["create_app"]
