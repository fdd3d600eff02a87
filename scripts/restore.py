"""Restores that never lose data: verify the file, restore it into a scratch database as a
role with no rights beyond it, check the result, then swap it in for the live database.

A restore ends in one of two states only: the old database live, or the new one (the swap
is journaled: scripts/swap.py). A file that is incomplete, damaged, or of another database
never gets past the checks; a replacing restore takes a safety backup first.
"""

from __future__ import annotations

import contextlib
import gzip
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scripts import backups, crashpoints, plainsql, swap
from scripts.backups import Manifest, Progress, detect_format
from scripts.console import display_path
from scripts.errors import StackError

if TYPE_CHECKING:
    import psycopg

    from scripts.backends import Backend
    from scripts.settings import Settings

# The tables that make a database this stack's (docker/init-scripts/01-init-database.sql).
STACK_TABLES = ("users", "ai_agents", "reviews", "transactions")
_CHUNK = 1 << 20
MAX_NAME = 63  # bytes in a PostgreSQL identifier


@dataclass(frozen=True)
class Checked:
    """A backup file that passed every check possible before touching a database."""

    path: Path
    format: str  # custom | directory | sql | sql.gz
    manifest: Manifest | None
    entries: int  # table-data entries in the archive's table of contents (0 for SQL)
    inside: str | None  # where pg_restore reads the archive (None for SQL, fed to psql)
    database: str | None  # the database it was dumped from, where the file tells
    tables: frozenset[str]  # the tables it creates, unqualified when in schema public


@dataclass(frozen=True)
class RestoreResult:
    database: str
    replaced: bool  # True when the live database was swapped out
    counts: dict[str, int]
    seconds: float
    safety_backup: Path | None


@contextlib.contextmanager
def opened(path: Path, backend: Backend) -> Iterator[Checked]:
    """Check a backup (a missing, foreign, truncated or damaged file is refused before anything
    is touched) and keep it where the pg tools read it until the block ends: an archive is
    copied into a container once, for both the check and the restore."""
    if not path.exists():
        raise StackError(
            f"No backup at {display_path(path)}: list the backups with `inv db.backups`."
        )
    manifest = Manifest.read(path)
    if manifest is not None:
        digest, size = backups.hash_file(path)
        if size != manifest.size or digest != manifest.sha256:
            what = "size" if size != manifest.size else "sha256"
            raise StackError(
                f"{display_path(path)} does not match its manifest ({what} differs): the file "
                "is damaged or incomplete. Nothing was changed; restore another backup."
            )
    fmt = detect_format(path)
    origin = manifest.database if manifest else None
    if fmt not in ("custom", "directory"):
        tables = _check_plain_sql(path, compressed=fmt == "sql.gz")
        yield Checked(path, fmt, manifest, 0, None, origin, tables)
        return
    with backend.pg_input(path) as inside:
        entries, dbname, tables = _toc(path, inside, backend)
        yield Checked(path, fmt, manifest, entries, inside, origin or dbname, tables)


def _toc(path: Path, inside: str, backend: Backend) -> tuple[int, str | None, frozenset[str]]:
    """Read the archive's table of contents with pg_restore --list: its table-data entries,
    the database it was dumped from, the tables it creates."""
    argv, env = backend.pg_command("pg_restore", ["--list", inside])
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["unreadable"])[-1]
        detail = detail.removeprefix("pg_restore: error: ")
        raise StackError(
            f"{display_path(path)} is not a readable pg_dump archive ({detail}). Nothing was "
            "changed; restore another backup."
        )
    dbname = re.search(r"^;\s+dbname: (.*)$", result.stdout, re.M)
    tables = {
        _unqualified(m[1], m[2])
        for m in re.finditer(r"^\d+; \d+ \d+ TABLE (\S+) (\S+) ", result.stdout, re.M)
    }
    entries = sum(1 for line in result.stdout.splitlines() if " TABLE DATA " in line)
    return entries, dbname[1].strip() if dbname else None, frozenset(tables)


def _unqualified(schema: str, table: str) -> str:
    return table if schema == "public" else f"{schema}.{table}"


