"""the delivery history no longer locks the rows it names: its foreign key becomes two triggers

outbox_events.message_id referenced outbox_messages with ON DELETE CASCADE. PostgreSQL checks such
a key by locking the referenced row (FOR KEY SHARE) for every event inserted: each batch of the
history locked every row it named, a second write to each sent row's page (and its WAL), a lock
the part record could meet (then shared through a MultiXact), and a wait behind anyone holding a
row FOR UPDATE. That was ~12 µs of PostgreSQL's CPU per message. The history keeps what the key
gave it: the append already skips a row that is gone (EXISTS); deleting rows deletes their history
(a statement trigger, by the ids it deleted, through the history's index); truncating the rows
truncates it (RESTART IDENTITY would otherwise hand the old history to new rows of the same ids).
Like the key's cascade, they run as the tables' owner. One thing the key did that they cannot: an
event appended while its row is being deleted (the append's EXISTS still sees the row) outlives it.
Neither form keeps a running daemon's unwritten events (up to 0.2 s of them, more while the
database is away) off new rows that RESTART IDENTITY gives the truncated rows' ids.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("fk_outbox_events_message_id", "outbox_events", type_="foreignkey")
    # As the key's cascade did, the function runs as the tables' owner (whoever deletes rows needs
    # no rights on the history), so it names the history by its schema and searches no other.
    history = op.get_bind().scalar(
        sa.text(
            "SELECT quote_ident(n.nspname) || '.outbox_events' FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = 'outbox_events'::regclass"
        )
    )
    # By an array of ids, not a join with old_rows: the plan is made on the trigger's first run
    # in a connection, and one made for a large delete would scan the whole history ever after.
    # A TRUNCATE naming both tables has emptied the history already (truncating it again here
    # would fail: the statement still uses it).
    op.execute(f"""
CREATE FUNCTION outbox_messages_forget_history() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        IF EXISTS (SELECT 1 FROM {history}) THEN
            TRUNCATE {history};
        END IF;
    ELSE
        DELETE FROM {history} WHERE message_id = ANY (ARRAY(SELECT o.id FROM old_rows o));
    END IF;
    RETURN NULL;
END
$$""")
    op.execute("""
CREATE TRIGGER outbox_messages_forget_history
AFTER DELETE ON outbox_messages REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION outbox_messages_forget_history()""")
    op.execute("""
CREATE TRIGGER outbox_messages_forget_all_history
AFTER TRUNCATE ON outbox_messages
FOR EACH STATEMENT EXECUTE FUNCTION outbox_messages_forget_history()""")


def downgrade() -> None:
    op.execute("DROP TRIGGER outbox_messages_forget_all_history ON outbox_messages")
    op.execute("DROP TRIGGER outbox_messages_forget_history ON outbox_messages")
    op.execute("DROP FUNCTION outbox_messages_forget_history()")
    # An event appended while its row was deleted (the append's EXISTS saw it still there).
    op.execute("""
DELETE FROM outbox_events e
WHERE NOT EXISTS (SELECT 1 FROM outbox_messages m WHERE m.id = e.message_id)""")
    op.create_foreign_key(
        "fk_outbox_events_message_id",
        "outbox_events",
        "outbox_messages",
        ["message_id"],
        ["id"],
        ondelete="CASCADE",
    )
