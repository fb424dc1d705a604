"""Rate limits shared by every daemon: the sender's token bucket (outbox_take_tokens, migration
0005) and the slow-down after Meta's 130429."""

from __future__ import annotations

import sqlalchemy as sa

# Up to :want sends of :key's bucket now, and the seconds until the next would be granted.
TAKE_TOKENS = sa.text(
    "SELECT granted, wait FROM outbox_take_tokens(:key, :want, :interval, :burst)"
)

# Meta said the number sends too fast (130429): halve the bucket's rate (down to an eighth) for
# :seconds; every daemon's next take feels it.
SLOW_DOWN = sa.text(
    """
    INSERT INTO outbox_limits AS l (key, tat, factor, slow_until)
    VALUES (:key, clock_timestamp(), 0.5, clock_timestamp() + make_interval(secs => :seconds))
    ON CONFLICT (key) DO UPDATE
    SET factor = CASE WHEN l.slow_until > clock_timestamp() THEN greatest(0.125, l.factor / 2)
                      ELSE 0.5 END,
        slow_until = clock_timestamp() + make_interval(secs => :seconds)
    RETURNING factor
    """
)
