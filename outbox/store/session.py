"""What PostgreSQL knows of the connection it serves: whose socket it reads, and which backend
serves it. The daemon compares them with its own end of the connection (outbox/direct.py)."""

from __future__ import annotations

import sqlalchemy as sa

# Both ends of the connection as the server sees them (null over a unix socket), and the
# backend serving it.
CONNECTION_ENDS = sa.text(
    "SELECT host(inet_client_addr()) AS address, inet_client_port() AS port, "
    "host(inet_server_addr()) AS server_address, inet_server_port() AS server_port, "
    "pg_backend_pid() AS backend"
)
