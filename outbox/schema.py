"""The table `outbox_messages`: its public columns, the daemon's bookkeeping, CHECKs and indexes.

This metadata is the single source of truth for the alembic revisions (`alembic check` compares
them). Apps INSERT and SELECT the table with plain SQL, so every public name here is a contract.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

from outbox.whatsapp import MAX_TEXT_LENGTH

PENDING = "pending"
SENDING = "sending"
SENT = "sent"
DELIVERED = "delivered"
READ = "read"
FAILED = "failed"
CANCELLED = "cancelled"

STATUSES = (PENDING, SENDING, SENT, DELIVERED, READ, FAILED, CANCELLED)
ACTIVE_STATUSES = (PENDING, SENDING)
FINISHED_STATUSES = (SENT, DELIVERED, READ, FAILED, CANCELLED)

MAX_MEDIA_PARTS = 10
MAX_REFERENCE_LENGTH = 255

NOTIFY_CHANNEL = "outbox"

# Meta's template categories; only marketing ones are withheld from opted-out customers.
TEMPLATE_CATEGORIES = ("marketing", "utility", "authentication")
# Where an opt-out (or its withdrawal) came from.
OPTOUT_SOURCES = ("user_preferences", "131050", "keyword", "api")

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
    }
)


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{value}'" for value in values)


messages = sa.Table(
    "outbox_messages",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("recipient", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("media", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    sa.Column("status", sa.Text, nullable=False, server_default=sa.text(f"'{PENDING}'")),
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("message_id", sa.Text, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("error_code", sa.Integer, nullable=True),
    # One entry per accepted part, in send order: {"wamid", "status", "sent_at"}. Parts are sent
    # one after another, so the accepted parts are always a prefix and a retry resumes after it.
    sa.Column("parts", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    sa.Column("idempotency_key", sa.Text, nullable=True),
    # When the row may next be claimed: now() on insert, send_at when scheduled, the retry time
    # after a transient failure.
    sa.Column(
        "available_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
    # A fresh token per claim; every later write of the row names it, so a worker whose lease
    # expired and was re-claimed can never overwrite the newer result.
    sa.Column("lease_token", UUID(as_uuid=True), nullable=True),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
    # Not sent by then: the row fails with `expired` instead of going out late.
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    # Sends whose outcome is unknown (a timeout, a 200 without a usable id): Meta may have
    # accepted them, so they are resent only a few times, counted apart from `attempts`.
    sa.Column("in_doubt", sa.Integer, nullable=False, server_default=sa.text("0")),
    # Claimed from an expired lease: the daemon that lost it may have sent the next part. Kept
    # across releases until that part is recorded (or its status webhook settles it).
    sa.Column("taken_over", sa.Boolean, nullable=False, server_default=sa.text("false")),
    # The recipient as enqueue() checked it with libphonenumber: the daemon checks again only a
    # row whose recipient differs (inserted or changed with plain SQL). Migration 0022.
    sa.Column("checked_recipient", sa.Text, nullable=True),
    # A template message, as Meta takes it: {"name", "language": {"code"}, "components": [...]}.
    sa.Column("template", JSONB, nullable=True),
    # The phone number id to send from; null: META_PHONE_NUMBER_ID.
    sa.Column("sender", sa.Text, nullable=True),
    # The daemon's hint that an older unfinished row to the same recipient holds this one back:
    # set by the claim that finds it so, cleared by a trigger when the rows before it move on.
    sa.Column("queued_behind", sa.Boolean, nullable=False, server_default=sa.text("false")),
    # A status webhook about this row came before its part was recorded and waits: set under the
    # row's lock by the receiver (so the daemon recording the part sees it), cleared by the
    # receiver's sweep once nothing waits any more. Statuses are never lost to a daemon dying
    # between recording a part and applying what waited for it.
    sa.Column("statuses_waiting", sa.Boolean, nullable=False, server_default=sa.text("false")),
    # Meta's rules (outbox/policy/). `fallback`: the template a free-form row goes out as when
    # its customer-service window is closed at send time; `sent_fallback` records that it did.
    # `category`: the Meta category of the row's template (or of its fallback), which decides
    # whether an opted-out customer gets it; null: unknown, treated as marketing.
    sa.Column("fallback", JSONB, nullable=True),
    sa.Column("sent_fallback", sa.Boolean, nullable=False, server_default=sa.text("false")),
    sa.Column("category", sa.Text, nullable=True),
    # The app's own name for the row (`booking-1234`), to find it by in the dashboard.
    sa.Column("reference", sa.Text, nullable=True),
    # The row's own quiet hours (`HH:MM-HH:MM`, or `none`: any hour) and its recipient's time
    # zone (IANA), overriding the daemon's --quiet-hours and the zone of the number; null: those.
    sa.Column("quiet_hours", sa.Text, nullable=True),
    sa.Column("timezone", sa.Text, nullable=True),
    # No country code starts with 0 (phonenumbers judges the rest in enqueue and the daemon).
    sa.CheckConstraint(r"recipient ~ '^[1-9][0-9]{6,14}$'", name="recipient_digits"),
    sa.CheckConstraint(r"sender ~ '^[0-9]{1,32}$'", name="sender_digits"),
    sa.CheckConstraint(f"char_length(message) <= {MAX_TEXT_LENGTH}", name="message_length"),
    sa.CheckConstraint("jsonb_typeof(media) = 'array'", name="media_is_array"),
    sa.CheckConstraint(
        f"jsonb_typeof(media) <> 'array' OR jsonb_array_length(media) <= {MAX_MEDIA_PARTS}",
        name="media_count",
    ),
    sa.CheckConstraint(
        "coalesce(message, '') <> '' OR media <> '[]'::jsonb OR template IS NOT NULL",
        name="message_or_media",
    ),
    sa.CheckConstraint(
        "template IS NULL OR (coalesce(message, '') = '' AND media = '[]'::jsonb)",
        name="template_alone",
    ),
    sa.CheckConstraint(
        "template IS NULL OR coalesce(jsonb_typeof(template) = 'object'"
        " AND jsonb_typeof(template -> 'name') = 'string'"
        " AND template ->> 'name' ~ '^[a-z0-9_]+$'"
        " AND char_length(template ->> 'name') <= 512"
        " AND jsonb_typeof(template -> 'language' -> 'code') = 'string'"
        " AND coalesce(jsonb_typeof(template -> 'components'), 'array') = 'array', false)",
        name="template_shape",
    ),
    sa.CheckConstraint(
        'NOT jsonb_path_exists(media, \'$[*] ? (@.type() != "object"'
        ' || !(@.type == "image" || @.type == "video" || @.type == "document"'
        ' || @.type == "audio")'
        ' || !(@.url like_regex "^https?://[^/?#\\\\s]+"))\')',
        name="media_parts",
    ),
    sa.CheckConstraint(
        "fallback IS NULL OR (template IS NULL AND coalesce(jsonb_typeof(fallback) = 'object'"
        " AND jsonb_typeof(fallback -> 'name') = 'string'"
        " AND fallback ->> 'name' ~ '^[a-z0-9_]+$'"
        " AND char_length(fallback ->> 'name') <= 512"
        " AND jsonb_typeof(fallback -> 'language' -> 'code') = 'string'"
        " AND coalesce(jsonb_typeof(fallback -> 'components'), 'array') = 'array', false))",
        name="fallback_shape",
    ),
    sa.CheckConstraint("NOT sent_fallback OR fallback IS NOT NULL", name="sent_fallback_known"),
    sa.CheckConstraint(f"category IN ({_quoted(TEMPLATE_CATEGORIES)})", name="category_known"),
    sa.CheckConstraint(f"status IN ({_quoted(STATUSES)})", name="status_known"),
    sa.CheckConstraint("attempts >= 0", name="attempts_not_negative"),
    sa.CheckConstraint("in_doubt >= 0", name="in_doubt_not_negative"),
    sa.CheckConstraint("jsonb_typeof(parts) = 'array'", name="parts_is_array"),
    sa.CheckConstraint(
        f"char_length(reference) BETWEEN 1 AND {MAX_REFERENCE_LENGTH}", name="reference_length"
    ),
    sa.CheckConstraint(
        "quiet_hours = 'none' OR quiet_hours ~ "
        "'^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$'",
        name="quiet_hours_shape",
    ),
    sa.CheckConstraint("timezone ~ '^[A-Za-z][A-Za-z0-9_+/-]{0,63}$'", name="timezone_shape"),
    sa.UniqueConstraint("idempotency_key"),
    # The claim's path: pending rows not queued behind an older row to their recipient, oldest
    # due first, however many finished or queued rows there are.
    sa.Index(
        "ix_outbox_messages_ready",
        "available_at",
        "id",
        postgresql_where=sa.text(f"status = '{PENDING}' AND NOT queued_behind"),
    ),
    # Rows queued behind, per recipient: the safety sweep finds each lane's first one.
    sa.Index(
        "ix_outbox_messages_behind",
        "recipient",
        "id",
        postgresql_where=sa.text(f"status = '{PENDING}' AND queued_behind"),
    ),
    # Due and scheduled pending rows: the next wake-up and the backlog gauges.
    sa.Index(
        "ix_outbox_messages_due",
        "available_at",
        "id",
        postgresql_where=sa.text(f"status = '{PENDING}'"),
    ),
    # Expired leases of crashed workers.
    sa.Index(
        "ix_outbox_messages_leased",
        "locked_until",
        postgresql_where=sa.text(f"status = '{SENDING}'"),
    ),
    # Per-recipient FIFO: is an older row to this recipient still unfinished?
    sa.Index(
        "ix_outbox_messages_active_recipient",
        "recipient",
        "id",
        postgresql_where=sa.text(f"status IN ({_quoted(ACTIVE_STATUSES)})"),
    ),
    # The expiry sweep: pending rows with a deadline.
    sa.Index(
        "ix_outbox_messages_expiring",
        "expires_at",
        postgresql_where=sa.text(f"status = '{PENDING}' AND expires_at IS NOT NULL"),
    ),
    sa.Index("ix_outbox_messages_recipient", "recipient", "id"),
    # Pending rows that wait for a reason (a retry, quiet hours, a budget, a paused template):
    # the dashboard's Operate page counts them by reason without reading the whole backlog.
    sa.Index(
        "ix_outbox_messages_waiting",
        "id",
        postgresql_where=sa.text(f"status = '{PENDING}' AND last_error IS NOT NULL"),
    ),
    # The few rows with statuses waiting for their parts, for the receiver's sweep.
    sa.Index(
        "ix_outbox_messages_statuses_waiting",
        "id",
        postgresql_where=sa.text("statuses_waiting"),
    ),
    # A row by its wamid (the text's, or the last part's), for apps and `outbox status`.
    sa.Index("ix_outbox_messages_message_id", "message_id"),
    sa.Index("ix_outbox_messages_status", "status", "id"),
    sa.Index(
        "ix_outbox_messages_reference",
        "reference",
        "id",
        postgresql_where=sa.text("reference IS NOT NULL"),
    ),
)

# One row per running daemon: its state (ok, paused, outage, held) and a heartbeat, so that
# `outbox stats` can say why nothing is being sent. A clean shutdown deletes its row.
daemons = sa.Table(
    "outbox_daemons",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("state", sa.Text, nullable=False, server_default=sa.text("'ok'")),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("state_since", sa.DateTime(timezone=True), nullable=True),
    sa.Column("held_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("in_flight", sa.Integer, nullable=False, server_default=sa.text("0")),
    # Each sender's own state when it differs from ok: {"<phone id>": {"state", "reason"}}.
    sa.Column("senders", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column(
        "started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column(
        "heartbeat_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

# Rate limits every daemon shares (GCRA: one theoretical arrival time per key). `rate:<phone id>`
# paces a sender's requests across all daemons; `factor` < 1 slows it until `slow_until` after
# Meta said 130429 (too many messages for this number). Taken through outbox_take_tokens().
limits = sa.Table(
    "outbox_limits",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("tat", sa.DateTime(timezone=True), nullable=False),
    sa.Column("factor", sa.Float, nullable=False, server_default=sa.text("1")),
    sa.Column("slow_until", sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("factor > 0 AND factor <= 1", name="factor_fraction"),
)

# The delivery history: every attempt's outcome and every status webhook, append-only, written in
# batches off the send path; deleted with its row.
events = sa.Table(
    "outbox_events",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    # No foreign key: checking one locked every row a batch named (migration 0024). Triggers on
    # outbox_messages delete a row's history with it.
    sa.Column("message_id", sa.BigInteger, nullable=False),
    sa.Column("part", sa.Integer, nullable=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("http_status", sa.Integer, nullable=True),
    sa.Column("error_code", sa.Integer, nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Index("ix_outbox_events_message", "message_id", "id"),
)

# Webhook bodies exactly as received (Meta cannot send one again), stored before they are applied.
webhooks = sa.Table(
    "outbox_webhooks",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column(
        "received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_outbox_webhooks_unapplied", "id", postgresql_where=sa.text("applied_at IS NULL")),
)

# Every status webhook entry. One whose part is not recorded yet (the webhook beat the daemon's
# write, or the send is in doubt) waits here, unapplied, until the part appears.
statuses = sa.Table(
    "outbox_statuses",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("wamid", sa.Text, nullable=False),
    sa.Column("message_id", sa.BigInteger, nullable=True),
    sa.Column("part", sa.Integer, nullable=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("error_code", sa.Integer, nullable=True),
    sa.Column("error_title", sa.Text, nullable=True),
    sa.Column(
        "received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
    # The customer Meta reports it for (recipient_id): a send in doubt is settled only by a
    # status about its own recipient.
    sa.Column("recipient", sa.Text, nullable=True),
    # A status is stored once per (wamid, status): Meta's replays, even concurrent ones, are
    # stored and applied once.
    sa.UniqueConstraint("wamid", "status"),
    sa.Index("ix_outbox_statuses_message", "message_id", "part"),
    sa.Index("ix_outbox_statuses_unapplied", "id", postgresql_where=sa.text("applied_at IS NULL")),
)

# Customers' messages to our numbers: each opens (or renews) the 24-hour service window.
inbound = sa.Table(
    "outbox_inbound",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("wamid", sa.Text, nullable=False),
    sa.Column("phone_number_id", sa.Text, nullable=False),
    # The customer's phone number (`from`); null for a user known only by a username, whose
    # business-scoped user id (`from_user_id`) is then `user_id`.
    sa.Column("customer", sa.Text, nullable=True),
    sa.Column("user_id", sa.Text, nullable=True),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    # Meta could not handle the message (e.g. 131051 for an unsupported type).
    sa.Column("error_code", sa.Integer, nullable=True),
    sa.Column("error_title", sa.Text, nullable=True),
    sa.Column(
        "received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    # It came through a click-to-WhatsApp entry point (an ad or a post: `referral`), which opens
    # a 72-hour window instead of 24.
    sa.Column("referral", sa.Boolean, nullable=False, server_default=sa.text("false")),
    sa.UniqueConstraint("wamid"),
    sa.CheckConstraint("customer IS NOT NULL OR user_id IS NOT NULL", name="customer_known"),
    sa.Index("ix_outbox_inbound_customer", "customer", "at"),
    # The send-time window check: a customer's last message to a number, one index probe.
    sa.Index("ix_outbox_inbound_window", "phone_number_id", "customer", "at"),
    sa.Index(
        "ix_outbox_inbound_referral",
        "phone_number_id",
        "customer",
        "at",
        postgresql_where=sa.text("referral"),
    ),
)

# The suppression list: per sender (phone number id) and customer, whether the customer stopped
# marketing messages, and since when. A withdrawal (`resume`) keeps the row with `suppressed`
# false, so that an older `stop` webhook delivered late cannot undo it (`changed_at` decides).
# `customer` is in canonical form (outbox.policy.numbers.canonical).
optouts = sa.Table(
    "outbox_optouts",
    metadata,
    sa.Column("phone_number_id", sa.Text, nullable=False),
    sa.Column("customer", sa.Text, nullable=False),
    sa.Column("suppressed", sa.Boolean, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.PrimaryKeyConstraint("phone_number_id", "customer"),
    sa.CheckConstraint(f"source IN ({_quoted(OPTOUT_SOURCES)})", name="source_known"),
    sa.Index(
        "ix_outbox_optouts_suppressed",
        "phone_number_id",
        "changed_at",
        postgresql_where=sa.text("suppressed"),
    ),
)

# Meta said a customer's window is closed (131047, synchronous or by a failed status) at
# `closed_at`: it stays closed until the customer writes again. `customer` in canonical form.
window_closures = sa.Table(
    "outbox_window_closures",
    metadata,
    sa.Column("phone_number_id", sa.Text, nullable=False),
    sa.Column("customer", sa.Text, nullable=False),
    sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("phone_number_id", "customer"),
)

# Which row and part each accepted wamid is: a status webhook without our callback data finds its
# part here, whichever part it is. Written with the part; deleted with its row.
part_wamids = sa.Table(
    "outbox_part_wamids",
    metadata,
    sa.Column("wamid", sa.Text, primary_key=True),
    sa.Column(
        "message_id",
        sa.BigInteger,
        sa.ForeignKey("outbox_messages.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("part", sa.Integer, nullable=False),
    sa.Index("ix_outbox_part_wamids_message", "message_id"),
)

# Errors Meta reports about the number or the app rather than one message
# (`entry.changes.value.errors`, e.g. 130429): shown by `outbox stats` and counted in metrics.
webhook_errors = sa.Table(
    "outbox_webhook_errors",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("phone_number_id", sa.Text, nullable=True),
    sa.Column("code", sa.Integer, nullable=True),
    sa.Column("title", sa.Text, nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column(
        "received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Index("ix_outbox_webhook_errors_received", "received_at"),
)

# This database's deployment of outbox: one row whose id goes into every send's callback data
# (`outbox:<installation>:<row>:<part>`), so that a status naming another deployment's row
# (staging and production on one number) never settles one of ours.
installation = sa.Table(
    "outbox_installation",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.CheckConstraint("id ~ '^[a-z0-9]{8,32}$'", name="id_shape"),
)

# Sending stopped by an operator (`outbox pause [--sender]`), until `outbox resume`: one row per
# paused sender, `*` for every sender. Every daemon reads it within a second (NOTIFY `outbox`
# with payload `pause`, and a timer), claims none of a paused sender's rows, and keeps it so
# across restarts.
ALL_SENDERS = "*"
pauses = sa.Table(
    "outbox_pauses",
    metadata,
    sa.Column("sender", sa.Text, primary_key=True),
    sa.Column(
        "paused_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("reason", sa.Text, nullable=True),
    sa.CheckConstraint(
        f"sender = '{ALL_SENDERS}' OR sender ~ '^[0-9]{{1,32}}$'", name="sender_shape"
    ),
)

# The cost ledger: per part (wamid), the `pricing` of the first status webhook that carried one
# (Meta repeats it on sent and delivered). `changed` marks a part a later status priced
# differently; the first stays. `message_id` and `template` are set only for our own rows (by
# our callback data, as statuses are); other deployments' parts are kept apart, never in our
# totals. No foreign key: the ledger outlives pruned rows.
costs = sa.Table(
    "outbox_costs",
    metadata,
    sa.Column("wamid", sa.Text, primary_key=True),
    sa.Column("message_id", sa.BigInteger, nullable=True),
    sa.Column("part", sa.Integer, nullable=True),
    sa.Column("template", sa.Text, nullable=True),
    sa.Column("recipient", sa.Text, nullable=True),
    sa.Column("country", sa.Text, nullable=True),  # ISO 3166 region of the calling code
    sa.Column("category", sa.Text, nullable=False),
    sa.Column("pricing_type", sa.Text, nullable=True),
    sa.Column("pricing_model", sa.Text, nullable=True),
    sa.Column("billable", sa.Boolean, nullable=False),
    # The status's own timestamp: the rate valid then applies.
    sa.Column("billed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("changed", sa.Boolean, nullable=False, server_default=sa.text("false")),
    sa.Column(
        "received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Index("ix_outbox_costs_billed_at", "billed_at"),
)


# Who did what from the dashboard (a retry, later bulk actions), written in the transaction of
# the action itself. Kept when `outbox prune` deletes the message it names.
audit = sa.Table(
    "outbox_audit",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("message_id", sa.BigInteger, nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Index(
        "ix_outbox_audit_message",
        "message_id",
        "id",
        postgresql_where=sa.text("message_id IS NOT NULL"),
    ),
)

# Meta's template catalogue of a WABA (`outbox templates sync` and the template webhooks): what
# enqueue checks a template message against once it knows the template's name. `category`,
# `status` and `quality` are Meta's words as sent (MARKETING, APPROVED, GREEN...);
# `parameter_count` counts the {{n}} or named parameters in the BODY text.
templates_catalogue = sa.Table(
    "outbox_templates",
    metadata,
    sa.Column("waba_id", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("language", sa.Text, nullable=False),
    sa.Column("template_id", sa.Text, nullable=True),
    sa.Column("category", sa.Text, nullable=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("quality", sa.Text, nullable=True),
    sa.Column("parameter_count", sa.Integer, nullable=True),
    # The last template_category_update webhook that changed `category`: from what, and when.
    sa.Column("previous_category", sa.Text, nullable=True),
    sa.Column("category_changed_at", sa.DateTime(timezone=True), nullable=True),
    # Until when Meta paused it (status PAUSED): its rows wait that long at most.
    sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.PrimaryKeyConstraint("waba_id", "name", "language"),
    sa.Index("ix_outbox_templates_name", "name", "language"),
    sa.Index("ix_outbox_templates_template_id", "template_id"),
)

# The portfolio's daily limit (outbox.policy.tier): each customer messaged outside a customer-
# service window (a template the window does not cover), with its latest such send. Those of the
# last 24 h are what the messaging limit counts; one portfolio per database (every sender).
tier_recipients = sa.Table(
    "outbox_tier_recipients",
    metadata,
    sa.Column("customer", sa.Text, primary_key=True),  # canonical digits (policy.numbers)
    sa.Column("counted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_outbox_tier_recipients_counted_at", "counted_at"),
)

# The running count of outbox_tier_recipients' rows (one row, id 1), kept under the budget's lock
# by every reservation, so that taking a place reads one number instead of counting the last
# 24 h: the customers of the last 24 h are `used` less the rows older than that, which each
# reservation deletes a batch of.
tier_count = sa.Table(
    "outbox_tier_count",
    metadata,
    sa.Column("id", sa.SmallInteger, primary_key=True),
    sa.Column("used", sa.BigInteger, nullable=False),
    sa.CheckConstraint("id = 1", name="one_row"),
)

# Each business number's health as Meta's phone_number_quality_update webhooks tell it, by the
# display number they name it by: quality GREEN, YELLOW or RED, the last event (FLAGGED,
# UNFLAGGED, UPGRADE, DOWNGRADE, THROUGHPUT_UPGRADE...) and the tier as Meta wrote it.
number_health = sa.Table(
    "outbox_number_health",
    metadata,
    sa.Column("phone", sa.Text, primary_key=True),
    sa.Column("waba_id", sa.Text, nullable=True),
    sa.Column("quality", sa.Text, nullable=True),
    sa.Column("event", sa.Text, nullable=True),
    sa.Column("limit_tier", sa.Text, nullable=True),
    sa.Column("event_at", sa.DateTime(timezone=True), nullable=False),  # Meta's entry.time
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

# Each WABA's account events (account_update: restrictions, bans) and the messaging limit of its
# portfolio (business_capability_update, phone_number_quality_update). `limit_at` set with a
# null `messaging_limit`: unlimited; `limit_at` null: no limit known.
account_health = sa.Table(
    "outbox_account_health",
    metadata,
    sa.Column("waba_id", sa.Text, primary_key=True),
    sa.Column("event", sa.Text, nullable=True),
    sa.Column("event_at", sa.DateTime(timezone=True), nullable=True),  # of the account event
    # Sending restricted (a messaging restriction until `restricted_until`, a disabled account).
    sa.Column("restricted", sa.Boolean, nullable=False, server_default=sa.text("false")),
    sa.Column("restriction", sa.Text, nullable=True),
    sa.Column("restricted_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("messaging_limit", sa.BigInteger, nullable=True),
    sa.Column("limit_tier", sa.Text, nullable=True),
    sa.Column("limit_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Index("ix_outbox_account_health_limit_at", "limit_at"),
)

# The dashboard's charts: request outcomes per minute, sender, template and Graph error code,
# folded from outbox_events (outbox/dashboard/rollup.py) so that no page view scans the messages.
# `outcome` is `sent` (accepted, or found accepted by its status webhook) or `failed` (refused,
# expired, or failed by Meta's status webhook). '' and 0 stand for no sender, template or code.
rollup = sa.Table(
    "outbox_rollup",
    metadata,
    sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sender", sa.Text, nullable=False),
    sa.Column("template", sa.Text, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("error_code", sa.Integer, nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.PrimaryKeyConstraint("minute", "sender", "template", "outcome", "error_code"),
)

# How far the fold has read outbox_events (its id), one row per source.
rollup_marks = sa.Table(
    "outbox_rollup_marks",
    metadata,
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("upto", sa.BigInteger, nullable=False),
    sa.Column(
        "folded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

# Media uploaded to Meta (`--media-mode upload`): per sender, link and kind (image, video, audio,
# document: one link may be named as two, and be fit for one only), the content's hash and the
# media id Meta gave for it. A link seen again is sent by its id without being fetched; a new
# link to the same bytes (a fresh presigned URL) finds the id by hash. Ids are used for 29 of
# Meta's 30 days, then uploaded again; an id Meta refuses is deleted here.
media = sa.Table(
    "outbox_media",
    metadata,
    sa.Column("sender", sa.Text, nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("media_id", sa.Text, nullable=False),
    sa.Column("mime_type", sa.Text, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("sender", "url", "kind"),
    sa.Index("ix_outbox_media_content", "sender", "sha256", "kind", "uploaded_at"),
    sa.Index("ix_outbox_media_media_id", "media_id"),
)
