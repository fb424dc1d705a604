"""What to do after a part was refused: classify the error, then decide the row's outcome.

Pure functions over the error table of whatsapp-api.md section 4. Throttling and pauses never
count towards max attempts; only transient failures and permanent errors use them up. A send in
doubt (Meta may have accepted it) is counted apart, in `in_doubt`, and resent only a few times.
Every wait has a ceiling, whatever Retry-After says.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from itertools import islice

import backoff

from outbox.errors import GraphError, InDoubt, SendError, TransportError

MAX_RETRY_DELAY = 3600.0  # a row's own retry never waits longer
MAX_SENDER_HOLD = 60.0  # a sender-wide throughput hold never lasts longer
# Why a row that had a send in doubt (or was taken over) is never said to be "not sent".
MAY_HAVE_BEEN_ACCEPTED = "an earlier request with no clear answer may have been accepted"
MAX_IN_DOUBT = 3  # sends of one row with an unknown outcome before it fails as "in doubt"
# ... while nothing answers at all (an outage of timeouts), where the same rows are the probes:
# they wait for the API instead of failing, but a part is still never sent more often than this.
MAX_IN_DOUBT_IN_OUTAGE = 2 * MAX_IN_DOUBT


class ErrorClass(StrEnum):
    TRANSIENT = "transient"  # retry soon, bounded by max attempts
    THROTTLE = "throttle"  # wait and retry; never fails the row
    PERMANENT = "permanent"  # this message can never be sent: fail the row
    ACCOUNT = "account"  # nothing can be sent: pause all sending
    IN_DOUBT = "in_doubt"  # may have been accepted: resend only later, a bounded number of times
    TEMPLATE_PAUSED = "template_paused"  # Meta paused this template: hold its rows only


TRANSIENT_CODES = frozenset({1, 2, 131000, 131016, 133004})
SENDER_THROUGHPUT_CODE = 130429  # the number sends faster than its tier allows
# 131048 (spam rate limit): Meta limits how many messages the number may send, for its quality;
# one message getting through says nothing about the limit, so it holds the whole sender for a
# long time instead of pausing it until a probe succeeds (see HoldSender).
SPAM_RATE_LIMIT = 131048
SPAM_HOLD = 3600.0  # the first hold; it doubles with each strike ...
MAX_SPAM_HOLD = 86400.0  # ... up to a day
THROTTLE_CODES = frozenset({4, 613, 80007, 130429, 131048, 131056, 131057, 132069, 133016})
# 131064: the account reached a messaging limit for template classification violations; it
# covers every message, templates or not, until Meta lifts it: an account error, not the row's.
ACCOUNT_CODES = frozenset(
    {0, 3, 10, 33, 190, 368, 131005, 131031, 131037, 131042, 131045, 131064}
    | {133000, 133005, 133006, 133008, 133009, 133010, 133015}
    | set(range(200, 300))
)
# 131063: the business may not message users in the recipient's country (like 130497).
PERMANENT_CODES = frozenset(
    {100, 130472, 130497, 131008, 131009, 131021, 131026, 131030, 131047, 131049, 131050}
    | {131051, 131052, 131053, 131063, 135000}
    | (set(range(132000, 133000)) - THROTTLE_CODES)
)
TEMPLATE_PAUSED = 132015
TEMPLATE_DISABLED_CODE = 132016
TEMPLATE_PAUSE_HOLD = 3600.0  # Meta pauses for 3 h, then 6 h: look again within the hour
# Account errors about the access token or the app, not one phone number: they pause every sender
# the token serves. Every other account error (a locked or blocked number, a wrong phone number
# id, a payment issue) pauses its own sender only.
TOKEN_CODES = frozenset({0, 3, 10, 190} | set(range(200, 300)))
OBJECT_DOES_NOT_EXIST = 33  # error_subcode of code 100: the phone number id is wrong
PAIR_RATE_LIMIT = 131056
# Meta's per-user marketing limit ("not delivered to maintain healthy ecosystem engagement"):
# Meta asks to wait at least 24 h. The row is deferred 24 h times its attempts (24 h, 48 h...).
MARKETING_LIMITED = 131049
MARKETING_DEFERRAL = 24 * 3600.0
FLOW_THROTTLED = 132069  # ten sends per hour per flow: that row waits, not the sender

# Waits when Meta sends no Retry-After: seconds for throughput, minutes for app-level limits.
THROTTLE_DELAYS = {4: 60.0, 613: 60.0, 80007: 300.0, 130429: 2.0, 131057: 60.0, 132069: 3600.0}
DEFAULT_THROTTLE_DELAY = 5.0


# The token itself was refused (190 expired or invalid, 0 could not authenticate): only a new
# META_ACCESS_TOKEN and a restart help, since the daemon reads the token once, at startup.
TOKEN_REFUSED_CODES = frozenset({0, 190})


def needs_new_token(error: SendError) -> bool:
    """Whether Meta refused the access token itself, rather than a permission or a number."""
    return isinstance(error, GraphError) and error.code in TOKEN_REFUSED_CODES


def pauses_every_sender(error: SendError) -> bool:
    """Whether an account-level error is the token's (every sender) or one sender's."""
    return isinstance(error, GraphError) and error.code in TOKEN_CODES


def classify(error: SendError) -> ErrorClass:
    """The class of a refused part; unknown codes: 5xx transient, 429 throttle, other permanent."""
    if isinstance(error, InDoubt):
        return ErrorClass.IN_DOUBT
    if isinstance(error, TransportError):
        if error.http_status == 429:
            return ErrorClass.THROTTLE
        return ErrorClass.TRANSIENT
    assert isinstance(error, GraphError)
    code = error.code
    if code == 100 and error.subcode == OBJECT_DOES_NOT_EXIST:
        return ErrorClass.ACCOUNT
    if code == TEMPLATE_PAUSED:
        return ErrorClass.TEMPLATE_PAUSED
    for codes, error_class in (
        (TRANSIENT_CODES, ErrorClass.TRANSIENT),
        (THROTTLE_CODES, ErrorClass.THROTTLE),
        (ACCOUNT_CODES, ErrorClass.ACCOUNT),
        (PERMANENT_CODES, ErrorClass.PERMANENT),
    ):
        if code in codes:
            return error_class
    status = error.http_status or 0
    if status == 429:
        return ErrorClass.THROTTLE
    if status >= 500:
        return ErrorClass.TRANSIENT
    return ErrorClass.PERMANENT


@dataclass(frozen=True)
class Retry:
    """Reschedule after `delay` seconds; the attempt counts."""

    delay: float
    reason: str


@dataclass(frozen=True)
class Throttle:
    """Reschedule after `delay` seconds and give the attempt back."""

    delay: float
    reason: str
    recipient_only: bool


@dataclass(frozen=True)
class Fail:
    reason: str


@dataclass(frozen=True)
class HoldTemplate:
    """Meta paused the row's template: it and every row of that template wait `delay` seconds,
    attempts kept, while other messages go on."""

    delay: float
    reason: str


@dataclass(frozen=True)
class HoldSender:
    """Meta limits what the sender may send (131048): it sends nothing for `delay` seconds, and
    the row waits with its attempt given back. Longer than a throttle, and not lifted early by
    a message that gets through."""

    delay: float
    reason: str


@dataclass(frozen=True)
class Doubt:
    """Meta may have accepted the part: resend after `delay` seconds, counting one more send in
    doubt but not an attempt."""

    delay: float
    reason: str


@dataclass(frozen=True)
class Defer:
    """Meta will not take this message for a while (131049): reschedule after `delay` seconds,
    far beyond a retry's cap, the attempt counting; a deadline that comes first fails it."""

    delay: float
    reason: str


