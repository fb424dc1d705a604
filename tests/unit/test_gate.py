"""The sending gate: an outage is many rows and recipients failing with no answer between."""

from __future__ import annotations

from outbox.gate import OUTAGE_FAILURES, OUTAGE_PROBE_CAP, OUTAGE_RECIPIENTS, Gate, State


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
