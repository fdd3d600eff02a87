"""The swap of a restored copy for the live database, journaled, and its recovery.

A restore writes a journal into the state dir before it creates its scratch database and
keeps it until the swap is complete. After a crash, the next command finds the journal and
rolls the swap back (the old database live) or, once the copy holds the live name, forward:
never neither. Leftover scratch and set-aside databases, and temporary restore roles, are
found here too, for `inv status`, `inv validate` and `inv clean`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scripts.errors import StackError
from scripts.infra import crashpoints, wait
from scripts.ops import journals

if TYPE_CHECKING:
    import psycopg

    from scripts.settings import Settings

MAINTENANCE_DB = "postgres"
SCRATCH_MARK = "__restoring_"
ASIDE_MARK = "__replaced_"
ROLE_PREFIX = "aim_restore_"
LEFTOVER = re.compile(rf"(?:{SCRATCH_MARK}|{ASIDE_MARK})\d{{14}}$")


@dataclass(frozen=True)
class Journal:
    live: str  # the name being restored to (the live database, or --into's)
    scratch: str  # where the backup is loaded
    aside: str  # the live database's name while the swap runs
    role: str  # the temporary role that loaded the backup
    phase: str  # "load" (no swap yet) or "swap" (the live database may be renamed)


def journal_path(settings: Settings) -> Path:
    return journals.restore(settings)


def write_journal(settings: Settings, journal: Journal) -> None:
    from scripts.files import write_atomic

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(journal_path(settings), json.dumps(asdict(journal), indent=2) + "\n")


def read_journal(settings: Settings) -> Journal | None:
    try:
        data = json.loads(journal_path(settings).read_text())
        return Journal(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        return Journal("", "", "", "", "corrupt")


def clear_journal(settings: Settings) -> None:
    journal_path(settings).unlink(missing_ok=True)


@contextmanager
def admin(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the maintenance database as the stack's superuser."""
    from scripts.infra.database import connect

    with connect(settings, dbname=MAINTENANCE_DB, admin=True) as conn:
        yield conn


def databases(conn: psycopg.Connection[Any]) -> dict[str, bool]:
    """Every database of the server -> whether it allows connections."""
    rows = conn.execute("SELECT datname, datallowconn FROM pg_database").fetchall()
    return {str(name): bool(allowed) for name, allowed in rows}


def swap(conn: psycopg.Connection[Any], settings: Settings, journal: Journal) -> None:
    """Close the live database, end its connections, rename it aside, rename the restored
    copy into its place, open it, drop the old one. Each step is journaled first, so a crash
    anywhere leaves a state `recover` resolves."""
    from psycopg import sql

    live, scratch, aside = (
        sql.Identifier(n) for n in (journal.live, journal.scratch, journal.aside)
    )
    write_journal(settings, Journal(**{**asdict(journal), "phase": "swap"}))
    close_connections(conn, journal.scratch)  # a client in the copy would block its rename
    crashpoints.reached("restore.swap.begun")
    conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(live))
    crashpoints.reached("restore.swap.closed")
    close_connections(conn, journal.live)
    crashpoints.reached("restore.swap.emptied")
    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(live, aside))
    crashpoints.reached("restore.swap.set-aside")
    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(scratch, live))
    crashpoints.reached("restore.swap.renamed")
    conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(aside))
    crashpoints.reached("restore.swap.dropped")
    clear_journal(settings)


def close_connections(conn: psycopg.Connection[Any], database: str, timeout: float = 10) -> int:
    """End every other session in `database`; return how many there were."""
    ended = 0

    def ended_all() -> bool | None:
        nonlocal ended
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchone()
        count = int(row[0]) if row else 0
        ended += count
        return True if count == 0 else None

    if wait.until(ended_all, timeout=timeout, interval=0.1) is None:
        raise StackError(
            f"Connections to {database!r} did not close within {timeout:.0f} s: stop the "
            "application and run the command again."
        )
    return ended


