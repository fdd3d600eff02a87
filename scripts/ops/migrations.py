"""Schema migrations: the numbered SQL files in docker/migrations and their schema_migrations log.

Owns the file naming rule, the checks before anything is applied (names, numbers, edited or
vanished files, transaction commands), and applying each new file in its own transaction.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scripts.errors import StackError
from scripts.infra.database import connect, describe
from scripts.settings import ROOT, Settings

if TYPE_CHECKING:
    import psycopg

MIGRATIONS_DIR = ROOT / "docker" / "migrations"
# NNNN_short_name.sql: 4 or more digits, then lower-case letters, digits and underscores.
FILE_PATTERN = re.compile(r"^(?P<version>[0-9]{4,})_(?P<name>[a-z0-9][a-z0-9_]*)\.sql$")
# Every migrate() in every session takes this transaction-level advisory lock first.
LOCK_KEY = 0x6D6967726174  # "migrat"

_CREATE_TABLE = b"""
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text        PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE schema_migrations IS
    'One row per applied file of docker/migrations (inv db.migrate); checksum: sha256 hex.';
"""
# Statements that would end or replace the transaction the runner wraps around each file.
_TRANSACTION_CONTROL = re.compile(
    r"^(?:BEGIN|START\s+TRANSACTION|COMMIT|END|ABORT|ROLLBACK(?!\s+TO\b)|PREPARE\s+TRANSACTION)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Migration:
    """One file of the migrations directory."""

    version: str  # the digits as written in the file name, e.g. "0001"
    name: str  # the rest of the name, e.g. "add_agent_tags"
    path: Path
    checksum: str  # sha256 hex of the file's bytes

    @property
    def filename(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Applied:
    """A migration applied by this run."""

    version: str
    name: str
    checksum: str
    seconds: float


@dataclass(frozen=True)
class MigrationStatus:
    """One line of `status`: state is applied, pending, changed (edited since) or missing."""

    version: str
    name: str
    state: str
    applied_at: datetime | None


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration file in `directory`, in the order they apply; refuses bad names,
    shared numbers, undecodable files and files with their own transaction commands."""
    if not directory.is_dir():
        raise StackError(f"The migrations directory {directory} does not exist: create it.")
    found: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if not (path.suffix.lower() == ".sql" or path.name[:1].isdigit()):
            continue  # README.md and the like
        match = FILE_PATTERN.match(path.name)
        if match is None:
            raise StackError(
                f"Migration file {path.name} does not match NNNN_short_name.sql (4+ digits, "
                "lower-case letters, digits, underscores): rename it."
            )
        data = path.read_bytes()
        migration = Migration(
            match["version"], match["name"], path, hashlib.sha256(data).hexdigest()
        )
        number = int(migration.version)
        if number in found:
            raise StackError(
                f"Migrations {found[number].filename} and {path.name} share the number "
                f"{number}: give the newer one the next free number."
            )
        _check_sql(path, data)
        found[number] = migration
    return [found[number] for number in sorted(found)]


def migrate(
    settings: Settings, directory: Path = MIGRATIONS_DIR, *, database: str | None = None
) -> list[Applied]:
    """Apply every new migration in order, each in its own transaction with its log row.

    Refuses before applying anything when an applied file was edited, renamed or removed.
    A failing file is rolled back completely and stops the run; earlier ones stay applied.
    Returns what this run applied (empty when the database is up to date). `database`: another
    database of the stack's server than the live one (a snapshot being kept current).
    """
    migrations = discover(directory)
    applied: list[Applied] = []
    with connect(settings, dbname=database) as conn:
        while True:
            with conn.transaction():
                # Held until this file's transaction ends: concurrent runs take turns and
                # each re-reads the log, so every file is applied exactly once.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
                row = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
                if row is None or row[0] is None:
                    conn.execute(_CREATE_TABLE)
                done = _applied_rows(conn)
                _check_applied(migrations, done)
                pending = [m for m in migrations if m.version not in done]
                if not pending:
                    return applied
                applied.append(_apply(conn, pending[0], applied))


