"""The sending gate: an outage is many rows and recipients failing with no answer between; each
change of state is one log line naming the sender."""

from __future__ import annotations

import logging

import pytest

from outbox.delivery.health import OUTAGE_FAILURES, OUTAGE_PROBE_CAP, OUTAGE_RECIPIENTS, Gate, State


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail_many(gate: Gate, rows: int, recipients: int) -> bool:
    outage = False
    for row in range(rows):
        outage = gate.failed(row, f"92300000000{row % recipients}", "HTTP 500")
    return outage


def test_failures_across_rows_and_recipients_are_an_outage() -> None:
    gate = Gate(pause_probe=60)
    assert fail_many(gate, OUTAGE_FAILURES, OUTAGE_RECIPIENTS)
    assert (gate.state, gate.reason) == (State.OUTAGE, "HTTP 500")


def test_one_row_failing_again_and_again_is_not_an_outage() -> None:
    gate = Gate(pause_probe=60)
    for _ in range(50):
        assert not gate.failed(1, "923000000001", "HTTP 500")
    assert gate.open


def test_the_oldest_rows_of_a_few_recipients_failing_again_and_again_are_an_outage() -> None:
    gate = Gate(pause_probe=60)
    outage = False
    for _ in range(2):  # while nothing answers, only each recipient's oldest row is sent
        for row in range(OUTAGE_RECIPIENTS):
            outage = gate.failed(row, f"92300000000{row}", "timed out")
    assert outage


def test_failures_to_one_recipient_are_not_an_outage() -> None:
    gate = Gate(pause_probe=60)
    assert not fail_many(gate, OUTAGE_FAILURES * 4, 1)
    assert gate.open


def test_an_answer_between_failures_means_the_api_works() -> None:
    gate = Gate(pause_probe=60)
    for row in range(OUTAGE_FAILURES * 4):
        gate.failed(row, f"92300000000{row}", "HTTP 500")
        if row % (OUTAGE_FAILURES - 1) == 0:
            gate.answered()
    assert gate.open


def test_an_outage_is_probed_on_a_backoff_capped_at_thirty_seconds() -> None:
    clock = Clock()
    gate = Gate(pause_probe=60, clock=clock)
    fail_many(gate, OUTAGE_FAILURES, OUTAGE_RECIPIENTS)
    waits = []
    for _ in range(10):
        waits.append(gate.seconds_to_probe())
        clock.now += gate.seconds_to_probe()
        assert gate.probe_due()
        assert not gate.probe_due(), "one probe at a time"
    assert waits[:3] == [1.0, 2.0, 4.0]
    assert max(waits) == OUTAGE_PROBE_CAP


def test_a_successful_probe_ends_the_outage() -> None:
    gate = Gate(pause_probe=60)
    fail_many(gate, OUTAGE_FAILURES, OUTAGE_RECIPIENTS)
    assert gate.answered()
    assert gate.open
    assert gate.reason is None


def test_a_pause_is_probed_every_pause_probe_seconds() -> None:
    clock = Clock()
    gate = Gate(pause_probe=60, clock=clock)
    gate.pause("(#190) token expired")
    assert gate.state is State.PAUSED
    assert gate.seconds_to_probe() == 60
    clock.now += 60
    assert gate.probe_due()


def test_transient_failures_during_a_pause_do_not_turn_it_into_an_outage() -> None:
    gate = Gate(pause_probe=60)
    gate.pause("(#190) token expired")
    assert not fail_many(gate, OUTAGE_FAILURES, OUTAGE_RECIPIENTS)
    assert gate.state is State.PAUSED


def test_a_send_and_a_lookup_both_unanswered_are_an_outage_for_one_recipient() -> None:
    gate = Gate(pause_probe=60)
    assert not gate.failed(1, "923000000001", "timed out")
    assert gate.unreachable("timed out; a lookup of the phone number timed out", gate.answers)
    assert (gate.state, gate.reason) == (
        State.OUTAGE,
        "timed out; a lookup of the phone number timed out",
    )


def test_an_unanswered_lookup_does_not_turn_a_pause_into_an_outage() -> None:
    gate = Gate(pause_probe=60)
    gate.pause("(#131031) Business account locked")
    assert not gate.unreachable("a lookup of the phone number timed out", gate.answers)
    assert gate.state is State.PAUSED


def test_a_lookup_unanswered_after_the_api_answered_again_is_no_outage() -> None:
    """A slow lookup's verdict is stale once another send went through meanwhile."""
    gate = Gate(pause_probe=60)
    assert not gate.failed(1, "923000000001", "timed out")
    answers = gate.answers  # the lookup starts
    gate.answered()  # another row's send is accepted meanwhile
    assert not gate.unreachable("a lookup of the phone number timed out", answers)
    assert gate.open


def gate_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str | None, str, str | None]]:
    """(level, sender, state, reason) of each line the gates logged."""
    return [
        (
            r.levelname,
            getattr(r, "sender", None),
            getattr(r, "state", ""),
            getattr(r, "reason", None),
        )
        for r in caplog.records
        if r.name == "outbox.daemon"
    ]


def test_a_pause_is_one_line_when_it_begins_and_one_when_it_ends_naming_the_sender(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="outbox.daemon")
    clock = Clock()
    gate = Gate(pause_probe=60, clock=clock, sender="1234567890")
    gate.pause("(#131031) Account locked")
    gate.pause("(#131031) Account locked")  # a second row meeting it: no second line
    clock.now += 90
    gate.answered()
    assert gate_lines(caplog) == [
        ("ERROR", "1234567890", "paused", "(#131031) Account locked"),
        ("INFO", "1234567890", "ok", "(#131031) Account locked"),
    ]
    assert "sending from 1234567890 resumed after a successful probe (paused for 90s)" in (
        caplog.records[-1].getMessage()
    )


def test_an_outage_is_one_line_when_it_begins_naming_the_sender_and_the_evidence(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="outbox.daemon")
    gate = Gate(pause_probe=60, sender="1234567890")
    fail_many(gate, OUTAGE_FAILURES * 2, OUTAGE_RECIPIENTS)
    assert gate_lines(caplog) == [("ERROR", "1234567890", "outage", "HTTP 500")]
    assert (
        caplog.records[0]
        .getMessage()
        .startswith("sending from 1234567890 stopped by a Graph API outage: ")
    )


def test_the_token_gate_speaks_for_every_sender(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="outbox.daemon")
    Gate(pause_probe=60).pause("(#190) Invalid OAuth access token")
    assert caplog.records[0].getMessage().startswith("sending from every sender paused: (#190)")
    assert not hasattr(caplog.records[0], "sender")


def test_the_attempts_spent_before_an_outage_is_recognised_are_given_back() -> None:
    gate = Gate(pause_probe=60)
    for row in range(OUTAGE_FAILURES - 1):  # each failed and was rescheduled for a retry
        assert not gate.failed(row, f"92300000000{row % OUTAGE_RECIPIENTS}", "HTTP 500")
        gate.spent(row)
    assert gate.take_onset() == []  # no outage yet: genuine failures, so far
    assert gate.failed(99, "923000000009", "HTTP 500")
    assert sorted(gate.take_onset()) == list(range(OUTAGE_FAILURES - 1))
    assert gate.take_onset() == []


def test_attempts_spent_before_an_answer_are_not_given_back() -> None:
    gate = Gate(pause_probe=60)
    gate.failed(1, "923000000001", "HTTP 500")
    gate.spent(1)
    gate.answered()
    assert fail_many(gate, OUTAGE_FAILURES, OUTAGE_RECIPIENTS)
    assert gate.take_onset() == []
