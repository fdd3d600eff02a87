"""What a restore checks before it touches any database: the file (present, matching its
manifest, complete, readable, no psql command that leaves the restore), where it goes
(--into), and whose it is (a dump of another database is refused for the live one).
"""

from __future__ import annotations

import contextlib
import gzip
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.console import display_path
from scripts.errors import StackError, UsageError
from scripts.infra import plainsql, run
from scripts.ops import backup_files, swap
from scripts.ops.backup_files import Manifest, detect_format

if TYPE_CHECKING:
    from scripts.backends.base import Backend
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
        digest, size = backup_files.hash_file(path)
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
    result = run.run(argv, env=env)
    if not result.ok:
        detail = result.last_line("unreadable").removeprefix("pg_restore: error: ")
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
        raise UsageError("--into needs the name of a new database, e.g. --into scratch_copy.")
    if len(into.encode()) > MAX_NAME:
        raise UsageError(
            f"--into {into!r} is longer than PostgreSQL's {MAX_NAME}-byte limit (it would be cut "
            "short): choose a shorter name.",
        )
    if into == settings.postgres_db:
        raise UsageError(f"--into {into!r} is the live database: leave --into out to replace it.")
    if swap.LEFTOVER.search(into) or into.startswith(swap.ROLE_PREFIX):
        raise UsageError(f"--into {into!r} looks like a restore's scratch name: choose another.")


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
