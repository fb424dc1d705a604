"""What a customer wrote, read back from the webhook body that brought it (outbox_inbound keeps
its type and time only): the text, a caption, a button's or list reply's title, a reaction."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

MAX_TEXT = 200


def _messages(body: bytes) -> Iterator[dict[str, Any]]:
    try:
        document = json.loads(body)
    except ValueError:
        return
    entries = document.get("entry") if isinstance(document, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        for change in changes if isinstance(changes, list) else []:
            value = change.get("value") if isinstance(change, dict) else None
            messages = value.get("messages") if isinstance(value, dict) else None
            for message in messages if isinstance(messages, list) else []:
                if isinstance(message, dict):
                    yield message


def _field(message: dict[str, Any], *path: str) -> str | None:
    value: Any = message
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, str) and value else None


def words(message: dict[str, Any]) -> str | None:
    """The words of one inbound message, if it has any."""
    kind = message.get("type")
    found = (
        _field(message, "text", "body")
        or (_field(message, str(kind), "caption") if isinstance(kind, str) else None)
        or _field(message, "button", "text")
        or _field(message, "interactive", "button_reply", "title")
        or _field(message, "interactive", "list_reply", "title")
        or _field(message, "reaction", "emoji")
        or _field(message, "location", "name")
    )
    if found is None:
        return None
    found = " ".join(found.split())
    return found if len(found) <= MAX_TEXT else found[: MAX_TEXT - 1] + "…"


def texts_by_wamid(bodies: Iterable[bytes]) -> dict[str, str]:
    """Every inbound message's words in these webhook bodies, by its wamid."""
    found = {}
    for body in bodies:
        for message in _messages(body):
            text = words(message)
            if text is not None and isinstance(message.get("id"), str):
                found[message["id"]] = text
    return found
