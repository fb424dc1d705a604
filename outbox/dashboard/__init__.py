"""`outbox dashboard`: find a message and see what happened to it, behind a login."""

from outbox.dashboard.app import create_app

__all__ = ["create_app"]
