"""Meta's webhooks: status updates for what outbox sent, and customers' inbound messages."""
