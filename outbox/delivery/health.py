"""Whether the daemon may send now: open, paused (an account-level error), or in an outage.

An outage is the Graph API failing for everyone: transient failures (network, 5xx, transient
Graph codes, timeouts) from several rows and recipients with no answer in between, or a send and
then a lookup of the phone number both unanswered (however few rows are waiting). Like a pause it
stops claiming without using attempts, and one probe at a time finds out when sending works
again: every `pause_probe` seconds while paused, on a backoff capped at 30 s in an outage.
An outage's probe first looks the phone number up (a GET that sends nothing) and risks a message
only once that is answered (or, should lookups alone fail, every LOOKUP_MISSES-th time). Any real
answer to a message (an id, a permanent or throttling error) ends an outage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from enum import StrEnum

from outbox.retry import expo_delays

logger = logging.getLogger("outbox.daemon")

# Failures in a row with no answer in between (one row may fail more than once: while the API
# is down only each recipient's oldest row is sent) ...
OUTAGE_FAILURES = 5
OUTAGE_RECIPIENTS = 3  # ... to this many distinct recipients: the API is down, not the rows
OUTAGE_PROBE_CAP = 30.0
# An outage probe whose lookup goes unanswered sends no message, except every LOOKUP_MISSES-th
# time: lookups failing while messages work again must not hold sending forever.
LOOKUP_MISSES = 10


class State(StrEnum):
    OPEN = "ok"
    PAUSED = "paused"
    OUTAGE = "outage"


class Gate:
    """The daemon's sending state and its probe schedule (in memory: a restart starts open)."""

    def __init__(
        self,
        pause_probe: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        sender: str | None = None,
    ) -> None:
        # Whose gate: a phone number id, or None for the access token's (every sender).
        self.sender = sender
        self._clock = clock
        self._pause_probe = pause_probe
        self.state = State.OPEN
        self.reason: str | None = None
        self.since: float | None = None
        self._probe_at = 0.0
        self._outage_delays: Iterator[float] = expo_delays(1.0, OUTAGE_PROBE_CAP)
        self._failures = 0
        self._failed_recipients: set[str] = set()
        # Rows whose failure used an attempt since the last answer: if those failures turn out
        # to be an outage's onset, their attempts are given back (an outage uses none).
        self._spent: list[int] = []
        self._onset: list[int] = []
        # Rows such a failure failed for good (their last attempt): undone if it was an onset.
        self._ended: list[tuple[int, str]] = []  # (row id, the failure it ended with)
        self._onset_ended: list[tuple[int, str]] = []
        self._lookup_misses = 0
        self.changes = 0  # bumped on every change of state, for whoever reports it
        self.answers = 0  # answers from the API so far

    @property
    def open(self) -> bool:
        return self.state is State.OPEN

    def probe_due(self) -> bool:
        """True when a single probe send may go out now (and schedules the next one)."""
        if self.open or self._clock() < self._probe_at:
            return False
        self._schedule_probe()
        return True

    def seconds_to_probe(self) -> float:
        return max(0.0, self._probe_at - self._clock())

    def pause(self, reason: str) -> None:
        """An account-level error: stop until a probe succeeds."""
        if self.state is not State.PAUSED:
            logger.error(
                "%s paused: %s; probing every %.0fs",
                self.whose,
                reason,
                self._pause_probe,
                extra=self._fields(reason, State.PAUSED),
            )
            self._enter(State.PAUSED, reason)
        self.reason = reason
        self._schedule_probe()

    def failed(self, row_id: int, recipient: str, reason: str) -> bool:
        """A transient failure (or a send in doubt); True when sending is in an outage."""
        if self.state is State.PAUSED:
            return False
        self._failures += 1
        self._failed_recipients.add(recipient)
        if self.state is State.OUTAGE:
            self.reason = reason  # the next probe is already scheduled (probe_due)
            return True
        if self._failures >= OUTAGE_FAILURES and len(self._failed_recipients) >= OUTAGE_RECIPIENTS:
            failures, recipients = self._failures, len(self._failed_recipients)
            self._begin_outage(
                reason,
                f"{failures} sends to {recipients} recipients failed with no answer in between",
            )
            return True
        return False

    def unreachable(self, reason: str, answers: int) -> bool:
        """A send and then a lookup of the phone number went unanswered: the API is down, however
        few rows and recipients failed, unless it answered since the send (`answers` was the
        count of answers then). True when sending is in an outage."""
        if self.state is State.PAUSED or self.answers != answers:
            return False
        if self.state is State.OPEN:
            self._begin_outage(reason, "a send and a lookup of the phone number got no answer")
        self.reason = reason
        return True

    def lookup_missed(self, reason: str) -> bool:
        """An outage probe's lookup went unanswered: True when its message goes anyway."""
        self.reason = reason
        self._lookup_misses += 1
        return self._lookup_misses % LOOKUP_MISSES == 0

    def spent(self, row_id: int) -> None:
        """A failure with no answer used one of the row's attempts (it was rescheduled)."""
        if self.open:
            self._spent.append(row_id)

    def ended(self, row_id: int, error: str) -> None:
        """A failure with no answer failed the row for good (it had no attempt left), with
        `error` as its last error."""
        if self.open:
            self._ended.append((row_id, error))

    def take_onset_ended(self) -> list[tuple[int, str]]:
        """The rows that failures before the outage failed for good, with those failures: to be
        sent again, since an outage uses no attempts, unless they failed since for another
        reason."""
        ended, self._onset_ended = self._onset_ended, []
        return ended

    def take_onset(self) -> list[int]:
        """The rows whose attempts the failures before the outage used (once each failure):
        to be given back, since an outage uses no attempts."""
        onset, self._onset = self._onset, []
        return onset

    def answered(self) -> bool:
        """The API answered (an id, or an error about the message): True if that reopened
        sending after a pause or an outage."""
        self.answers += 1
        self._failures = 0
        self._failed_recipients.clear()
        self._spent.clear()
        self._ended.clear()
        if self.open:
            return False
        lasted = self._clock() - (self.since or self._clock())
        logger.info(
            "%s resumed after a successful probe (%s for %.0fs)",
            self.whose,
            self.state.value,
            lasted,
            extra={**self._fields(self.reason, State.OPEN), "was": self.state.value},
        )
        self._enter(State.OPEN, None)
        return True

    @property
    def whose(self) -> str:
        """`sending from <phone number id>`, or `sending from every sender` for the token."""
        return "sending from every sender" if self.sender is None else f"sending from {self.sender}"

    def _fields(self, reason: str | None, state: State) -> dict[str, object]:
        """A log line's fields: the sender (none for the token), its new state and why."""
        fields: dict[str, object] = {"state": state.value, "reason": reason}
        if self.sender is not None:
            fields["sender"] = self.sender
        return fields

    def _begin_outage(self, reason: str, evidence: str) -> None:
        logger.error(
            "%s stopped by a Graph API outage: %s (%s); probing with a lookup, then one message",
            self.whose,
            evidence,
            reason,
            extra=self._fields(reason, State.OUTAGE),
        )
        self._outage_delays = expo_delays(1.0, OUTAGE_PROBE_CAP)
        self._onset += self._spent
        self._spent = []
        self._onset_ended += self._ended
        self._ended = []
        self._enter(State.OUTAGE, reason)
        self._schedule_probe()

    def _enter(self, state: State, reason: str | None) -> None:
        self.state, self.reason = state, reason
        self.since = None if state is State.OPEN else self._clock()
        self._failures = 0
        self._failed_recipients.clear()
        self._lookup_misses = 0
        self.changes += 1

    def _schedule_probe(self) -> None:
        wait = self._pause_probe if self.state is State.PAUSED else next(self._outage_delays)
        self._probe_at = self._clock() + wait
