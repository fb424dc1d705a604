"""An application's own alembic project, as a user's would be: its env.py passes outbox's
include_object so that its autogenerate leaves the outbox tables alone."""

import os

import psycopg2
import sqlalchemy as sa
from alembic import context

import outbox.migrate

metadata = sa.MetaData()
sa.Table("bookings", metadata, sa.Column("id", sa.Integer, primary_key=True))

engine = sa.create_engine(
    "postgresql+psycopg2://", creator=lambda: psycopg2.connect(os.environ["APP_DATABASE_URL"])
)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_object=outbox.migrate.include_object,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