@dataclass(frozen=True)
class Pause:
    """Stop all sending; the row goes back to pending with its attempt given back."""

    reason: str


@dataclass(frozen=True)
class WaitOutage:
    """The API answers nobody: the row waits for it like every other row, its attempt given
    back; `doubt` is 1 when this send's outcome is unknown (counted in in_doubt)."""

    reason: str
    doubt: int


Outcome = Retry | Throttle | Fail | Pause | Doubt | HoldTemplate | HoldSender | WaitOutage | Defer


def expo_delays(factor: float, cap: float) -> Iterator[float]:
    """factor, 2·factor, 4·factor, … capped: backoff.expo without its priming None."""
    delays = backoff.expo(base=2, factor=factor, max_value=cap)
    next(delays)
    return (float(delay or 0.0) for delay in delays)


def retry_delay(attempts: int, base: float, *, cap: float = MAX_RETRY_DELAY) -> float:
    """base·2^(attempts-1), capped, with equal jitter (half fixed, half random)."""
    value = next(islice(expo_delays(base, cap), max(1, attempts) - 1, None))
    return value / 2 + random.uniform(0, value / 2)  # noqa: S311 (jitter, not cryptography)


def decide(
    error: SendError,
    *,
    attempts: int,
    max_attempts: int,
    base_delay: float,
    pair_strikes: int = 0,
    in_doubt: int = 0,
    outage: bool = False,
    sender_strikes: int = 0,
) -> Outcome:
    """The row's outcome after `error` on its `attempts`-th counted attempt.

    `pair_strikes` counts the recent 131056 answers for this recipient: Meta asks for 4^X s.
    `sender_strikes` counts the sender's earlier spam-limit holds (131048): each doubles the next.
    `in_doubt` counts the row's earlier sends whose outcome was unknown. `outage`: the sender is
    in an outage (nothing answers), so a failure without an answer is not the row's fault; a
    send in doubt still fails the row at MAX_IN_DOUBT_IN_OUTAGE (its probes are the only sends).
    """
    reason = str(error)
    error_class = classify(error)
    if outage and error_class is ErrorClass.TRANSIENT:
        return WaitOutage(reason, doubt=0)
    if outage and error_class is ErrorClass.IN_DOUBT and in_doubt + 1 < MAX_IN_DOUBT_IN_OUTAGE:
        return WaitOutage(reason, doubt=1)
    if isinstance(error, InDoubt) and error.dropped and not outage:
        # Closed before any answer: never resent at once (the caller waited for its webhook),
        # but counted as an attempt, not a doubt: front ends close connections unread as well.
        if attempts >= max_attempts:
            return Fail(f"{reason} (gave up after {attempts} attempts)")
        return Retry(retry_delay(attempts, base_delay), reason)
    if isinstance(error, GraphError) and error.code == MARKETING_LIMITED:
        if attempts >= max_attempts:
            return Fail(f"{reason} (gave up after {attempts} attempts)")
        return Defer(MARKETING_DEFERRAL * max(1, attempts), reason)
    if error_class is ErrorClass.PERMANENT:
        return Fail(reason)
    if error_class is ErrorClass.ACCOUNT:
        return Pause(reason)
    if error_class is ErrorClass.TEMPLATE_PAUSED:
        return HoldTemplate(TEMPLATE_PAUSE_HOLD, reason)
    if error_class is ErrorClass.IN_DOUBT:
        if in_doubt + 1 >= MAX_IN_DOUBT:
            return Fail(f"in doubt after {in_doubt + 1} sends, it may have been sent: {reason}")
        return Doubt(retry_delay(in_doubt + 1, max(base_delay, 1.0)), reason)
    if error_class is ErrorClass.THROTTLE:
        code = error.code if isinstance(error, GraphError) else None
        if code == PAIR_RATE_LIMIT:
            delay = error.retry_after or float(4 ** min(pair_strikes, 5))
            return Throttle(min(delay, MAX_RETRY_DELAY), reason, recipient_only=True)
        if code == SPAM_RATE_LIMIT:
            return HoldSender(min(SPAM_HOLD * 2 ** min(sender_strikes, 16), MAX_SPAM_HOLD), reason)
        if code == FLOW_THROTTLED:
            delay = error.retry_after or THROTTLE_DELAYS[FLOW_THROTTLED]
            return Throttle(min(delay, MAX_RETRY_DELAY), reason, recipient_only=True)
        delay = error.retry_after or THROTTLE_DELAYS.get(code or 0, DEFAULT_THROTTLE_DELAY)
        return Throttle(min(delay, MAX_SENDER_HOLD), reason, recipient_only=False)
    if attempts >= max_attempts:
        return Fail(f"{reason} (gave up after {attempts} attempts)")
    delay = error.retry_after or retry_delay(attempts, base_delay)
    return Retry(min(delay, MAX_RETRY_DELAY), reason)
