"""Whether a connection reaches PostgreSQL itself, with no pooler or proxy in between: then the
daemon may keep its statements prepared on the server (pool.py), which a pooler in transaction
mode (PgBouncer before 1.21, or without max_prepared_statements) would break.

Proved, never guessed. Over TCP the server sees the client at our socket's own address and port,
and itself where our socket's other end is, only when nothing sits in between (a pooler or proxy
opens its own connections to the server). Each connection proves it for itself (pool.py).
Over a unix socket on Linux our peer is whoever listens: PostgreSQL's postmaster, the parent of
the backend serving us, or a pooler. Anything else (another system, a container's pid
namespace, an error) is "not proved": statements then stay unnamed, which costs planning only.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
from pathlib import Path
from typing import Any

import asyncpg

from outbox.connections import fetch_one
from outbox.store import session

logger = logging.getLogger("outbox.database")


async def reaches_postgres_itself(conn: asyncpg.Connection) -> bool:
    """True when `conn` is proved to be served by PostgreSQL directly (see the module)."""
    try:
        ends = await fetch_one(conn, session.CONNECTION_ENDS)
        ours = _socket(conn)
        if ends is None or ours is None:
            return False
        if ours.family in (socket.AF_INET, socket.AF_INET6):
            return _same_tcp_end(
                ours.getsockname(), ends["address"], ends["port"]
            ) and _same_tcp_end(ours.getpeername(), ends["server_address"], ends["server_port"])
        if ours.family == socket.AF_UNIX and ends["address"] is None:
            return _listener_is_parent_of(ours, int(ends["backend"]))
    except Exception as exc:  # not proved: statements stay unnamed
        logger.debug("could not tell whether the connection is direct (%r)", exc)
    return False


def _socket(conn: asyncpg.Connection) -> Any:
    """The connection's socket (asyncio's TransportSocket, uvloop's pseudo-socket), or None."""
    transport: Any = getattr(conn, "_transport", None)
    found = None if transport is None else transport.get_extra_info("socket")
    return found if hasattr(found, "family") and hasattr(found, "getsockopt") else None


def _same_tcp_end(ours: Any, address: str | None, port: int | None) -> bool:
    if address is None or port is None or not isinstance(ours, tuple):
        return False
    return bool(_ip(ours[0]) == _ip(address) and ours[1] == port)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _listener_is_parent_of(ours: Any, backend: int) -> bool:
    """Linux: the process listening on the socket we reached is the backend's parent."""
    peer_credentials = getattr(socket, "SO_PEERCRED", None)
    if peer_credentials is None:
        return False
    credentials: bytes = ours.getsockopt(socket.SOL_SOCKET, peer_credentials, 12)
    pid, _, _ = struct.unpack("3i", credentials)
    status = Path(f"/proc/{backend}/status").read_text()
    parent = next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), None
    )
    return bool(pid > 0 and parent == pid)
