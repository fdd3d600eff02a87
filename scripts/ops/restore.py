"""Restores that never lose data: verify the file, restore it into a scratch database as a
role with no rights beyond it, check the result, then swap it in for the live database.

A restore ends in one of two states only: the old database live, or the new one (the swap
is journaled: scripts/ops/swap.py). A file that is incomplete, damaged, or of another
database never gets past the checks (scripts/ops/restore_checks.py); a replacing restore
takes a safety backup first.
"""

from __future__ import annotations

import contextlib
import gzip
import re
import secrets
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scripts.console import Progress, display_path
from scripts.errors import StackError, UsageError
from scripts.infra import crashpoints, plainsql, run
from scripts.ops import backup_files, backups, swap
from scripts.ops.progress import watched
from scripts.ops.restore_checks import Checked, check_into, check_origin

_CHUNK = 1 << 20

if TYPE_CHECKING:
    import psycopg

    from scripts.backends.base import Backend
    from scripts.settings import Settings


@dataclass(frozen=True)
class RestoreResult:
    database: str
    replaced: bool  # True when the live database was swapped out
    counts: dict[str, int]
    seconds: float
    safety_backup: Path | None


def restore(
    settings: Settings,
    backend: Backend,
    checked: Checked,
    *,
    into: str | None = None,
    jobs: int = 2,
    force_other_database: bool = False,
    safety_backup: bool = True,
    progress: Progress | None = None,
) -> RestoreResult:
    """Restore into a scratch database, check it, then swap it in (or keep it as `into`)."""
    import psycopg

    if jobs < 1:
        raise UsageError(f"--jobs {jobs} is not a number of parallel jobs: use 1 or more.")
    check_into(settings, into)
    began = time.monotonic()
    journal, replacing, password = _begin(settings, checked, into, force=force_other_database)
    try:
        crashpoints.reached("restore.scratch.created")
        totals = checked.manifest.tables if checked.manifest else {}
        with watched(
            settings,
            journal.scratch,
            totals,
            progress,
            command="COPY FROM",
            indexes=True,
            admin=True,
        ):
            _load(backend, checked, journal, password, jobs=jobs)
        crashpoints.reached("restore.loaded")
        counts = _checked_copy(settings, checked, journal, replacing, force_other_database)
        saved = None
        if replacing and safety_backup:
            saved = _safety_backup(settings, backend)
        with swap.admin(settings) as admin:
            if replacing:
                swap.swap(admin, settings, journal)
            else:
                _rename(admin, journal.scratch, journal.live)
                swap.clear_journal(settings)
    except backups.ToolFailed as exc:
        _abandon(settings)
        raise StackError(
            f"{display_path(checked.path)} could not be restored ({exc.tool}: "
            f"{_psql_detail(exc.detail).rstrip('.')}). The live database was not touched."
        ) from None
    except psycopg.Error as exc:
        _abandon(settings)
        from scripts.infra.database import describe

        raise StackError(
            f"The restore failed in PostgreSQL ({describe(exc)}); the live database was not "
            "touched. Run it again, or see `inv logs -s postgres`."
        ) from None
    except BaseException:
        _abandon(settings)
        raise
    return RestoreResult(journal.live, replacing, counts, time.monotonic() - began, saved)


def _safety_backup(settings: Settings, backend: Backend) -> Path:
    name = f"before-restore-{backup_files.timestamp()}"
    try:
        return backups.dump(settings, backend, name=name, numbered=True).path
    except StackError as exc:
        raise StackError(
            f"The safety backup of the database being replaced failed: "
            f"{exc.message.rstrip('.')}. The live database was not touched; fix that, or "
            "restore without a safety backup (--no-backup)."
        ) from None


def _begin(
    settings: Settings, checked: Checked, into: str | None, *, force: bool
) -> tuple[swap.Journal, bool, str]:
    """The journal, whether the live database is replaced, and the scratch role's password,
    once the scratch database and its role exist (journaled before they do)."""
    target = into or settings.postgres_db
    stamp = swap.stamp()
    journal = swap.Journal(
        live=target,
        scratch=f"{target[:30]}{swap.SCRATCH_MARK}{stamp}",
        aside=f"{target[:30]}{swap.ASIDE_MARK}{stamp}",
        role=f"{swap.ROLE_PREFIX}{stamp}",
        phase="load",
    )
    with swap.admin(settings) as admin:
        existing = swap.databases(admin)
        if into is not None and into in existing:
            raise StackError(
                f"Database {into!r} exists already: choose another --into name, or drop it."
            )
        replacing = into is None and target in existing
        if replacing:
            check_origin(settings, checked, force=force)
        swap.write_journal(settings, journal)
        return journal, replacing, _scratch(admin, journal)


def _checked_copy(
    settings: Settings, checked: Checked, journal: swap.Journal, replacing: bool, force: bool
) -> dict[str, int]:
    """Hand the loaded copy over to the application's role; its row counts, once they are
    known to be a whole backup of this stack's database."""
    with swap.admin(settings) as admin:
        _hand_over(settings, admin, journal)
    counts = _counts(settings, journal.scratch)
    if not counts:
        raise StackError(
            f"{display_path(checked.path)} restored no table at all: refusing to replace "
            "the database with an empty one. The live database was not touched."
        )
    _compare(checked, counts)
    if replacing:  # what was restored, whatever the file claimed
        check_origin(settings, replace(checked, tables=frozenset(counts)), force=force)
    return counts


