"""131049, Meta's per-user marketing limit: a growing deferral, not a failure (issue 16, 4)."""

from __future__ import annotations

from outbox.errors import GraphError
from outbox.retry import Defer, Fail, decide

LIMITED = GraphError(
    http_status=400,
    code=131049,
    message="This message was not delivered to maintain healthy ecosystem engagement.",
)


def outcome(attempts: int) -> object:
    return decide(LIMITED, attempts=attempts, max_attempts=10, base_delay=1.0)


def test_the_first_131049_defers_the_row_24_hours() -> None:
    assert outcome(1) == Defer(24 * 3600.0, str(LIMITED))


def test_each_next_131049_defers_it_a_day_longer() -> None:
    assert [o.delay / 3600 for o in map(outcome, (2, 3)) if isinstance(o, Defer)] == [48, 72]


def test_a_131049_on_the_last_attempt_fails_the_row() -> None:
    assert isinstance(outcome(10), Fail)