def status(settings: Settings, directory: Path = MIGRATIONS_DIR) -> list[MigrationStatus]:
    """Every migration known to the directory or the database, in version order."""
    migrations = discover(directory)
    with connect(settings) as conn:
        row = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
        done = {} if row is None or row[0] is None else _applied_rows(conn)
    rows = []
    files = {m.version: m for m in migrations}
    for version in sorted({*files, *done}, key=_order):
        migration, logged = files.get(version), done.get(version)
        if logged is None:
            name = migration.name if migration else ""
            rows.append(MigrationStatus(version, name, "pending", None))
            continue
        name, checksum, applied_at = logged
        if migration is None:
            state = "missing"
        elif (migration.name, migration.checksum) != (name, checksum):
            state = "changed"
        else:
            state = "applied"
        rows.append(MigrationStatus(version, name, state, applied_at))
    return rows


NOT_APPLIED = ("pending", "changed", "missing")  # the states `inv db.migrate --check` fails on

_TEMPLATE = """\
-- {filename}: {title}
--
-- Applied once by `inv db.migrate`, in one transaction that the runner opens: no BEGIN,
-- COMMIT or ROLLBACK here (SAVEPOINT is fine), nothing that cannot run in a transaction
-- (CREATE INDEX CONCURRENTLY, VACUUM). Once applied anywhere, never edit this file: add a
-- new migration instead. docker/migrations/README.md has the rules.

"""


def create(name: str, directory: Path = MIGRATIONS_DIR) -> Path:
    """Write the next numbered migration file, NNNN_name.sql, from the template.

    `name` may be words ("add agent tags"): it becomes lower-case words joined by "_". The
    number is one more than the highest in the directory, written with as many digits.
    """
    from scripts.errors import UsageError

    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not slug:
        raise UsageError(
            f"{name!r} gives no file name: use letters and digits, e.g. "
            "`inv db.migration add_agent_tags`."
        )
    migrations = discover(directory)
    last = migrations[-1].version if migrations else "0000"
    version = str(int(last) + 1).zfill(len(last))
    path = directory / f"{version}_{slug}.sql"
    title = slug.replace("_", " ")
    try:
        with path.open("x", encoding="utf-8") as handle:  # never over a file written meanwhile
            handle.write(_TEMPLATE.format(filename=path.name, title=title))
    except FileExistsError:
        raise StackError(f"{path.name} exists already: run the command again.") from None
    return path


def _order(version: str) -> tuple[int, str]:
    return (int(version) if version.isdigit() else -1, version)


def _applied_rows(
    conn: psycopg.Connection[tuple[Any, ...]],
) -> dict[str, tuple[str, str, datetime]]:
    rows = conn.execute("SELECT version, name, checksum, applied_at FROM schema_migrations")
    return {str(v): (str(n), str(c), a) for v, n, c, a in rows.fetchall()}


def _check_applied(migrations: list[Migration], done: dict[str, tuple[str, str, datetime]]) -> None:
    files = {m.version: m for m in migrations}
    for version in sorted(done, key=_order):
        name, checksum, _ = done[version]
        migration = files.get(version)
        applied_file = f"{version}_{name}.sql"
        if migration is None:
            raise StackError(
                f"Migration {applied_file} is applied but its file is gone: restore it "
                "(to undo a migration, add a new one)."
            )
        if migration.name != name:
            raise StackError(
                f"Migration {migration.filename} was applied as {applied_file}: rename it back "
                "(applied files keep their names)."
            )
        if migration.checksum != checksum:
            raise StackError(
                f"Migration {migration.filename} changed after it was applied: restore it and "
                "add a new migration instead of editing an applied one."
            )


