"""Connections to the stack's PostgreSQL with psycopg, and PostgreSQL's errors in one line.

Every task that talks SQL (backups, restores, migrations, seeding, diagrams, validate)
connects here, to the stack's own server as the POSTGRES_* settings say: never through
DATABASE_URL, which is the application's and may point anywhere.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from scripts.console import display_path
from scripts.errors import StackError
from scripts.infra.scram import scram_verifier
from scripts.names import MAIN

if TYPE_CHECKING:
    import psycopg

    from scripts.settings import Settings


def connect(
    settings: Settings, *, dbname: str | None = None, autocommit: bool = True, admin: bool = False
) -> psycopg.Connection[tuple[Any, ...]]:
    """The stack's database (or another database of its server), as the application's role
    or, with `admin`, as the stack's superuser; failing is a StackError."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    try:
        return psycopg.connect(
            make_conninfo(**settings.pg_conninfo(dbname, admin=admin)),
            autocommit=autocommit,
            connect_timeout=10,
        )
    except psycopg.OperationalError as exc:
        address = f"{settings.connect_host}:{settings.postgres_port}"
        reason = describe(exc)
        if "password authentication failed" in reason:
            key = "POSTGRES_ADMIN_PASSWORD" if admin else "POSTGRES_PASSWORD"
            raise StackError(
                f"PostgreSQL on {address} refuses {key} ({reason}): if you changed it in "
                f"{display_path(settings.env_file)}, `inv up-core` applies it."
            ) from None
        if "too many clients" in reason or "remaining connection slots" in reason:
            raise StackError(
                f"PostgreSQL on {address} has no free connection ({reason}): close some of the "
                "application's connections (or restart it) and try again."
            ) from None
        if "does not exist" in reason and dbname is None and settings.postgres_branch != MAIN:
            raise StackError(
                f"POSTGRES_BRANCH={settings.postgres_branch} names no database ({reason}): "
                "`inv db.branch --list` shows the branches; `inv db.branch --switch main` goes "
                "back to the stack's own."
            ) from None
        if "Connection refused" in reason:
            reason = f"nothing listens on {address}"
        raise StackError(
            f"Cannot connect to PostgreSQL ({reason}): start it with `inv up-core`."
        ) from None


def describe(exc: Exception) -> str:
    """PostgreSQL's own message for an error, one line, without libpq's connection prefix."""
    diag = getattr(exc, "diag", None)
    if primary := getattr(diag, "message_primary", None):
        return str(primary).rstrip(".")
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return re.sub(r"^.*failed:\s*(?:FATAL:\s*)?", "", first).rstrip(".") or type(exc).__name__


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def password_sql(settings: Settings) -> str:
    """SQL that gives both roles the passwords of the env file, as SCRAM verifiers (no
    statement, log or command line ever holds a password). The admin role is skipped where
    it does not exist yet (a stack from before the split: `ensure` makes it)."""
    app = scram_verifier(settings.postgres_password.reveal())
    statements = [
        "SET log_statement = 'none'",
        f"ALTER ROLE {quote_ident(settings.postgres_user)} PASSWORD {quote_literal(app)}",
    ]
    if settings.postgres_admin_password:
        admin_name = settings.postgres_admin_user
        admin = scram_verifier(settings.postgres_admin_password.reveal())
        statements.append(
            "DO $stack$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = "
            f"{quote_literal(admin_name)}) THEN ALTER ROLE {quote_ident(admin_name)} PASSWORD "
            f"{quote_literal(admin)}; END IF; END $stack$"
        )
    return ";\n".join(statements) + ";\n"
