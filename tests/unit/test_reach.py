"""Whether the Graph API's host can be connected to: only a definite no is a refusal."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from outbox.delivery import reach


@pytest.fixture
def listening() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections (and answers nothing)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_host_that_accepts_a_connection_is_no_refusal(listening: int) -> None:
    assert await reach.refusal("127.0.0.1", listening) is None


async def test_a_port_nothing_listens_on_is_refused_after_the_name_resolved(
    closed_port: int,
) -> None:
    refusal = await reach.refusal("127.0.0.1", closed_port)
    assert refusal is not None
    assert refusal.resolved
    assert refusal.reason == f"cannot connect to 127.0.0.1 port {closed_port} (Connection refused)"


async def test_a_name_that_does_not_resolve_is_refused_as_unresolved() -> None:
    refusal = await reach.refusal("graph.example.invalid", 443)
    assert refusal is not None
    assert not refusal.resolved
    assert refusal.reason.startswith("cannot resolve the host graph.example.invalid (")


async def test_a_connection_that_does_not_complete_in_time_is_not_answering(
    listening: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hang(sock: socket.socket, address: object) -> None:
        await asyncio.sleep(60)

    monkeypatch.setattr(asyncio.get_running_loop(), "sock_connect", hang)
    with pytest.raises(reach.NotAnswering, match="did not answer within 0s"):
        await reach.refusal("127.0.0.1", listening, within=0.2)


@pytest.mark.parametrize(
    ("url", "host_and_port"),
    [
        ("https://graph.facebook.com", ("graph.facebook.com", 443)),
        ("http://127.0.0.1:8099", ("127.0.0.1", 8099)),
        ("http://localhost/", ("localhost", 80)),
        ("https://[::1]:8443/graph", ("::1", 8443)),
    ],
)
def test_the_host_and_port_of_a_graph_api_url(url: str, host_and_port: tuple[str, int]) -> None:
    assert reach.host_and_port(url) == host_and_port


@pytest.mark.parametrize("url", ["http://:8099", "http://host:99999"])
def test_a_url_without_a_usable_host_or_port_is_a_value_error(url: str) -> None:
    with pytest.raises(ValueError, match=url.replace("/", "/")):
        reach.host_and_port(url)
