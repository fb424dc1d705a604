"""Which database errors are an outage to wait out, and which are the statement's own fault."""

from __future__ import annotations

import asyncpg
import pytest

from outbox.database import is_connection_error


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.exceptions.ReadOnlySQLTransactionError("cannot execute UPDATE in a read-only"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.CrashShutdownError("terminating connection: another server crashed"),
        asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.CannotConnectNowError("the database system is in recovery mode"),
        asyncpg.exceptions.IdleSessionTimeoutError("terminating connection: idle-session timeout"),
        asyncpg.exceptions.ConnectionFailureError("server closed the connection unexpectedly"),
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "Connection reset by peer"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
        asyncpg.exceptions.InternalClientError("another operation (2) is in progress"),
        # a prepared statement (OUTBOX_PREPARED_STATEMENTS) outlived a migration: prepared again
        asyncpg.exceptions.InvalidCachedStatementError("cached statement plan is invalid"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_errors_a_failover_or_a_busy_server_raises_are_waited_out(error: Exception) -> None:
    assert is_connection_error(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.NotNullViolationError("null value in column"),
        asyncpg.exceptions.InvalidTextRepresentationError("invalid input syntax"),
        asyncpg.exceptions.UndefinedTableError("relation does not exist"),
        asyncpg.exceptions.FeatureNotSupportedError("not supported"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_errors_about_the_statement_or_its_data_are_not(error: Exception) -> None:
    assert not is_connection_error(error)
