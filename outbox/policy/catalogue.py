"""The template catalogue: Meta's templates of the WABA, as `outbox templates sync` reads them
from the Graph API (`{WABA_ID}/message_templates`) and the template webhooks change them.

Once the catalogue knows a template's name, enqueue refuses that name in a language the
catalogue does not have, in a status other than APPROVED, or with the wrong number of body
parameters (`check`); a name it does not know, or an empty catalogue, changes nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from outbox.connections import AsyncConnectionLike, Row
from outbox.errors import InvalidMessage
from outbox.policy import template_holds
from outbox.policy.bodies import changes
from outbox.store import templates_catalogue

logger = logging.getLogger("outbox.webhooks")
APPROVED = "APPROVED"
# {{1}} or {{first_name}}, as Meta writes parameters in a component's text.
_PARAMETER = re.compile(r"\{\{\s*([a-z0-9_]+)\s*\}\}")


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    language: str
    template_id: str | None
    category: str | None
    status: str
    quality: str | None
    parameter_count: int | None

    def row(self) -> dict[str, Any]:
        return dict(self.__dict__)


def parameter_count(components: object) -> int | None:
    """The distinct parameters in the BODY component's text; None when there is no text."""
    if not isinstance(components, Sequence):
        return None
    for component in components:
        if isinstance(component, Mapping) and str(component.get("type", "")).upper() == "BODY":
            text = component.get("text")
            if isinstance(text, str):
                return len(set(_PARAMETER.findall(text)))
    return 0


def entry_from_graph(item: Mapping[str, Any]) -> CatalogueEntry | None:
    """One template of a `message_templates` page; None when it lacks a name or language."""
    name, language = item.get("name"), item.get("language")
    if not isinstance(name, str) or not isinstance(language, str):
        return None
    quality = item.get("quality_score")
    score = quality.get("score") if isinstance(quality, Mapping) else None
    return CatalogueEntry(
        name=name,
        language=language,
        template_id=str(item["id"]) if item.get("id") is not None else None,
        category=str(item["category"]) if item.get("category") else None,
        status=str(item.get("status") or "UNKNOWN"),
        quality=str(score) if score else None,
        parameter_count=parameter_count(item.get("components")),
    )


def check(
    name: str, language: str, body_params: int | None, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Refuse a template the catalogue knows by name but not like this. `rows` are the
    catalogue's languages of `name` (none: nothing to check); `body_params` None means the
    caller gave its own components, whose count is not checked."""
    if not rows:
        return
    same = [r for r in rows if r["language"] == language]
    if not same:
        known = ", ".join(sorted({str(r["language"]) for r in rows}))
        raise InvalidMessage(
            "template.language",
            f"the catalogue has {name} only in {known}: run `outbox templates sync` if that is old",
            rule="unknown_template",
        )
    approved = [r for r in same if r["status"] == APPROVED]
    if not approved:
        raise InvalidMessage(
            "template",
            f"{name} ({language}) is {same[0]['status']}, not APPROVED; Meta would refuse it",
            rule="not_approved",
        )
    counts = {r["parameter_count"] for r in approved}
    if body_params is not None and None not in counts and body_params not in counts:
        expected = " or ".join(str(c) for c in sorted(counts))
        raise InvalidMessage(
            "template.body_params",
            f"{name} ({language}) takes {expected} body parameters, not {body_params}",
            rule="parameter_count",
        )


# The webhooks of the WABA's templates (field -> what it changes). Meta's documented shape
# (webhooks reference: message_template_status_update, message_template_quality_update,
# template_category_update); entry.id is the WABA id.
TEMPLATE_FIELDS = (
    "message_template_status_update",
    "message_template_quality_update",
    "template_category_update",
)


def template_changes(bodies: Iterable[bytes]) -> list[dict[str, Any]]:
    """The catalogue changes the webhook bodies carry, in arrival order; what is malformed is
    skipped (the body itself stays stored)."""
    found: list[dict[str, Any]] = []
    for change in changes(bodies):
        if change.field in TEMPLATE_FIELDS:
            at = _entry_time(change.entry.get("time"))
            waba = str(change.entry.get("id") or "")
            found += _change(waba, str(change.field), change.value, at)
    return found


def _entry_time(value: object) -> datetime:
    """The webhook's trigger time (unix seconds), or now when missing or absurd."""
    now = datetime.now(UTC)
    if isinstance(value, int) and 0 < value < 2**33:
        at = datetime.fromtimestamp(value, UTC)
        return at if at <= now else now
    return now


def _change(waba: str, kind: str, value: Mapping[str, Any], at: datetime) -> list[dict[str, Any]]:
    template_id = value.get("message_template_id")
    change: dict[str, Any] = {
        "waba_id": waba,
        "template_id": None if template_id is None else str(template_id),
        "name": _word(value.get("message_template_name")),
        "language": _word(value.get("message_template_language")),
        "status": None,
        "quality": None,
        "category": None,
        "paused_until": None,
    }
    if kind == "message_template_status_update":
        event = _word(value.get("event"))
        change["status"] = APPROVED if event == "REINSTATED" else event
        if event == template_holds.PAUSED:
            change["paused_until"] = at + template_holds.pause_length(value.get("other_info"))
    elif kind == "message_template_quality_update":
        change["quality"] = _word(value.get("new_quality_score"))
    else:
        change["category"] = _word(value.get("new_category"))
    if change["template_id"] is None and (change["name"] is None or change["language"] is None):
        return []
    if change["status"] is None and change["quality"] is None and change["category"] is None:
        return []
    return [change]


def _word(value: object) -> str | None:
    return value[:512] if isinstance(value, str) and value else None


async def record(conn: AsyncConnectionLike, bodies: Iterable[bytes]) -> list[Row]:
    """Apply the template webhooks among the bodies to the catalogue (in the caller's
    transaction), and a status change to the pending rows using the template; the category
    changes, as rows of waba_id, name, language, old_category, category."""
    changed: list[Row] = []
    statuses: list[Row] = []
    for change in template_changes(bodies):
        for row in await templates_catalogue.update_from_webhook(conn, change):
            if change["category"] is not None and row["old_category"] != row["category"]:
                changed.append(row)
            if change["status"] is not None:
                statuses.append(row)
    if statuses:
        counts = await template_holds.apply_to_rows(conn, statuses)
        if any(counts.values()):
            logger.info(
                "template status webhooks: %d messages held, %d failed, %d due again",
                counts["held"],
                counts["failed"],
                counts["released"],
                extra=counts,
            )
    return changed