def _check_plain_sql(path: Path, *, compressed: bool) -> frozenset[str]:
    """Read the whole file once: gzip's CRC and length catch damage; pg_dump's closing line
    proves it complete (a file cut at a statement boundary is valid SQL, and restoring it
    would replace every table with a part of it); no psql meta-command may point the restore
    at another database or the shell. Returns the tables it creates."""
    scan = plainsql.Scan()
    try:
        with gzip.open(path, "rb") if compressed else path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                scan.feed(chunk)
                if scan.meta is not None:
                    break
        scan.close()
    except (OSError, EOFError) as exc:
        raise StackError(
            f"{display_path(path)} could not be read to the end ({exc}): it is damaged or "
            "truncated. Nothing was changed; restore another backup."
        ) from None
    if scan.meta is not None:
        command, number = scan.meta
        raise StackError(
            f"{display_path(path)} holds the psql command {command} (line {number}), which "
            "could act outside the scratch database: restore it with psql yourself, or remove "
            "that line. Nothing was changed."
        )
    if not scan.complete:
        raise StackError(
            f'{display_path(path)} does not end with pg_dump\'s "dump complete" line: it is cut '
            "short (or not made by pg_dump), and restoring it would replace the database with a "
            "part of it. Nothing was changed; restore a complete backup."
        )
    return frozenset(scan.tables)


def check_into(settings: Settings, into: str | None) -> None:
    """A name for --into that PostgreSQL keeps as it is, and that is no live database."""
    if into is None:
        return
    if not into.strip():
        raise StackError(
            "--into needs the name of a new database, e.g. --into scratch_copy.", exit_code=2
        )
    if len(into.encode()) > MAX_NAME:
        raise StackError(
            f"--into {into!r} is longer than PostgreSQL's {MAX_NAME}-byte limit (it would be cut "
            "short): choose a shorter name.",
            exit_code=2,
        )
    if into == settings.postgres_db:
        raise StackError(
            f"--into {into!r} is the live database: leave --into out to replace it.", exit_code=2
        )
    if swap.LEFTOVER.search(into) or into.startswith(swap.ROLE_PREFIX):
        raise StackError(f"--into {into!r} looks like a restore's scratch name: choose another.")


def check_origin(settings: Settings, checked: Checked, *, force: bool) -> None:
    """Refuse a dump of another database, or of another schema, for the live database."""
    problems = []
    if checked.database is not None and checked.database != settings.postgres_db:
        problems.append(f"it was dumped from database {checked.database!r}")
    missing = [t for t in STACK_TABLES if checked.tables and t not in checked.tables]
    if missing:
        problems.append(f"it lacks the stack's tables {', '.join(missing)}")
    if problems and not force:
        raise StackError(
            f"{display_path(checked.path)} is not a backup of this stack's database "
            f"{settings.postgres_db!r}: {'; '.join(problems)}. Nothing was changed; to replace "
            "the database with it anyway (after a safety backup), add --force-other-database, "
            "or restore it beside with --into NAME."
        )


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
        raise StackError(f"--jobs {jobs} is not a number of parallel jobs: use 1 or more.")
    check_into(settings, into)
    began = time.monotonic()
    journal, replacing, password = _begin(settings, checked, into, force=force_other_database)
    try:
        crashpoints.reached("restore.scratch.created")
        _load(backend, checked, journal, password, jobs=jobs, progress=progress)
        crashpoints.reached("restore.loaded")
        counts = _checked_copy(settings, checked, journal, replacing, force_other_database)
        saved = None
        if replacing and safety_backup:
            saved = backups.create(
                settings, backend, name=f"before-restore-{backups.timestamp()}"
            ).path
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
        from scripts.database import describe

        raise StackError(
            f"The restore failed in PostgreSQL ({describe(exc)}); the live database was not "
            "touched. Run it again, or see `inv logs -s postgres`."
        ) from None
    except BaseException:
        _abandon(settings)
        raise
    return RestoreResult(journal.live, replacing, counts, time.monotonic() - began, saved)


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

    from scripts.probes import scram_verifier

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

    from scripts.database import connect

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
    progress: Progress | None,
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
        with backups.run_tool(argv, env, checked.entries, progress, "pg_restore"):
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
        backups.run_tool(
            argv, env, 0, None, "psql", stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
        ) as proc,
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
    from scripts.database import connect

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
