"""Meta's rules as the simulator plays them (issue 16, point 7): the 24-hour window of the
customers it was told wrote in, opt-outs (`user_preferences`), the per-user marketing limit, and
template statuses; and the webhooks Meta sends about them, signed like its status webhooks.

Sends are answered as Meta answers them: a free-form message outside the window, a marketing
template to a customer who said stop, or one over the per-user marketing limit is accepted (200)
and then failed by a status webhook (131047, 131050, 131049); a paused or disabled template is
refused at once (132015, 132016). A template it was not told about counts as marketing, and a
customer it was never told about has an open window unless `enforce_window`.

Control endpoints of a running `outbox simulator` (JSON bodies; each answers 200 with the webhook
body it posted to --webhook-url, or would have posted without one):
  POST /_simulator/inbound           {"from": DIGITS, "text": "hi", "ago_seconds": 0,
                                      "referral": false}
  POST /_simulator/user_preferences  {"customer": DIGITS, "value": "stop" | "resume"}
  POST /_simulator/marketing_limit   {"customer": DIGITS, "times": 1}   (no webhook)
  POST /_simulator/templates         {"name", "language", "event": "PAUSED" | "APPROVED" | ...,
                                      "category": "MARKETING" | "UTILITY" | ...}
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

WINDOW_SECONDS = 24 * 3600.0
RE_ENGAGEMENT = 131047
MARKETING_LIMIT = 131049
MARKETING_STOPPED = 131050
TEMPLATE_PAUSED = 132015
TEMPLATE_DISABLED = 132016
REFUSED = frozenset({"DISABLED", "REJECTED", "PENDING_DELETION", "DELETED", "ARCHIVED"})
EVENTS = frozenset({"APPROVED", "PAUSED", "REINSTATED", "FLAGGED"} | REFUSED)
CATEGORIES = frozenset({"MARKETING", "UTILITY", "AUTHENTICATION"})
_DIGITS = re.compile(r"^[1-9][0-9]{6,14}$")
_NAME = re.compile(r"^[a-z0-9_]{1,512}$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}(_[A-Za-z0-9]{2,4})?$")


class BadControl(ValueError):
    """A control request the simulator cannot play: answered 400 with this text."""


@dataclass
class TemplateState:
    status: str = "APPROVED"
    category: str = "MARKETING"
    template_id: str = field(default_factory=lambda: str(secrets.randbelow(10**15) + 10**14))
    pauses: int = 0


@dataclass
class MetaRules:
    """What the simulator knows of customers and templates, and Meta's answers from it."""

    phone_number_id: str = "100000000000001"
    waba_id: str = "100000000000000"
    enforce_window: bool = False  # also close the window of customers it never heard from
    last_inbound: dict[str, float] = field(default_factory=dict)  # customer -> unix time
    opted_out: set[str] = field(default_factory=set)
    marketing_limited: dict[str, int] = field(default_factory=dict)  # customer -> sends left
    templates: dict[tuple[str, str], TemplateState] = field(default_factory=dict)

    def answer(self, body: dict[str, Any], recipient: str, now: float) -> int | None:
        """Meta's rule for one valid send: an error code (132015 and 132016 are refused at
        once; others are accepted, then failed by webhook), or None to answer as usual."""
        if body.get("type") != "template":
            return None if self.window_open(recipient, now) else RE_ENGAGEMENT
        template = body["template"]
        state = self.templates.get((template["name"], template["language"]["code"]))
        if state is not None and state.status == "PAUSED":
            return TEMPLATE_PAUSED
        if state is not None and state.status in REFUSED:
            return TEMPLATE_DISABLED
        if state is not None and state.category != "MARKETING":
            return None
        if recipient in self.opted_out:
            return MARKETING_STOPPED
        if self.marketing_limited.get(recipient, 0) > 0:
            self.marketing_limited[recipient] -= 1
            return MARKETING_LIMIT
        return None

    def window_open(self, customer: str, now: float) -> bool:
        at = self.last_inbound.get(customer)
        if at is None:
            return not self.enforce_window
        return now - at < WINDOW_SECONDS

    # --- what the control endpoints play -----------------------------------------------------

    def inbound(self, request: dict[str, Any]) -> bytes:
        """A customer's message: its window opens (at `ago_seconds` before now); Meta's webhook."""
        customer = _customer(request.get("from"), "from")
        text = request.get("text", "hi")
        if not isinstance(text, str) or not text or len(text) > 4096:
            raise BadControl("text: must be 1 to 4096 characters")
        ago = request.get("ago_seconds", 0)
        if not isinstance(ago, int | float) or ago < 0:
            raise BadControl("ago_seconds: must be a number of seconds, 0 or more")
        at = time.time() - float(ago)
        self.last_inbound[customer] = max(self.last_inbound.get(customer, 0.0), at)
        message: dict[str, Any] = {
            "from": customer,
            "id": "wamid." + base64.b64encode(secrets.token_bytes(24)).decode().rstrip("="),
            "timestamp": str(int(at)),
            "type": "text",
            "text": {"body": text},
        }
        if request.get("referral"):
            message["referral"] = {"source_type": "ad", "source_id": "1", "headline": "Ad"}
        value = {
            "contacts": [{"profile": {"name": "Customer"}, "wa_id": customer}],
            "messages": [message],
        }
        return self._envelope("messages", value)

    def user_preference(self, request: dict[str, Any]) -> bytes:
        """A customer stops (or resumes) marketing messages; Meta's `user_preferences` webhook."""
        customer = _customer(request.get("customer"), "customer")
        choice = request.get("value")
        if choice not in ("stop", "resume"):
            raise BadControl('value: must be "stop" or "resume"')
        if choice == "stop":
            self.opted_out.add(customer)
        else:
            self.opted_out.discard(customer)
        detail = f"User requested to {choice} marketing messages"
        preference = {
            "wa_id": customer,
            "detail": detail,
            "category": "marketing_messages",
            "value": choice,
            "timestamp": int(time.time()),
        }
        return self._envelope("user_preferences", {"user_preferences": [preference]})

    def limit_marketing(self, request: dict[str, Any]) -> None:
        """The customer's next `times` marketing templates fail with 131049."""
        customer = _customer(request.get("customer"), "customer")
        times = request.get("times", 1)
        if not isinstance(times, int) or not 0 <= times <= 1000:
            raise BadControl("times: must be a whole number from 0 to 1000")
        self.marketing_limited[customer] = times

    def template_event(self, request: dict[str, Any]) -> list[bytes]:
        """A template's status (and or category) changes; Meta's webhooks about it."""
        name, language = request.get("name"), request.get("language")
        if not isinstance(name, str) or not _NAME.match(name):
            raise BadControl("name: must be a template name (a-z, 0-9, _)")
        if not isinstance(language, str) or not _LANGUAGE.match(language):
            raise BadControl("language: must be a language code such as en_US")
        event, category = request.get("event"), request.get("category")
        if event is not None and event not in EVENTS:
            raise BadControl(f"event: must be one of {', '.join(sorted(EVENTS))}")
        if category is not None and category not in CATEGORIES:
            raise BadControl(f"category: must be one of {', '.join(sorted(CATEGORIES))}")
        if event is None and category is None:
            raise BadControl("give an event, a category, or both")
        state = self.templates.setdefault((name, language), TemplateState())
        named = {
            "message_template_id": int(state.template_id),
            "message_template_name": name,
            "message_template_language": language,
        }
        bodies = []
        if category is not None and category != state.category:
            change = {**named, "previous_category": state.category, "new_category": category}
            state.category = category
            bodies.append(self._template_envelope("template_category_update", change))
        if event is not None:
            state.status = "APPROVED" if event == "REINSTATED" else event
            value: dict[str, Any] = {**named, "event": event, "reason": "NONE"}
            if event == "PAUSED":
                state.pauses += 1
                title = "FIRST_PAUSE" if state.pauses == 1 else "SECOND_PAUSE"
                hours = 3 if state.pauses == 1 else 6
                value["reason"] = "LOW_QUALITY"
                value["other_info"] = {
                    "title": title,
                    "description": f"Your template has been paused for {hours} hours",
                }
            if event == "DISABLED":
                value["disable_info"] = {"disable_date": str(int(time.time()))}
            value["message_template_category"] = state.category
            bodies.append(self._template_envelope("message_template_status_update", value))
        return bodies

    def _envelope(self, kind: str, value: dict[str, Any]) -> bytes:
        """A phone number's webhook (messages, user_preferences), as Meta serialises it."""
        full = {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": "15550000000",
                "phone_number_id": self.phone_number_id,
            },
            **value,
        }
        entry = {"id": self.waba_id, "changes": [{"field": kind, "value": full}]}
        data = {"object": "whatsapp_business_account", "entry": [entry]}
        return json.dumps(data, ensure_ascii=True).encode()

    def _template_envelope(self, kind: str, value: dict[str, Any]) -> bytes:
        """A WABA's template webhook: the entry id is the WABA, with the time it happened."""
        entry = {"id": self.waba_id, "time": int(time.time()), "changes": [
            {"field": kind, "value": value}
        ]}  # fmt: skip
        data = {"object": "whatsapp_business_account", "entry": [entry]}
        return json.dumps(data, ensure_ascii=True).encode()


def _customer(value: object, name: str) -> str:
    digits = value.lstrip("+") if isinstance(value, str) else ""
    if not _DIGITS.match(digits):
        raise BadControl(f"{name}: must be a phone number, digits with country code")
    return digits
