"""Each sender's sending state, so that one blocked phone number never stops the others.

A sender (phone number id) has its own Gate: paused by its own account errors (131031 locked,
368 policy block, 100/33 unknown id, ...), in an outage of its own, probed on its own. The access
token has one more Gate above them all: a token error (190, a permission error) pauses every
sender the token serves, and one probe from any sender finds out when it works again. Above
both, an operator's pause (`outbox pause`, read from the database) holds a sender, or every
sender, until `outbox resume`: no probe lifts it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from outbox.delivery.health import Gate, State
from outbox.delivery.pauses import OperatorHold


class Senders:
    """The token's gate and every sender's gate, created on first use."""

    def __init__(
        self, default: str, pause_probe: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.default = default
        self._pause_probe = pause_probe
        self._clock = clock
        self.token = Gate(pause_probe, clock)
        self._gates: dict[str, Gate] = {}
        self.operator = OperatorHold()

    def gate(self, sender: str) -> Gate:
        """The sender's own gate (its account errors, outages and probes)."""
        gate = self._gates.get(sender)
        if gate is None:
            gate = self._gates[sender] = Gate(self._pause_probe, self._clock, sender=sender)
        return gate

    def open(self, sender: str) -> bool:
        """Whether rows from this sender may be sent now (no operator pause holds it, the token
        works and so does it)."""
        return not self.operator.holds(sender) and self.token.open and self.gate(sender).open

    def stopped(self) -> list[str]:
        """The senders whose own gate is closed: their rows are not claimed."""
        return [sender for sender, gate in self._gates.items() if not gate.open]

    def paused(self) -> list[str]:
        """The senders paused by an account error of their own (not by an outage), or one by
        one by an operator."""
        own = [sender for sender, gate in self._gates.items() if gate.state is State.PAUSED]
        return sorted(set(own) | set(self.operator.senders()))

    def known(self) -> dict[str, Gate]:
        return dict(self._gates)

    def answered(self, sender: str) -> bool:
        """The API answered for this sender: the token works, and so does the sender. True if
        that reopened sending (a successful probe)."""
        reopened_token = self.token.answered()
        reopened_sender = self.gate(sender).answered()
        return reopened_token or reopened_sender

    def state(self, sender: str) -> tuple[State, str | None]:
        """The effective state of a sender: an operator's pause, else the token's when it is
        closed, else its own."""
        if self.operator.holds(sender):
            return State.PAUSED, self.operator.reason(sender)
        if not self.token.open:
            return self.token.state, self.token.reason
        gate = self.gate(sender)
        return gate.state, gate.reason

    def closed(self) -> list[Gate]:
        """Every closed gate, the token's first."""
        gates = [self.token] if not self.token.open else []
        return gates + [gate for gate in self._gates.values() if not gate.open]
