"""Which account errors pause one sender and which pause them all, and what each sender sees."""

from __future__ import annotations

import pytest

from outbox.delivery.senders import Senders
from outbox.errors import GraphError
from outbox.retry import pauses_every_sender


def graph(code: int, subcode: int | None = None) -> GraphError:
    return GraphError(http_status=400, code=code, message="refused", subcode=subcode)


@pytest.mark.parametrize("code", [0, 3, 10, 190, 200, 299])
def test_a_token_or_permission_error_pauses_every_sender(code: int) -> None:
    assert pauses_every_sender(graph(code))


@pytest.mark.parametrize(
    ("code", "subcode"), [(131031, None), (368, None), (100, 33), (131042, None)]
)
def test_a_phone_number_s_own_account_error_pauses_that_sender_alone(
    code: int, subcode: int | None
) -> None:
    assert not pauses_every_sender(graph(code, subcode))


def test_a_paused_sender_stops_only_itself() -> None:
    senders = Senders("111", pause_probe=60)
    senders.gate("222").pause("locked")
    assert (senders.open("111"), senders.open("222")) == (True, False)
    assert senders.stopped() == ["222"]


def test_a_paused_token_stops_every_sender_and_an_answer_reopens_it() -> None:
    senders = Senders("111", pause_probe=60)
    senders.token.pause("(#190) token expired")
    assert not senders.open("111")
    assert not senders.open("222")
    assert senders.state("222")[1] == "(#190) token expired"
    assert senders.answered("222")
    assert senders.open("111")
