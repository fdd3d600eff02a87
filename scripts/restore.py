"""Restores that never lose data: verify the file, restore into a scratch database, check it,
then swap it in for the live one, which is kept until the swap has succeeded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scripts import backups
from scripts.backups import Manifest, Progress, detect_format
from scripts.console import display_path
from scripts.errors import StackError

if TYPE_CHECKING:
    import psycopg

    from scripts.backends import Backend
    from scripts.settings import Settings

MAINTENANCE_DB = "postgres"


@dataclass(frozen=True)
class Checked:
    """A backup file that passed every check possible before touching a database."""

    path: Path
    format: str  # custom | directory | sql | sql.gz
    manifest: Manifest | None
    entries: int  # table-data entries in the archive's table of contents (0 for SQL)
    inside: str | None  # where pg_restore reads the archive (None for SQL, fed to psql)


@dataclass(frozen=True)
class RestoreResult:
    database: str
    replaced: bool  # True when the live database was swapped out
    counts: dict[str, int]
    seconds: float


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
    if fmt not in ("custom", "directory"):
        _check_plain_sql(path, compressed=fmt == "sql.gz")
        yield Checked(path, fmt, manifest, 0, None)
        return
    with backend.pg_input(path) as inside:
        yield Checked(path, fmt, manifest, _toc_entries(path, inside, backend), inside)


def _toc_entries(path: Path, inside: str, backend: Backend) -> int:
    """Read the archive's table of contents with pg_restore --list; count its table data."""
    argv, env = backend.pg_command("pg_restore", ["--list", inside])
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["unreadable"])[-1]
        detail = detail.removeprefix("pg_restore: error: ")
        raise StackError(
            f"{display_path(path)} is not a readable pg_dump archive ({detail}). Nothing was "
            "changed; restore another backup."
        )
    return sum(1 for line in result.stdout.splitlines() if " TABLE DATA " in line)


# psql meta-commands a pg_dump plain file may hold; any other (\connect, \!, \o, ...) could act
# outside the scratch database, so such a file is refused.
_ALLOWED_META = (b"\\restrict", b"\\unrestrict")


def _check_plain_sql(path: Path, *, compressed: bool) -> None:
    """Read the whole file once: gzip's CRC and length catch truncation and damage, and no
    psql meta-command may point the restore at another database or the shell."""
    in_copy = False
    try:
        with gzip.open(path, "rb") if compressed else path.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                if in_copy:
                    in_copy = line.rstrip(b"\r\n") != b"\\."
                elif line.startswith(b"COPY ") and line.rstrip().endswith(b"FROM stdin;"):
                    in_copy = True
                elif line.startswith(b"\\") and not line.startswith(_ALLOWED_META):
                    command = line.split()[0].decode("utf-8", "replace")
                    raise StackError(
                        f"{display_path(path)} holds the psql command {command} (line {number}), "
                        "which could act outside the scratch database: restore it with psql "
                        "yourself, or remove that line. Nothing was changed."
                    )
    except (OSError, EOFError) as exc:
        raise StackError(
            f"{display_path(path)} could not be read to the end ({exc}): it is damaged or "
            "truncated. Nothing was changed; restore another backup."
        ) from None


def restore(
    settings: Settings,
    backend: Backend,
    checked: Checked,
    *,
    into: str | None = None,
    jobs: int = 2,
    progress: Progress | None = None,
) -> RestoreResult:
    """Restore into a scratch database, check it, then swap it in (or keep it as `into`)."""
    import psycopg
    from psycopg import sql

    if jobs < 1:
        raise StackError(f"--jobs {jobs} is not a number of parallel jobs: use 1 or more.")
    began = time.monotonic()
    live = settings.postgres_db
    target = into or live
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    scratch = f"{target[:40]}__restoring_{stamp}"
    with _admin(settings) as admin:
        existing = {str(r[0]) for r in admin.execute("SELECT datname FROM pg_database").fetchall()}
        if into is not None and into in existing:
            raise StackError(
                f"Database {into!r} exists already: choose another --into name, or drop it."
            )
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(scratch))
        )
    try:
        try:
            _load(backend, checked, scratch, jobs=jobs, progress=progress)
        except backups.ToolFailed as exc:
            raise StackError(
                f"{display_path(checked.path)} could not be restored ({exc.tool}: "
                f"{exc.detail.rstrip('.')}). The live database was not touched."
            ) from None
        counts = _counts(settings, scratch)
        if not counts:
            raise StackError(
                f"{display_path(checked.path)} restored no table at all: refusing to replace "
                "the database with an empty one. The live database was not touched."
            )
        _compare(checked, counts)
        with _admin(settings) as admin:
            if into is not None or live not in existing:
                _rename(admin, scratch, target)
                replaced = False
            else:
                _swap(admin, live=live, scratch=scratch, stamp=stamp)
                replaced = True
    except BaseException:
        with contextlib.suppress(psycopg.Error), _admin(settings) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch))
            )
        raise
    return RestoreResult(target, replaced, counts, time.monotonic() - began)


@contextlib.contextmanager
def _admin(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the maintenance database, for CREATE / ALTER DATABASE."""
    from scripts.database import connect

    with connect(settings, dbname=MAINTENANCE_DB) as conn:
        yield conn


def _load(
    backend: Backend,
    checked: Checked,
    database: str,
    *,
    jobs: int,
    progress: Progress | None,
) -> None:
    if checked.inside is not None:
        argv, env = backend.pg_command(
            "pg_restore",
            [
                "--dbname",
                database,
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "--verbose",
                f"--jobs={jobs}",
                checked.inside,
            ],
        )
        with backups.run_tool(argv, env, checked.entries, progress, "pg_restore"):
            pass
        return
    # Plain SQL: psql in one transaction, stopping at the first error.
    argv, env = backend.pg_command(
        "psql",
        ["--no-psqlrc", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-q", "-d", database],
    )
    opener = gzip.open if checked.format == "sql.gz" else open
    with (
        opener(checked.path, "rb") as source,
        backups.run_tool(
            argv, env, 0, None, "psql", stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
        ) as proc,
    ):
        assert proc.stdin is not None
        try:
            while chunk := source.read(1 << 20):
                proc.stdin.write(chunk)
        except (OSError, EOFError) as exc:
            proc.kill()
            raise StackError(
                f"{display_path(checked.path)} could not be read to the end ({exc}): it is "
                "damaged or truncated. Nothing was changed."
            ) from None
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()


def _counts(settings: Settings, database: str) -> dict[str, int]:
    from scripts.database import connect

    with connect(settings, dbname=database) as conn:

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

    admin.execute(
        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))
    )


def _swap(admin: psycopg.Connection[Any], *, live: str, scratch: str, stamp: str) -> None:
    """Close the live database to new connections, end the open ones, rename it aside, rename
    the restored copy into its place; drop the old one only once that succeeded."""
    from psycopg import sql

    aside = f"{live[:40]}__replaced_{stamp}"
    admin.execute(
        sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(live))
    )
    try:
        _close_connections(admin, live)
        _rename(admin, live, aside)
    except BaseException:
        admin.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(live))
        )
        raise
    try:
        _rename(admin, scratch, live)
    except BaseException:
        _rename(admin, aside, live)  # put the original back
        admin.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(live))
        )
        raise
    admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(aside)))


def _close_connections(admin: psycopg.Connection[Any], database: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        row = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchone()
        if row is None or row[0] == 0:
            return
        if time.monotonic() > deadline:
            raise StackError(
                f"Connections to {database!r} did not close within 10 s: stop the application "
                "and run the restore again. Nothing was changed."
            )
        time.sleep(0.1)
