"""outbox beside the app's own alembic history in one database: each records its revisions in
its own version table, each autogenerate ignores the other's tables, in either order."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg2
import pytest

from outbox import migrate
from tests.conftest import ROOT
from tests.integration.test_migrations import BIN, run

APP = Path(__file__).resolve().parent / "app_alembic"


def app_alembic(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run(
        [str(BIN / "alembic"), "-c", str(APP / "alembic.ini"), *args],
        APP,
        database_url,
        APP_DATABASE_URL=database_url,
    )


def outbox_migrate(database_url: str) -> subprocess.CompletedProcess[str]:
    return run([str(BIN / "outbox"), "migrate"], ROOT, database_url)


def versions(database_url: str, table: str) -> list[str]:
    connection = psycopg2.connect(database_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT version_num FROM {table}")
            return [row[0] for row in cursor.fetchall()]
    finally:
        connection.close()


def assert_both_clean(database_url: str) -> None:
    app = app_alembic(database_url, "check")
    assert app.returncode == 0, app.stderr
    ours = run([str(BIN / "alembic"), "check"], ROOT, database_url)
    assert ours.returncode == 0, ours.stderr
    assert versions(database_url, "alembic_version") == ["a1b2c3d4e5f6"]
    assert versions(database_url, "outbox_alembic_version") == [migrate.head_revision()]


@pytest.mark.parametrize("app_first", [True, False])
def test_app_and_outbox_revisions_coexist_in_either_order(
    empty_database_url: str, app_first: bool
) -> None:
    steps = [lambda: app_alembic(empty_database_url, "upgrade", "head")]
    steps.insert(0 if not app_first else 1, lambda: outbox_migrate(empty_database_url))
    for step in steps:
        done = step()
        assert done.returncode == 0, done.stderr
    assert_both_clean(empty_database_url)


def test_an_outbox_revision_in_alembic_version_is_moved_to_its_own_table(
    empty_database_url: str,
) -> None:
    """A database migrated before outbox had its own version table."""
    assert outbox_migrate(empty_database_url).returncode == 0
    connection = psycopg2.connect(empty_database_url)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE outbox_alembic_version")
            cursor.execute(  # exactly as alembic creates its default version table
                "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
            )
            cursor.execute("INSERT INTO alembic_version VALUES (%s)", (migrate.head_revision(),))
    finally:
        connection.close()
    migrated = outbox_migrate(empty_database_url)
    assert migrated.returncode == 0, migrated.stderr
    assert versions(empty_database_url, "outbox_alembic_version") == [migrate.head_revision()]
    app = app_alembic(empty_database_url, "upgrade", "head")
    assert app.returncode == 0, app.stderr
    assert_both_clean(empty_database_url)


def test_the_apps_autogenerate_sees_no_outbox_table_to_drop(empty_database_url: str) -> None:
    assert outbox_migrate(empty_database_url).returncode == 0
    assert app_alembic(empty_database_url, "upgrade", "head").returncode == 0
    checked = app_alembic(empty_database_url, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "outbox_messages" not in checked.stdout + checked.stderr


def test_include_object_hides_only_outbox_tables() -> None:
    import sqlalchemy as sa

    from outbox.schema import messages

    bookings = sa.Table("bookings", sa.MetaData(), sa.Column("id", sa.Integer))
    assert not migrate.include_object(messages, "outbox_messages", "table", True, None)
    assert not migrate.include_object(messages.c.status, "status", "column", True, None)
    assert migrate.include_object(bookings, "bookings", "table", True, None)
    assert migrate.include_object(bookings.c.id, "id", "column", True, None)
