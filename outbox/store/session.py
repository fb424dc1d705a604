"""What PostgreSQL knows of the connection it serves: whose socket it reads, and which backend
serves it. The daemon compares them with its own end of the connection (outbox/direct.py)."""

from __future__ import annotations

import sqlalchemy as sa

# The client's address and port as the server sees them (null over a unix socket).
CONNECTION_ENDS = sa.text(
    "SELECT host(inet_client_addr()) AS address, inet_client_port() AS port, "
    "pg_backend_pid() AS backend"
)
