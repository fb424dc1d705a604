"""A request's quick retries (outbox/delivery/request.py): transient failures are retried in
process, however many tries are allowed; anything else goes to the row's outcome at once."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from outbox.delivery.claim import Claim
from outbox.delivery.request import Requests
from outbox.errors import GraphError, InDoubt, SendError, TransportError
from outbox.settings import Settings
from outbox.whatsapp import Part


def _requests(tries: int, failures: list[SendError]) -> tuple[Requests, list[int]]:
    """Requests whose one request fails with `failures` in turn, then is accepted."""
    settings = Settings(quick_retries=tries, quick_retry_delay=0.0)
    none: Any = None
    requests = Requests(settings, none, none, none, none, none, none, installation="i", media=None)
    made = [0]

    async def request(*_: Any) -> str:
        made[0] += 1
        if failures:
            raise failures.pop(0)
        return "wamid.OK"

    requests._send_once = request  # type: ignore[method-assign]
    return requests, made


def _claim() -> Claim:
    return Claim(
        id=1,
        recipient="923001234567",
        message="hi",
        media=None,
        template=None,
        accepted=0,
        attempts=1,
        in_doubt=False,
        token=uuid.uuid4(),
        lease_until=0.0,
    )


async def test_many_quick_retries_allowed_are_made_without_the_delay_overflowing() -> None:
    requests, made = _requests(1100, [TransportError("reset")] * 1099)
    assert await requests._send(_claim(), "923001234567", Part("text", body="hi"), 0) == "wamid.OK"
    assert made[0] == 1100


@pytest.mark.parametrize(
    "error",
    [InDoubt("timed out"), GraphError(http_status=400, code=100, message="bad")],
    ids=["in doubt", "permanent"],
)
async def test_a_send_in_doubt_or_refused_for_good_is_never_retried_quickly(
    error: SendError,
) -> None:
    requests, made = _requests(3, [error])
    with pytest.raises(type(error)):
        await requests._send(_claim(), "923001234567", Part("text", body="hi"), 0)
    assert made[0] == 1


async def test_the_last_allowed_try_failing_raises_its_error() -> None:
    requests, made = _requests(3, [TransportError("reset")] * 3)
    with pytest.raises(TransportError):
        await requests._send(_claim(), "923001234567", Part("text", body="hi"), 0)
    assert made[0] == 3