def _scratch(admin: psycopg.Connection[Any], journal: swap.Journal) -> str:
    """A login role that can do nothing but own the scratch database, and that database.

    The backup loads as this role: a .sql file's COPY ... TO PROGRAM, ALTER SYSTEM or ALTER
    DATABASE of the live database fail for it, where they would not for a superuser, nor
    (ALTER DATABASE) for the live database's owner."""
    from psycopg import sql

    from scripts.infra.scram import scram_verifier

    password = secrets.token_urlsafe(24)
    role = sql.Identifier(journal.role)
    admin.execute("SET log_statement = 'none'")
    admin.execute(
        sql.SQL(
            "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
            "NOBYPASSRLS PASSWORD {}"
        ).format(role, sql.Literal(scram_verifier(password)))
    )
    admin.execute(
        sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(
            sql.Identifier(journal.scratch), role
        )
    )
    return password


def _hand_over(settings: Settings, admin: psycopg.Connection[Any], journal: swap.Journal) -> None:
    """Give the loaded copy and everything in it to the application's role; drop the
    temporary one."""
    from psycopg import sql

    from scripts.infra.database import connect

    app, role = sql.Identifier(settings.postgres_user), sql.Identifier(journal.role)
    with connect(settings, dbname=journal.scratch, admin=True) as inside:
        swap.close_connections(inside, journal.scratch)
        inside.execute(sql.SQL("REASSIGN OWNED BY {} TO {}").format(role, app))
        inside.execute(sql.SQL("DROP OWNED BY {}").format(role))
    admin.execute(
        sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(journal.scratch), app)
    )
    admin.execute(sql.SQL("DROP ROLE {}").format(role))


def _abandon(settings: Settings) -> None:
    """After a failure: what the journal says was reached is undone (or, once the copy holds
    the live name, finished), exactly as the next command would after a crash."""
    import psycopg

    with contextlib.suppress(psycopg.Error, StackError):
        swap.recover(settings)


def _load(
    backend: Backend,
    checked: Checked,
    journal: swap.Journal,
    password: str,
    *,
    jobs: int,
) -> None:
    login = (journal.role, password)
    if checked.inside is not None:
        argv, env = backend.pg_command(
            "pg_restore",
            [
                "--dbname",
                journal.scratch,
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "--verbose",
                f"--jobs={jobs}",
                checked.inside,
            ],
            login,
        )
        with backups.run_tool(argv, env, "pg_restore"):
            pass
        return
    # Plain SQL: psql in one transaction, stopping at the first error.
    argv, env = backend.pg_command(
        "psql",
        [
            "--no-psqlrc",
            "-v",
            "ON_ERROR_STOP=1",
            "--single-transaction",
            "-q",
            "-d",
            journal.scratch,
            "-f",
            "-",  # stdin read as a script: an error names its line
        ],
        login,
    )
    opener = gzip.open if checked.format == "sql.gz" else open
    # Ownership goes to the loading role (as pg_restore --no-owner does): it may not give
    # objects to others, and after the load they all become the application's.
    scan = plainsql.Scan(drop_owners=True)
    with (
        opener(checked.path, "rb") as source,
        backups.run_tool(argv, env, "psql", stdin=run.PIPE, stdout=run.DEVNULL) as proc,
    ):
        assert proc.stdin is not None
        try:
            while chunk := source.read(_CHUNK):
                proc.stdin.write(scan.feed(chunk))
            proc.stdin.write(scan.close())
        except BrokenPipeError:
            pass  # psql stopped at an error: leaving the block reports it
        except (OSError, EOFError) as exc:
            proc.kill()
            raise StackError(
                f"{display_path(checked.path)} could not be read to the end ({exc}): it is "
                "damaged or truncated. Nothing was changed."
            ) from None
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()


def _psql_detail(detail: str) -> str:
    """psql's "psql:<stdin>:123: ERROR:  msg" as "line 123: msg"."""
    found = re.match(r"^psql:[^:]*:(\d+): (?:ERROR|FATAL):\s+(.*)", detail)
    return f"line {found[1]}: {found[2]}" if found else detail


def _counts(settings: Settings, database: str) -> dict[str, int]:
    from scripts.infra.database import connect

    with connect(settings, dbname=database, admin=True) as conn:

        def query(sql: str) -> backups.Rows:
            return conn.execute(sql).fetchall()

        return backups.row_counts(query, backups.user_tables(query))


def _compare(checked: Checked, counts: dict[str, int]) -> None:
    if checked.manifest is None:
        return
    differ = {
        table: (expected, counts.get(table))
        for table, expected in checked.manifest.tables.items()
        if counts.get(table) != expected
    }
    if differ:
        detail = ", ".join(f"{t}: {got} rows, manifest {want}" for t, (want, got) in differ.items())
        raise StackError(
            f"The restored copy differs from the backup's manifest ({detail}). The live "
            "database was not touched."
        )


def _rename(admin: psycopg.Connection[Any], old: str, new: str) -> None:
    from psycopg import sql

    swap.close_connections(admin, old)
    admin.execute(
        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))
    )
