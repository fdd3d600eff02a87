"""Connections to the stack's PostgreSQL with psycopg, and PostgreSQL's errors in one line.

Every task that talks SQL (backups, restores, migrations, seeding, diagrams, validate)
connects here, so a stack that is down or a bad DATABASE_URL reads the same everywhere.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from scripts.console import display_path
from scripts.errors import StackError

if TYPE_CHECKING:
    import psycopg

    from scripts.settings import Settings


def connect(
    settings: Settings, *, dbname: str | None = None, autocommit: bool = True
) -> psycopg.Connection[tuple[Any, ...]]:
    """The stack's database (or another database of its server); failing is a StackError."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    conninfo = settings.database_url.reveal()
    try:
        if dbname is not None:
            conninfo = make_conninfo(conninfo, dbname=dbname)
        return psycopg.connect(conninfo, autocommit=autocommit, connect_timeout=10)
    except psycopg.ProgrammingError:  # libpq may quote the malformed URL, password included
        raise StackError(
            f"DATABASE_URL in {display_path(settings.env_file)} is not a PostgreSQL URL: fix it "
            "or remove it to have it derived from the POSTGRES_* settings."
        ) from None
    except psycopg.OperationalError as exc:
        raise StackError(
            f"Cannot connect to PostgreSQL ({describe(exc)}): start the stack with `inv up-core` "
            f"and check DATABASE_URL in {display_path(settings.env_file)}."
        ) from None


def describe(exc: Exception) -> str:
    """PostgreSQL's own message for an error, one line, without libpq's connection prefix."""
    diag = getattr(exc, "diag", None)
    if primary := getattr(diag, "message_primary", None):
        return str(primary).rstrip(".")
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return re.sub(r"^.*failed:\s*(?:FATAL:\s*)?", "", first).rstrip(".") or type(exc).__name__
