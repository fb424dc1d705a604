"""The send-time decision for a claimed row, before any request: send it as it is, send its
fallback template instead, hold it while Meta pauses its template, or fail it with
`window_closed`, `opted_out` or `template_disabled`.

Made by the daemon under the row's claim, from one query (store.policy.ROW_FACTS): inbound
messages, opt-outs and the template catalogue stored by any receiver count. A row ending so
changes no other row. The ruling also carries the row's own quiet hours and time zone.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, ParamSpec

from outbox.policy.consent import withheld
from outbox.policy.template_holds import APPROVED, TemplateRuling
from outbox.policy.template_holds import ruling as template_ruling
from outbox.policy.window import Window, window_of
from outbox.retry import MAY_HAVE_BEEN_ACCEPTED

WINDOW_CLOSED = "window_closed"
OPTED_OUT = "opted_out"


@dataclass(frozen=True)
class Ruling:
    """`fail`: the reason to fail the row with (starting with window_closed or opted_out);
    else send, as `fallback` (Meta's template object) when given, else as the row is.
    `switch`: the fallback is chosen now (the row must record it before sending).
    `fallback_on_131047`: sent as it is, but should Meta answer 131047 (the window closed
    meanwhile), the row can still go as its fallback. `hold` (with `hold_until`): Meta paused
    the template it would send; it waits, with no request. `template_approved`: the catalogue
    says that template is APPROVED. `quiet_hours` and `timezone`: the row's own (None: the
    daemon's, and the number's zones).
    `business_initiated`: it goes as a template to a customer whose window is not known to be
    open, so the daily limit counts it (outbox.policy.tier); `category` is the row's.
    `unless_sent`: `fail` stands only if the request that may have sent the row's next part
    did not: a status webhook showing it went settles the part instead (as `fallback`'s when
    given)."""

    fail: str | None = None
    unless_sent: bool = False
    fallback: dict[str, Any] | None = None
    switch: bool = False
    fallback_on_131047: bool = False
    hold: str | None = None
    hold_until: datetime | None = None
    template_approved: bool = False
    quiet_hours: str | None = None
    timezone: str | None = None
    business_initiated: bool = False
    category: str | None = None


SEND = Ruling()


P = ParamSpec("P")


def _looks_for_the_part(rules: Callable[P, Ruling]) -> Callable[P, Ruling]:
    """A failure of a row that may have sent its next part (`may_have_sent`) stands only if no
    status webhook shows that part went (`unless_sent`: the send looks first), and its reason
    never reads as "not sent"."""

    @functools.wraps(rules)
    def ruled(*args: P.args, **kwargs: P.kwargs) -> Ruling:
        ruling = rules(*args, **kwargs)
        if ruling.fail is None or not kwargs.get("may_have_sent"):
            return ruling
        fail = ruling.fail  # unless_sent already: its own wording says so
        if not ruling.unless_sent:
            fail = f"{fail} ({MAY_HAVE_BEEN_ACCEPTED})"
        # What the request that may have gone sent: the fallback's part once the row switched.
        fallback = kwargs["fallback"] if kwargs["sent_fallback"] else None
        sent = fallback if isinstance(fallback, dict) else None
        return replace(ruling, fail=fail, unless_sent=True, fallback=sent)

    return ruled


@_looks_for_the_part
def decide(
    *,
    template_row: bool,
    accepted: int,
    window: Window,
    suppressed: bool,
    category: str | None,
    fallback: dict[str, Any] | None,
    sent_fallback: bool,
    template: TemplateRuling | None = None,
    may_have_sent: bool = False,
) -> Ruling:
    """The rules of issue 16 for one row (see README, "Meta's rules").

    A template row is withheld only when it is marketing (or of unknown category) and the
    customer opted out. A free-form row goes while its window is open or unknown; closed, it goes
    as its fallback template when it has one and nothing of it was sent yet (the fallback then
    answers to the consent rule), else it fails `window_closed`. A row that switched to its
    fallback stays switched. A template the catalogue says is paused or disabled (`template`,
    about the row's template, else its fallback) holds or fails the row that would send it.
    `may_have_sent`: a request for its next part may have been accepted (in doubt, or the row
    was taken over from a holder whose request's fate is unknown): then a closed window fails
    it instead of switching, so that the customer never gets both the text and the template,
    and every failure stands only if no status webhook shows that part went (`unless_sent`)."""
    if template_row:
        if withheld(category, suppressed):
            return Ruling(fail=f"{OPTED_OUT}: the customer stopped marketing messages")
        return _held(template, may_have_sent) or SEND
    if sent_fallback and fallback is not None:
        return _fallback(
            fallback, category, suppressed, switch=False, template=template, sent=may_have_sent
        )
    if window.open:
        # Only where the window is known: there a 131047 closes it, so the next ruling sends
        # the fallback instead of the same free-form message again.
        return Ruling(fallback_on_131047=window.known and fallback is not None)
    closed = _closed(window)
    if fallback is None:
        return Ruling(fail=f"{WINDOW_CLOSED}: {closed}; no fallback template")
    if accepted > 0:
        return Ruling(fail=f"{WINDOW_CLOSED}: {closed} after {accepted} part(s) were sent")
    if may_have_sent:
        return Ruling(
            fail=f"{WINDOW_CLOSED}: {closed}; not sent as its fallback template, since its own "
            "first part may have gone already (a request with no clear answer)",
            unless_sent=True,
        )
    return _fallback(fallback, category, suppressed, switch=True, template=template)


def _fallback(
    fallback: dict[str, Any],
    category: str | None,
    suppressed: bool,
    *,
    switch: bool,
    template: TemplateRuling | None,
    sent: bool = False,
) -> Ruling:
    if withheld(category, suppressed):
        return Ruling(
            fail=f"{OPTED_OUT}: window closed, and the customer stopped marketing messages "
            "(its fallback template is marketing)"
        )
    return _held(template, sent) or Ruling(fallback=fallback, switch=switch)


def _held(template: TemplateRuling | None, may_have_sent: bool) -> Ruling | None:
    """The row's ruling when the catalogue holds or refuses its template; None otherwise."""
    if template is None:
        return None
    if template.hold_until is not None:
        return Ruling(hold=template.reason, hold_until=template.hold_until)
    if may_have_sent and template.reason_if_sent is not None:
        return Ruling(fail=template.reason_if_sent, unless_sent=True)
    return Ruling(fail=template.reason)


def _closed(window: Window) -> str:
    if window.last_inbound_at is None:
        return "the customer never wrote to this number"
    if window.closed_by_meta_at is not None:
        return f"Meta closed the window at {window.closed_by_meta_at.isoformat()} (131047)"
    assert window.closes_at is not None
    return f"the window closed at {window.closes_at.isoformat()}"


def ruled(
    facts: dict[str, Any] | None,
    sender: str,
    recipient: str,
    *,
    template_row: bool,
    accepted: int,
    may_have_sent: bool = False,
) -> Ruling:
    """The ruling for a claimed row from its facts (store.policy.ROW_FACTS, or its row of
    ROWS_FACTS, read for the whole claim at once); None: the row is gone."""
    if facts is None:  # the row is gone (pruned under us): nothing to rule
        return SEND
    raw = facts["fallback"]
    window = window_of(sender, recipient, facts)
    status = facts["template_status"]
    ruling = decide(
        template_row=template_row,
        accepted=accepted,
        window=window,
        suppressed=bool(facts["suppressed"]),
        category=facts["category"],
        fallback=json.loads(raw) if isinstance(raw, str) else raw,
        sent_fallback=bool(facts["sent_fallback"]),
        may_have_sent=may_have_sent,
        template=template_ruling(
            status,
            facts["template_paused_until"],
            facts["now"],
            facts["template_name"],
            facts["template_language"],
        ),
    )
    approved, quiet_hours, timezone = status == APPROVED, facts["quiet_hours"], facts["timezone"]
    if approved or quiet_hours is not None or timezone is not None:  # else as decided: no copy
        ruling = replace(
            ruling, template_approved=approved, quiet_hours=quiet_hours, timezone=timezone
        )
    # A free-form message reaches only a customer whose window is open: the limit never counts
    # it. A template counts unless the window is known to be open.
    template = template_row or ruling.fallback is not None
    if ruling.fail is None and template and not (window.known and window.open):
        return replace(ruling, business_initiated=True, category=facts["category"])
    return ruling
