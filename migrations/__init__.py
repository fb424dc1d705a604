"""The alembic revisions of the outbox schema; shipped in the wheel as `outbox.migrations`."""
