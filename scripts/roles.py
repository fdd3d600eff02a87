"""The stack's two PostgreSQL roles: the application's (owns its database, no superuser) and
the admin (the superuser the tasks use for what needs one: restores, password changes).

Owns bringing a stack made before the split (its application role the superuser) to it, and
making both roles take the passwords in the env file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scripts import probes
from scripts.console import display_path
from scripts.errors import StackError

if TYPE_CHECKING:
    from scripts.backends import Backend
    from scripts.settings import Settings

# What the application's role may and may not do (docker/init-scripts/00-roles.sh says why).
APP_ROLE_ATTRIBUTES = "LOGIN CREATEDB NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS"


def login(settings: Settings, *, admin: bool = False, dbname: str | None = None) -> probes.PgLogin:
    """How the tasks' own client (scripts.probes) logs in: as the application or the admin."""
    info = settings.pg_conninfo(dbname, admin=admin)
    return probes.PgLogin(
        info["host"], int(info["port"]), info["user"], info["password"], info["dbname"]
    )


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def password_sql(settings: Settings) -> str:
    """SQL that gives both roles the passwords of the env file, as SCRAM verifiers (no
    statement, log or command line ever holds a password). The admin role is skipped where
    it does not exist yet (a stack from before the split: `ensure` makes it)."""
    app = probes.scram_verifier(settings.postgres_password.reveal())
    statements = [
        "SET log_statement = 'none'",
        f"ALTER ROLE {quote_ident(settings.postgres_user)} PASSWORD {quote_literal(app)}",
    ]
    if settings.postgres_admin_password:
        admin_name = settings.postgres_admin_user
        admin = probes.scram_verifier(settings.postgres_admin_password.reveal())
        statements.append(
            "DO $stack$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = "
            f"{quote_literal(admin_name)}) THEN ALTER ROLE {quote_ident(admin_name)} PASSWORD "
            f"{quote_literal(admin)}; END IF; END $stack$"
        )
    return ";\n".join(statements) + ";\n"


def ensure(settings: Settings, backend: Backend) -> list[str]:
    """With the stack answering as the application's role: split the roles of a stack made
    before the split, and make the admin log in with its password; return what was done.

    Cheap when nothing is to do (two logins with the tasks' own client, no psycopg)."""
    rows, _ = probes.pg_query(
        login(settings), "SELECT rolsuper FROM pg_roles WHERE rolname = current_user", 10
    )
    done = []
    if rows and rows[0][0] == "t":
        _split(settings)
        done.append(
            f"postgres: the application's role {settings.postgres_user} is no superuser any "
            f"more; the tasks use {settings.postgres_admin_user} where they need one "
            f"(POSTGRES_ADMIN_PASSWORD in {display_path(settings.env_file)})."
        )
    admin = probes.probe_postgres(login(settings, admin=True, dbname="postgres"), timeout=10)
    if admin.auth_failed:
        how = backend.apply_password("postgres")
        again = probes.probe_postgres(login(settings, admin=True, dbname="postgres"), timeout=10)
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

    from scripts.database import connect

    admin = sql.Identifier(settings.postgres_admin_user)
    verifier = sql.Literal(probes.scram_verifier(settings.postgres_admin_password.reveal()))
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