def _apply(
    conn: psycopg.Connection[tuple[Any, ...]], migration: Migration, before: list[Applied]
) -> Applied:
    import psycopg
    from psycopg.pq import TransactionStatus

    data = migration.path.read_bytes()
    if hashlib.sha256(data).hexdigest() != migration.checksum:
        raise StackError(
            f"Migration {migration.filename} changed while migrating: run `inv db.migrate` again."
        )
    if not any(_statements(data.decode("utf-8"))):
        raise StackError(
            f"Migration {migration.filename} has no SQL statement yet: write it (or delete the "
            "file), then run `inv db.migrate` again."
        )
    began = time.monotonic()
    try:
        conn.execute(data)  # no parameters: the simple protocol runs every statement in it
    except psycopg.Error as exc:
        raise StackError(_failure(migration, data, exc, before)) from None
    if conn.info.transaction_status != TransactionStatus.INTRANS:
        raise StackError(  # a COMMIT the pre-check missed: do not log a half-known state
            f"Migration {migration.filename} ended the migration's transaction itself: remove "
            "its transaction commands and check what it left behind."
        )
    conn.execute(
        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
        [migration.version, migration.name, migration.checksum],
    )
    return Applied(migration.version, migration.name, migration.checksum, time.monotonic() - began)


def _failure(migration: Migration, data: bytes, exc: Exception, before: list[Applied]) -> str:
    diag = getattr(exc, "diag", None)
    message = describe(exc)
    where = ""
    position = getattr(diag, "statement_position", None)
    if position and position.isdigit():
        text = data.decode("utf-8", errors="replace")
        where = f" at line {text[: int(position) - 1].count(chr(10)) + 1}"
    count = len(before)
    kept = (
        f"the {count} migration{'s' if count > 1 else ''} applied before it in this run stay"
        if before
        else "earlier migrations stay"
    )
    return (
        f"Migration {migration.filename} failed{where} ({message}) and was rolled back, "
        f"{kept} applied: fix the file and run `inv db.migrate` again."
    )


def _check_sql(path: Path, data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise StackError(f"Migration {path.name} is not UTF-8 text: save it as UTF-8.") from None
    in_atomic_body = False  # CREATE FUNCTION ... BEGIN ATOMIC stmt; stmt; END
    for statement in _statements(text):
        if in_atomic_body:
            in_atomic_body = not re.match(r"END\b", statement, re.IGNORECASE)
            continue
        if _TRANSACTION_CONTROL.match(statement):
            keyword = statement.split()[0].upper()
            raise StackError(
                f"Migration {path.name} contains {keyword}: remove its transaction commands, "
                "the runner wraps each file in one transaction."
            )
        in_atomic_body = bool(
            re.search(r"\bBEGIN\s+ATOMIC\b(?!\s+END\s*$)", statement, re.IGNORECASE)
        )


def _statements(text: str) -> Iterator[str]:
    """The top-level statements of SQL text, with comments and quoted text blanked out."""
    code: list[str] = []
    i, length = 0, len(text)
    while i < length:
        char = text[i]
        end = i + 1
        if text.startswith("--", i):
            end = text.find("\n", i)
            end = length if end < 0 else end
        elif text.startswith("/*", i):
            end = _block_comment_end(text, i)
        elif char in "'\"":
            escapes = (
                char == "'" and i > 0 and text[i - 1] in "eE" and not _ident_before(text, i - 1)
            )
            end = _quoted_end(text, i, char, escapes=escapes)
        elif char == "$" and not _ident_before(text, i):
            match = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", text[i:])
            if match:
                close = text.find(match.group(0), i + len(match.group(0)))
                end = length if close < 0 else close + len(match.group(0))
        code.append(char if end == i + 1 else " ")
        i = end
    for statement in "".join(code).split(";"):
        if statement.strip():
            yield statement.strip()


def _ident_before(text: str, i: int) -> bool:
    return i > 0 and (text[i - 1].isalnum() or text[i - 1] in "_$")


def _block_comment_end(text: str, i: int) -> int:
    depth, j = 0, i
    while j < len(text):
        if text.startswith("/*", j):
            depth, j = depth + 1, j + 2
        elif text.startswith("*/", j):
            depth, j = depth - 1, j + 2
            if depth == 0:
                return j
        else:
            j += 1
    return len(text)


def _quoted_end(text: str, i: int, quote: str, *, escapes: bool) -> int:
    j = i + 1
    while j < len(text):
        if escapes and text[j] == "\\":
            j += 2
        elif text[j] == quote:
            if text.startswith(quote * 2, j):
                j += 2
            else:
                return j + 1
        else:
            j += 1
    return len(text)