def recover(settings: Settings) -> list[str]:
    """Finish or undo what a killed restore left; return what was done (for the user).

    Without a journal, a live database that is missing while a set-aside copy of it exists
    (left by an older version) is renamed back, so no later step can lose that last copy.
    """
    from psycopg import sql

    journal = read_journal(settings)
    notes: list[str] = []
    with admin(settings) as conn:
        names = databases(conn)
        if journal is None or journal.phase == "corrupt":
            notes += _rename_back_orphan(conn, settings.postgres_db, names)
            if journal is not None:
                clear_journal(settings)
            return notes
        live, scratch, aside = journal.live, journal.scratch, journal.aside
        if journal.phase == "swap" and live in names and scratch not in names:
            outcome = "the restored copy is live"  # killed after the copy took the name
        elif journal.phase == "swap" and live not in names and (aside in names or scratch in names):
            back = aside if aside in names else scratch  # the old one, else the verified copy
            conn.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(back), sql.Identifier(live)
                )
            )
            outcome = (
                "the old database is back in place"
                if back == aside
                else "the restored copy is live"
            )
        else:
            outcome = "the live database is as it was"
        if live in databases(conn) and not databases(conn)[live]:
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(
                    sql.Identifier(live)
                )
            )
        for leftover in (scratch, aside):
            if leftover in databases(conn):
                conn.execute(
                    sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(leftover))
                )
        drop_role(conn, journal.role)
        clear_journal(settings)
        notes.append(
            f"A restore of {live!r} was interrupted: {outcome}; its leftovers were removed."
        )
    return notes


def _rename_back_orphan(
    conn: psycopg.Connection[Any], live: str, names: dict[str, bool]
) -> list[str]:
    from psycopg import sql

    if live in names:
        return []
    copies = sorted(n for n in names if n.startswith(live[:40] + ASIDE_MARK))
    if not copies:
        return []
    conn.execute(
        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
            sql.Identifier(copies[-1]), sql.Identifier(live)
        )
    )
    conn.execute(
        sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(live))
    )
    return [f"Database {live!r} was missing; its copy {copies[-1]!r} was renamed back."]


def drop_role(conn: psycopg.Connection[Any], role: str) -> None:
    from psycopg import sql

    if not role:
        return
    exists = conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", [role]).fetchone()
    if exists and exists[0]:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def server_names(settings: Settings) -> list[str]:
    """Every database and role name of the stack's server ([] when it does not answer). Read
    as the application's role, with the tasks' own client: cheap enough for `inv status`."""
    from scripts.infra import probes

    try:
        rows, _ = probes.pg_query(
            probes.pg_login(settings),
            "SELECT datname FROM pg_database UNION ALL SELECT rolname FROM pg_roles",
            5,
        )
    except (OSError, probes.ProtocolError, probes.PgError):
        return []
    return [str(r[0]) for r in rows]


def leftovers(settings: Settings, names: list[str] | None = None) -> list[str]:
    """Scratch and set-aside databases and temporary restore roles that no running restore
    owns (the stack lock is not taken: a restore running now shows up too), among `names`
    (read from the server when not given)."""
    names = server_names(settings) if names is None else names
    return sorted(n for n in names if LEFTOVER.search(n) or n.startswith(ROLE_PREFIX))


def leftovers_problem(settings: Settings, names: list[str] | None = None) -> str | None:
    found = leftovers(settings, names)
    if not found:
        return None
    return (
        f"Left by interrupted restores: {', '.join(found)} (disk space, and nothing else "
        "uses them): `inv clean` removes them."
    )


def remove_leftovers(settings: Settings) -> list[str]:
    """Recover first (a set-aside copy may be the only one), then drop what is left."""
    from psycopg import sql

    recover(settings)
    found = leftovers(settings)
    if not found:
        return []
    removed = []
    with admin(settings) as conn:
        names = databases(conn)
        for name in found:
            if name in names:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
                removed.append(f"database {name}")
            else:
                drop_role(conn, name)
                removed.append(f"role {name}")
    return removed


def journal_pending(settings: Settings) -> bool:
    return journals.restore(settings).exists()


def stamp(*, fine: bool = False) -> str:
    """A name part that orders by time (restores take turns on the stack lock); `fine` adds
    microseconds, for steps that may follow each other within a second."""
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S%f" if fine else "%Y%m%d%H%M%S")
