"""The bare reference loop on a bare table of its own, as its own process: the same claim of up
to 100 rows with SKIP LOCKED, aiohttp send and batched UPDATE as benchmarks/reference.py, on a
table holding only what such a loop needs (id, recipient, body, status, wamid) and one partial
index over the pending rows, which a SKIP LOCKED queue needs to find them without walking the
sent ones. What is left of a sender once the outbox table's own columns and indexes are gone.

    python -m benchmarks.bare DSN GRAPH_URL IN_FLIGHT
"""

from __future__ import annotations

import sys

from benchmarks.reference import drain, run

TABLE = """
CREATE TABLE IF NOT EXISTS bare_messages (
    id bigserial PRIMARY KEY,
    recipient text NOT NULL,
    body text NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    wamid text
);
CREATE INDEX IF NOT EXISTS bare_messages_pending ON bare_messages (id) WHERE status = 'pending';
"""
CLAIM = """
UPDATE bare_messages SET status = 'sending'
WHERE id IN (SELECT id FROM bare_messages WHERE status = 'pending'
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING id, recipient, body AS message
"""
DONE = """
UPDATE bare_messages AS m SET status = 'sent', wamid = u.wamid
FROM unnest($1::bigint[], $2::text[]) AS u(id, wamid) WHERE m.id = u.id
"""


if __name__ == "__main__":
    run(drain(sys.argv[1], sys.argv[2], int(sys.argv[3]), CLAIM, DONE))
