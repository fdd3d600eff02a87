"""Least privilege: the application's role owns its database and nothing more.

It cannot run programs on the server, change the server's configuration or create roles;
its own work (DDL in its database, the migrations, the seed) works as that role. The tasks
use the admin role only where they must.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from scripts.ops import migrations, seed
from scripts.settings import Settings
from tests.integration.helpers import ensure_up


def _app(stack: Settings, dbname: str | None = None) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(make_conninfo(**stack.pg_conninfo(dbname)), autocommit=True)


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        (
            "COPY (SELECT 1) TO PROGRAM 'id'",
            "must be superuser or have privileges of the pg_execute_server_program role",
        ),
        ("ALTER SYSTEM SET work_mem = '1MB'", 'permission denied to set parameter "work_mem"'),
        ("CREATE ROLE intruder", "permission denied to create role"),
        ("ALTER ROLE CURRENT_USER SUPERUSER", "must be superuser to alter superuser roles"),
        ("CREATE EXTENSION IF NOT EXISTS dblink", "permission denied to create extension"),
    ],
    ids=["copy-to-program", "alter-system", "create-role", "become-superuser", "dblink"],
)
def test_the_application_role_cannot_reach_beyond_its_database(
    stack: Settings, statement: str, error: str
) -> None:
    ensure_up(stack)
    with _app(stack) as conn, pytest.raises(psycopg.Error) as refused:
        conn.execute(statement)
    assert error in str(refused.value)


def test_the_application_role_owns_its_database_and_everything_in_it(stack: Settings) -> None:
    ensure_up(stack)
    with _app(stack) as conn:
        row = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert row == (False, False, True)
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        ).fetchone()
        assert owner == (stack.postgres_user,)
        others = conn.execute(
            "SELECT count(*) FROM pg_tables "
            "WHERE schemaname = 'public' AND tableowner <> current_user"
        ).fetchone()
        assert others == (0,)


def test_the_applications_own_work_runs_as_its_role(stack: Settings, tmp_path: Path) -> None:
    """DDL in its database, a migration and the dev seed, all as the application's role."""
    ensure_up(stack)
    name = f"m{uuid.uuid4().hex[:8]}"
    (tmp_path / f"9000_{name}.sql").write_text(
        f"CREATE TABLE {name} (id uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE);\n",
        encoding="utf-8",
    )
    try:
        applied = migrations.migrate(stack, tmp_path)
        assert [a.name for a in applied] == [name]
        assert seed.seed(stack)["users"] >= 9
        with _app(stack) as conn:
            conn.execute(f"ALTER TABLE {name} ADD COLUMN note text")
            assert conn.execute(
                "SELECT tableowner FROM pg_tables WHERE tablename = %s", [name]
            ).fetchone() == (stack.postgres_user,)
    finally:
        with _app(stack) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {name}")
            conn.execute("DELETE FROM schema_migrations WHERE version = '9000'")


def test_the_admin_role_is_the_superuser_and_not_the_applications(stack: Settings) -> None:
    ensure_up(stack)
    admin = make_conninfo(**stack.pg_conninfo("postgres", admin=True))
    with psycopg.connect(admin, autocommit=True) as conn:
        assert conn.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone() == (True,)
    assert stack.postgres_admin_user != stack.postgres_user
