"""The statements of the template catalogue (outbox_templates, outbox/policy/catalogue.py):
`outbox templates sync` and the template webhooks write it, enqueue reads one name of it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from outbox.connections import (
    AsyncConnectionLike,
    Row,
    SyncConnectionLike,
    fetch_all,
    fetch_all_sync,
)

UPSERT_TEMPLATE = sa.text(
    """
    INSERT INTO outbox_templates AS t (waba_id, name, language, template_id, category, status,
                                       quality, parameter_count, updated_at, paused_until)
    VALUES (:waba_id, :name, :language, :template_id, :category, :status, :quality,
            :parameter_count, now(),
            CASE WHEN CAST(:status AS text) = 'PAUSED' THEN now() + interval '6 hours' END)
    ON CONFLICT (waba_id, name, language) DO UPDATE SET
        template_id = excluded.template_id, category = excluded.category,
        status = excluded.status, quality = excluded.quality,
        parameter_count = excluded.parameter_count, updated_at = now(),
        -- a pause already known keeps its end; one first seen here lasts Meta's longest
        paused_until = CASE WHEN excluded.status <> 'PAUSED' THEN NULL
                            WHEN t.status = 'PAUSED' THEN t.paused_until
                            ELSE excluded.paused_until END
    RETURNING t.name
    """
)

# Every language of one name, by ix_outbox_templates_name: what enqueue checks a template by.
SELECT_BY_NAME = sa.text(
    """
    SELECT language, status, parameter_count FROM outbox_templates WHERE name = :name
    """
)

SELECT_ALL = sa.text(
    """
    SELECT waba_id, name, language, template_id, category, status, quality, parameter_count,
           previous_category, category_changed_at, paused_until, updated_at
    FROM outbox_templates ORDER BY name, language, waba_id
    """
)

# A webhook names the template by id, and by name and language when Meta sends them; it changes
# only the field it is about. The old category comes back so that a change can be an event.
UPDATE_FROM_WEBHOOK = sa.text(
    """
    UPDATE outbox_templates t SET
        status = coalesce(CAST(:status AS text), t.status),
        quality = coalesce(CAST(:quality AS text), t.quality),
        category = coalesce(CAST(:category AS text), t.category),
        previous_category = CASE WHEN CAST(:category AS text) IS DISTINCT FROM t.category
                                  AND CAST(:category AS text) IS NOT NULL
                                 THEN t.category ELSE t.previous_category END,
        category_changed_at = CASE WHEN CAST(:category AS text) IS DISTINCT FROM t.category
                                    AND CAST(:category AS text) IS NOT NULL
                                   THEN now() ELSE t.category_changed_at END,
        template_id = coalesce(t.template_id, CAST(:template_id AS text)),
        paused_until = CASE WHEN CAST(:status AS text) IS NULL THEN t.paused_until
                            ELSE CAST(:paused_until AS timestamptz) END,
        updated_at = now()
    FROM (SELECT waba_id, name, language, category AS old_category FROM outbox_templates
          WHERE (CAST(:template_id AS text) IS NOT NULL
                 AND template_id = CAST(:template_id AS text))
             OR (waba_id = CAST(:waba_id AS text) AND name = CAST(:name AS text)
                 AND language = CAST(:language AS text))
          FOR UPDATE) AS old
    WHERE (t.waba_id, t.name, t.language) = (old.waba_id, old.name, old.language)
    RETURNING t.waba_id, t.name, t.language, old.old_category, t.category, t.status,
              t.paused_until
    """
)


async def upsert_templates(
    conn: AsyncConnectionLike, waba_id: str, entries: Sequence[Mapping[str, Any]]
) -> int:
    """Write the templates of one sync; returns how many."""
    for entry in entries:
        await fetch_all(conn, UPSERT_TEMPLATE, {"waba_id": waba_id, **entry})
    return len(entries)


async def select_templates(conn: AsyncConnectionLike) -> list[Row]:
    return await fetch_all(conn, SELECT_ALL)


async def select_by_name(conn: AsyncConnectionLike, name: str) -> list[Row]:
    return await fetch_all(conn, SELECT_BY_NAME, {"name": name})


def select_by_name_sync(conn: SyncConnectionLike, name: str) -> list[Row]:
    return fetch_all_sync(conn, SELECT_BY_NAME, {"name": name})


async def update_from_webhook(conn: AsyncConnectionLike, change: Mapping[str, Any]) -> list[Row]:
    """Apply one template webhook; the rows it changed with their old and new category."""
    return await fetch_all(conn, UPDATE_FROM_WEBHOOK, change)
