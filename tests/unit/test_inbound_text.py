"""What a customer wrote, read back from a webhook body."""

from __future__ import annotations

import json
from typing import Any

from outbox.commands.inbound_text import texts_by_wamid, words


def body(*messages: dict[str, Any]) -> bytes:
    value = {"messaging_product": "whatsapp", "messages": list(messages)}
    return json.dumps({"entry": [{"changes": [{"value": value}]}]}).encode()


def test_a_button_reply_shows_its_title() -> None:
    reply = {"type": "interactive", "interactive": {"button_reply": {"id": "1", "title": "Yes"}}}
    assert words(reply) == "Yes"


def test_a_reaction_shows_its_emoji() -> None:
    assert words({"type": "reaction", "reaction": {"emoji": "👍"}}) == "👍"


def test_a_sticker_has_no_words() -> None:
    assert words({"type": "sticker", "sticker": {"id": "x"}}) is None


def test_long_text_is_clipped_to_one_line() -> None:
    text = words({"type": "text", "text": {"body": "a\nb " + "x" * 500}})
    assert text is not None
    assert len(text) == 200
    assert text.startswith("a b x")


def test_texts_are_found_by_wamid_and_a_body_that_is_not_json_is_skipped() -> None:
    found = texts_by_wamid(
        [b"not json", body({"id": "wamid.1", "type": "text", "text": {"body": "hi"}})]
    )
    assert found == {"wamid.1": "hi"}
