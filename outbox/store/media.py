"""outbox_media: the media ids Meta gave for uploaded files, by sender, link and kind, or by
content and kind."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from outbox.connections import AsyncConnectionLike, fetch_all, fetch_one

# A link's id for its kind, while younger than :max_age seconds (the primary key).
BY_URL = sa.text(
    """
    SELECT media_id FROM outbox_media
    WHERE sender = :sender AND url = :url AND kind = :kind
      AND uploaded_at > now() - make_interval(secs => CAST(:max_age AS float8))
    """
)

# The newest id of these bytes as this kind from this sender, while young enough
# (ix_outbox_media_content).
BY_CONTENT = sa.text(
    """
    SELECT media_id, uploaded_at FROM outbox_media
    WHERE sender = :sender AND sha256 = :sha256 AND kind = :kind
      AND uploaded_at > now() - make_interval(secs => CAST(:max_age AS float8))
    ORDER BY uploaded_at DESC LIMIT 1
    """
)

# Remember a link's id for its kind: a new upload (:uploaded_at now) or one found by content
# (its own time).
REMEMBER = sa.text(
    """
    INSERT INTO outbox_media AS m
        (sender, url, kind, sha256, media_id, mime_type, bytes, uploaded_at)
    VALUES (:sender, :url, :kind, :sha256, :media_id, :mime_type, :bytes,
            coalesce(CAST(:uploaded_at AS timestamptz), now()))
    ON CONFLICT (sender, url, kind) DO UPDATE
    SET sha256 = excluded.sha256, media_id = excluded.media_id,
        mime_type = excluded.mime_type, bytes = excluded.bytes, uploaded_at = excluded.uploaded_at
    RETURNING 1
    """
)

# Forget an id Meta refused for a kind: no link of any sender is sent as that kind by it again.
# Another kind's ids are left alone (ix_outbox_media_media_id).
FORGET = sa.text(
    """
    WITH gone AS (
        DELETE FROM outbox_media WHERE media_id = :media_id AND kind = :kind RETURNING 1
    )
    SELECT count(*) AS forgotten FROM gone
    """
)


async def by_url(
    conn: AsyncConnectionLike, sender: str, url: str, kind: str, max_age: float
) -> str | None:
    params = {"sender": sender, "url": url, "kind": kind, "max_age": max_age}
    row = await fetch_one(conn, BY_URL, params)
    return None if row is None else str(row["media_id"])


async def by_content(
    conn: AsyncConnectionLike, sender: str, sha256: str, kind: str, max_age: float
) -> tuple[str, datetime] | None:
    params = {"sender": sender, "sha256": sha256, "kind": kind, "max_age": max_age}
    row = await fetch_one(conn, BY_CONTENT, params)
    return None if row is None else (str(row["media_id"]), row["uploaded_at"])


async def remember(
    conn: AsyncConnectionLike,
    *,
    sender: str,
    url: str,
    kind: str,
    sha256: str,
    media_id: str,
    mime_type: str,
    size: int,
    uploaded_at: datetime | None,
) -> None:
    params = {
        "sender": sender,
        "url": url,
        "kind": kind,
        "sha256": sha256,
        "media_id": media_id,
        "mime_type": mime_type,
        "bytes": size,
        "uploaded_at": uploaded_at,
    }
    await fetch_all(conn, REMEMBER, params)


async def forget(conn: AsyncConnectionLike, media_id: str, kind: str) -> int:
    row = await fetch_one(conn, FORGET, {"media_id": media_id, "kind": kind})
    return 0 if row is None else int(row["forgotten"])
