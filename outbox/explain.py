"""Every Graph error code outbox knows, in plain words with the next step to take.

Shared by the dashboard and `outbox status`; a code outbox classifies in outbox.retry must have
an entry here (or fall in one of the ranges below), so no operator meets a bare number.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Explanation:
    """What a Graph error code means and what to do about it."""

    code: int
    meaning: str
    next_step: str

    def line(self) -> str:
        return f"{self.meaning}: {self.next_step}"


_WAITS = "outbox waits and sends again by itself; nothing to do unless it lasts"
_RETRIES = "outbox retries it by itself; if it keeps failing, retry it later by hand"
_RENEW_CREDENTIALS = "renew META_ACCESS_TOKEN (a system user token that never expires), restart"
_SUPPORT = "check the account in WhatsApp Manager; sending resumes when Meta lifts it"
_FIX_ROW = "correct the message in the app and enqueue it again"
_TEMPLATE = "fix the template (name, language, parameters) in the app and enqueue it again"

_CODES: dict[int, tuple[str, str]] = {
    # transient
    1: ("Meta's API had an unknown error", _RETRIES),
    2: ("Meta's service was briefly unavailable", _RETRIES),
    131000: ("something went wrong at Meta", _RETRIES),
    131016: ("Meta's service was overloaded", _RETRIES),
    133004: ("Meta's server was briefly unavailable", _RETRIES),
    # throttles
    4: ("the app made too many API calls", _WAITS),
    613: ("the app called the API faster than allowed", _WAITS),
    80007: ("the WhatsApp account reached its rate limit", _WAITS),
    130429: ("the phone number sent faster than its throughput allows", _WAITS),
    131048: (
        "Meta limits how many messages this number may send (quality: spam rate limit)",
        "outbox holds the sender for an hour or more; improve message quality in WhatsApp Manager",
    ),
    131056: ("too many messages to this one person in a short time", _WAITS),
    131057: ("the account is in maintenance mode", _WAITS),
    132069: ("the flow reached its limit of sends per hour", _WAITS),
    133016: ("the phone number's registration was attempted too often", _WAITS),
    # the account or the token
    0: ("Meta refused the access token", _RENEW_CREDENTIALS),
    3: ("the app lacks the capability or permission for this call", _RENEW_CREDENTIALS),
    10: ("the app lacks the permission for this call", _RENEW_CREDENTIALS),
    33: (
        "the phone number id does not exist or the token cannot use it",
        "check META_PHONE_NUMBER_ID (or the row's sender) against WhatsApp Manager",
    ),
    190: ("the access token expired or was revoked", _RENEW_CREDENTIALS),
    368: ("Meta temporarily blocked the account for policy violations", _SUPPORT),
    131005: ("the token has no permission to send from this number", _RENEW_CREDENTIALS),
    131031: ("the business account is locked", _SUPPORT),
    131037: (
        "the phone number has no approved display name",
        "get the display name approved in WhatsApp Manager",
    ),
    131042: (
        "there is a payment problem on the business account",
        "fix the payment method in WhatsApp Manager",
    ),
    131045: (
        "the phone number is not registered with the Cloud API",
        "register the number (POST /PHONE_NUMBER_ID/register), then sending resumes",
    ),
    131064: (
        "the account reached a messaging limit for template classification violations",
        _SUPPORT,
    ),
    133000: ("the phone number's deregistration did not finish", "register the number again"),
    133005: ("the two-step verification PIN is wrong", "set the right PIN in WhatsApp Manager"),
    133006: ("the phone number must be verified first", "verify the number in WhatsApp Manager"),
    133008: ("too many two-step verification PIN attempts", _WAITS),
    133009: ("the two-step verification PIN was entered too fast", _WAITS),
    133010: ("the phone number is not registered", "register the number with the Cloud API"),
    133015: ("the phone number was deleted recently", "wait a few minutes, then register it"),
    # this message can never be sent
    100: ("Meta found a parameter of the message invalid", _FIX_ROW),
    130472: (
        "Meta left this user out of a marketing experiment",
        "nothing to do: Meta holds some marketing messages back from some users",
    ),
    130497: (
        "the business may not message users in this country",
        "message this customer by another channel",
    ),
    131008: ("a required parameter of the message is missing", _FIX_ROW),
    131009: ("a parameter of the message has an invalid value", _FIX_ROW),
    131021: (
        "the message was addressed to the sending number itself",
        "send it to the customer's number, not the business's own",
    ),
    131026: (
        "the message could not be delivered: the number is not on WhatsApp, or its app is too old",
        "check the number with the customer, or reach them by another channel",
    ),
    131030: (
        "the number is not on the test account's allowed list",
        "add it to the allowed numbers in the app dashboard, or go live",
    ),
    131047: (
        "the guest has not written in 24 h",
        "send a template instead (or enqueue with a fallback template)",
    ),
    131049: (
        "Meta chose not to deliver this marketing message, to keep engagement healthy",
        "do not resend at once; try again in a day or two, or another channel",
    ),
    131050: (
        "the customer stopped marketing messages from this business",
        "send them no marketing; utility messages still go",
    ),
    131051: ("this message type is not supported", _FIX_ROW),
    131052: ("Meta could not download the customer's media", "ask the customer to send it again"),
    131053: (
        "Meta could not fetch or read the media",
        "check the media URL is public, https and of a supported type, then enqueue it again",
    ),
    131063: (
        "the business may not message users in this country",
        "message this customer by another channel",
    ),
    135000: ("Meta refused the message for an unknown reason", _FIX_ROW),
    132000: ("the template's parameter count does not match its definition", _TEMPLATE),
    132001: ("the template does not exist in this language", _TEMPLATE),
    132005: ("the template's text is too long once filled in", _TEMPLATE),
    132007: ("the template's content breaks WhatsApp policy", _TEMPLATE),
    132012: ("a template parameter has the wrong format", _TEMPLATE),
    132015: (
        "Meta paused this template for low quality",
        "outbox holds its messages and tries again within the hour; edit the template",
    ),
    132016: ("Meta disabled this template for low quality", "create a new template and use it"),
}

# Ranges outbox classifies as a whole (outbox.retry): a code in them without its own entry.
_RANGES: tuple[tuple[range, str, str], ...] = (
    (range(200, 300), "the app lacks a permission for this call", _RENEW_CREDENTIALS),
    (range(132000, 133000), "Meta refused the template", _TEMPLATE),
)


def explain(code: int | None) -> Explanation | None:
    """The plain words for a Graph error code; None for no code, or a code outbox does not know
    (the dashboard and `outbox status` then show Meta's own text alone)."""
    if code is None:
        return None
    if code in _CODES:
        meaning, next_step = _CODES[code]
        return Explanation(code, meaning, next_step)
    for codes, meaning, next_step in _RANGES:
        if code in codes:
            return Explanation(code, meaning, next_step)
    return None


def explain_line(code: int | None) -> str:
    """The explanation on one line, as `outbox status` prints it; "-" when there is none."""
    explanation = explain(code)
    return "-" if explanation is None else explanation.line()
