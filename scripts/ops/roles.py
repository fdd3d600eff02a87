"""The stack's two PostgreSQL roles: the application's (owns its database, no superuser) and
the admin (the superuser the tasks use for what needs one: restores, password changes).

Owns bringing a stack made before the split (its application role the superuser) to it, and
making both roles take the passwords in the env file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scripts.console import display_path
from scripts.errors import StackError
from scripts.infra import probes, scram

if TYPE_CHECKING:
    from scripts.backends.base import Backend
    from scripts.settings import Settings

# What the application's role may and may not do (docker/init-scripts/00-roles.sh says why).
APP_ROLE_ATTRIBUTES = "LOGIN CREATEDB NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS"


def ensure(settings: Settings, backend: Backend) -> list[str]:
    """With the stack answering as the application's role: split the roles of a stack made
    before the split, and make the admin log in with its password; return what was done.

    Cheap when nothing is to do: one login, as the admin, with the tasks' own client (no
    psycopg), which finds the application's role no superuser. A second login cost every
    `inv up-core` 10 ms here."""
    try:
        rows, _ = probes.pg_query(
            probes.pg_login(settings, admin=True, dbname="postgres"),
            "SELECT rolname FROM pg_roles WHERE rolsuper",
            10,
        )
    except (OSError, probes.PgError, probes.ProtocolError):
        rows = None  # no admin yet, or not with this password: the careful way says which
    if rows is not None and (settings.postgres_user,) not in rows:
        return []
    return _ensure(settings, backend)


def _ensure(settings: Settings, backend: Backend) -> list[str]:
    rows, _ = probes.pg_query(
        probes.pg_login(settings), "SELECT rolsuper FROM pg_roles WHERE rolname = current_user", 10
    )
    done = []
    if rows and rows[0][0] == "t":
        _split(settings)
        done.append(
            f"postgres: the application's role {settings.postgres_user} is no superuser any "
            f"more; the tasks use {settings.postgres_admin_user} where they need one "
            f"(POSTGRES_ADMIN_PASSWORD in {display_path(settings.env_file)})."
        )
    admin = probes.probe_postgres(
        probes.pg_login(settings, admin=True, dbname="postgres"), timeout=10
    )
    if admin.auth_failed:
        how = backend.apply_password("postgres")
        again = probes.probe_postgres(
            probes.pg_login(settings, admin=True, dbname="postgres"), timeout=10
        )
        if not again.ok:
            raise StackError(
                f"PostgreSQL refuses POSTGRES_ADMIN_PASSWORD even after applying it ({how}): "
                f"{again.detail}. See `inv logs -s postgres`."
            )
        done.append(f"postgres: the admin's password changed to the one in the env file ({how}).")
    elif not admin.ok:
        raise StackError(
            f"The admin role {settings.postgres_admin_user} cannot log in ({admin.detail}): "
            f"check POSTGRES_ADMIN_USER in {display_path(settings.env_file)}."
        )
    return done


def _split(settings: Settings) -> None:
    """Make the admin role (the superuser from now on), then take superuser away from the
    application's role, which keeps owning its database and everything in it."""
    from psycopg import sql

    from scripts.infra.database import connect

    admin = sql.Identifier(settings.postgres_admin_user)
    verifier = sql.Literal(scram.scram_verifier(settings.postgres_admin_password.reveal()))
    with connect(settings, dbname="postgres") as conn:  # as the application: still superuser
        conn.execute("SET log_statement = 'none'")
        exists = conn.execute(
            "SELECT count(*) FROM pg_roles WHERE rolname = %s", [settings.postgres_admin_user]
        ).fetchone()
        verb = "ALTER" if exists and exists[0] else "CREATE"
        conn.execute(sql.SQL(verb + " ROLE {} LOGIN SUPERUSER PASSWORD {}").format(admin, verifier))
    with connect(settings, dbname="postgres", admin=True) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} " + APP_ROLE_ATTRIBUTES).format(
                sql.Identifier(settings.postgres_user)
            )
        )
