"""Whether the Graph API's host can be connected to at all, so that `outbox run` refuses a wrong
META_GRAPH_API_URL at startup instead of waiting out an outage that never ends.

Only a definite no refuses: a name that does not resolve, a connection refused, no route to the
host. A host that accepts the connection is fine whatever it answers later (the daemon handles
errors and outages), and so is one that does not answer in time: a slow network at boot is not a
wrong setting.
"""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

CONNECT_TIMEOUT = 5.0  # a connection not made by then: the network is slow, not the URL wrong


@dataclass(frozen=True)
class Refusal:
    """Why the host cannot be connected to; `resolved`: the name resolved (then the host may
    yet start listening, a name that does not resolve is wrong)."""

    reason: str
    resolved: bool


class NotAnswering(Exception):
    """The host did not take or refuse a connection in time: it may yet (not a refusal)."""


def host_and_port(url: str) -> tuple[str, int]:
    """The host and port an http(s) URL connects to (443 or 80 when it names none)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url}: not a valid port") from None
    if not parts.hostname:
        raise ValueError(f"{url}: no host")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def refusal(host: str, port: int, *, within: float = CONNECT_TIMEOUT) -> Refusal | None:
    """Why `host:port` cannot be connected to (the name does not resolve, the connection is
    refused, no route), or None once a TCP connection was made (and closed at once).
    Raises NotAnswering when neither happens within `within` seconds."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(within):
            try:
                addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                return Refusal(f"cannot resolve the host {host} ({exc.strerror or exc})", False)
            problems: list[str] = []
            for family, kind, proto, _, address in addresses:
                sock = socket.socket(family, kind, proto)
                sock.setblocking(False)
                try:
                    await loop.sock_connect(sock, address)
                    return None
                except OSError as exc:
                    # asyncio's strerror is "Connect call failed (...)": say what the errno says.
                    problem = os.strerror(exc.errno) if exc.errno else str(exc)
                    if problem not in problems:
                        problems.append(problem)
                finally:
                    sock.close()
            return Refusal(f"cannot connect to {host} port {port} ({'; '.join(problems)})", True)
    except TimeoutError:
        raise NotAnswering(f"{host} port {port} did not answer within {within:.0f}s") from None
