"""Database backups made: one consistent snapshot, pg_dump, an atomic name, a manifest.

A backup is a standard pg_dump file (custom, plain SQL gzipped, or a directory) plus a JSON
manifest beside it: sha256, size, format, database, server version, time, row counts.
The files once written (listing, checking, pruning) are scripts.ops.backup_files'.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from scripts import files
from scripts.console import Progress, display_path
from scripts.errors import StackError, UsageError
from scripts.infra import lock, run
from scripts.ops.backup_files import (
    FORMATS,
    PARTIAL_PREFIX,
    Manifest,
    hash_directory,
    hash_file,
    make_backup_dir,
    manifest_path,
    remove_path,
    timestamp,
    write_failed,
    write_private,
)
from scripts.ops.progress import watched

if TYPE_CHECKING:
    from scripts.backends.base import Backend
    from scripts.settings import Settings

_CHUNK = 1 << 20


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: Manifest


def _name(settings: Settings, fmt: str, name: str | None) -> str:
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is not a backup format: use custom, sql or directory.")
    base = name or f"{settings.postgres_db}-{timestamp()}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", base) or base.startswith(PARTIAL_PREFIX):
        raise UsageError(
            f"--name {base!r} is not a usable file name: use letters, digits, '.', '_' and '-'."
        )
    return base if base.endswith(FORMATS[fmt]) else base + FORMATS[fmt]


Rows = list[tuple[Any, ...]]


@contextlib.contextmanager
def snapshot(settings: Settings) -> Iterator[tuple[Callable[[str], Rows], str]]:
    """A read-only transaction whose snapshot pg_dump shares (--snapshot), so the manifest's
    row counts describe exactly what the dump holds, even while the application writes.

    Yields a function that runs SQL in that transaction, and the snapshot's id.
    """
    from scripts.infra import database

    with database.connect(settings) as conn:

        def query(text: str) -> Rows:
            return conn.execute(text.encode()).fetchall()

        conn.execute(b"BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield query, str(query("SELECT pg_export_snapshot()")[0][0])


def user_tables(query: Callable[[str], Rows]) -> list[str]:
    rows = query(
        """
        SELECT format('%I.%I', n.nspname, c.relname)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p')
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg_toast%'
        ORDER BY 1
        """
    )
    return [str(r[0]) for r in rows]


def row_estimates(query: Callable[[str], Rows]) -> dict[str, int]:
    """The planner's row counts of the tables user_tables lists (pg_class.reltuples, 0 where
    never analysed): a dump's progress is measured against them while the exact counts are
    taken beside it."""
    rows = query(
        """
        SELECT format('%I.%I', n.nspname, c.relname), greatest(c.reltuples, 0)::bigint
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p')
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg_toast%'
        """
    )
    return {str(name).removeprefix("public."): int(count) for name, count in rows}


def row_counts(query: Callable[[str], Rows], tables: list[str]) -> dict[str, int]:
    counts = {}
    for table in tables:
        # The name comes quoted from format('%I') in user_tables.
        rows = query(f"SELECT count(*) FROM {table}")  # noqa: S608
        counts[table.removeprefix("public.")] = int(rows[0][0])
    return counts


def create(
    settings: Settings,
    backend: Backend,
    *,
    fmt: str = "custom",
    name: str | None = None,
    jobs: int = 1,
    progress: Progress | None = None,
) -> BackupResult:
    """pg_dump the stack's database into BACKUP_DIR under a temporary name, fsync, rename;
    under the stack's lock (one backup at a time: its names stay its own)."""
    with lock.held(settings.state_dir):
        return dump(settings, backend, fmt=fmt, name=name, jobs=jobs, progress=progress)


def dump(
    settings: Settings,
    backend: Backend,
    *,
    fmt: str = "custom",
    name: str | None = None,
    jobs: int = 1,
    progress: Progress | None = None,
    numbered: bool = False,
) -> BackupResult:
    """`create`, for a use case that holds the stack's lock already (reset, restore).
    `numbered`: `name` is the stack's own (a safety backup's), numbered like a default name
    when taken instead of refused as a user's would be."""
    if jobs < 1:
        raise UsageError(f"--jobs {jobs} is not a number of parallel jobs: use 1 or more.")
    if jobs > 1 and fmt != "directory":
        raise UsageError("--jobs needs --format directory (pg_dump writes in parallel only there).")
    return _create(
        settings, backend, fmt=fmt, final=_final_path(settings, fmt, name, numbered=numbered),
        jobs=jobs, progress=progress,
    )  # fmt: skip


def _final_path(settings: Settings, fmt: str, name: str | None, *, numbered: bool) -> Path:
    final = settings.backup_dir / _name(settings, fmt, name)
    if final.exists() and name is not None and not numbered:
        raise StackError(f"{display_path(final)} exists already: choose another --name.")
    stem = final.name.removesuffix(FORMATS[fmt])
    for number in range(2, 100):  # two backups within one second get -2, -3, ...
        if not final.exists():
            break
        final = settings.backup_dir / _name(settings, fmt, f"{stem}-{number}")
    return final


def _create(
    settings: Settings,
    backend: Backend,
    *,
    fmt: str,
    final: Path,
    jobs: int,
    progress: Progress | None,
) -> BackupResult:
    from concurrent.futures import ThreadPoolExecutor

    make_backup_dir(settings.backup_dir)
    partial = final.with_name(PARTIAL_PREFIX + final.name)
    manifest_partial = manifest_path(partial)
    # The stack lock is held: a partial file now is one a killed backup left behind.
    remove_path(partial)
    remove_path(manifest_partial)
    started = dt.datetime.now(dt.UTC)
    try:
        with snapshot(settings) as (query, snapshot_id), ThreadPoolExecutor(1) as counter:
            tables = user_tables(query)
            version = str(query("SHOW server_version")[0][0])
            # Counting rows in the snapshot's own transaction while pg_dump runs hides the
            # cost (a scan of every table) behind the dump.
            estimates = row_estimates(query)
            counting = counter.submit(row_counts, query, tables)
            args = [f"--snapshot={snapshot_id}", "--verbose", "-d", settings.postgres_db]
            with watched(settings, settings.postgres_db, estimates, progress, command="COPY TO"):
                if fmt == "directory":
                    _dump_directory(backend, args, partial, jobs=jobs)
                    digest, size = hash_directory(partial)
                else:
                    args += (
                        ["--format=custom"] if fmt == "custom" else ["--format=plain", "-Z", "6"]
                    )
                    digest, size = _dump_stream(backend, args, partial)
            counts = counting.result()
        manifest = Manifest(
            file=final.name,
            format=fmt,
            sha256=digest,
            size=size,
            database=settings.postgres_db,
            server_version=version,
            created_at=started.isoformat(timespec="seconds"),
            seconds=round((dt.datetime.now(dt.UTC) - started).total_seconds(), 3),
            tables=counts,
        )
        # Both files complete and fsynced under temporary names first; then the renames.
        write_private(manifest_partial, json.dumps(asdict(manifest), indent=2) + "\n")
        partial.rename(final)
        manifest_partial.rename(manifest_path(final))
        files.fsync_dir(final.parent)
    except ToolFailed as exc:
        remove_path(partial)
        remove_path(manifest_partial)
        if "No space left on device" in exc.detail:
            raise write_failed(partial.parent, OSError(28, "No space left on device")) from None
        raise
    except OSError as exc:
        remove_path(partial)
        remove_path(manifest_partial)
        raise write_failed(partial.parent, exc) from None
    except BaseException:
        remove_path(partial)
        remove_path(manifest_partial)
        raise
    return BackupResult(final, manifest)


def _dump_stream(backend: Backend, args: list[str], partial: Path) -> tuple[str, int]:
    """pg_dump into `partial`, fsynced; return its sha256 and size.

    Where pg_dump runs on this machine it writes the file itself: a seekable custom archive
    records where each table's data starts, which parallel restores need. Otherwise (in a
    container) its output streams through here, hashed on the way.
    """
    digest = hashlib.sha256()
    size = 0
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    if backend.local_files:
        os.close(fd)
        argv, env = backend.pg_command("pg_dump", [*args, "--file", str(partial)])
        with run_tool(argv, env, "pg_dump", stdout=run.DEVNULL):
            pass
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        return hash_file(partial)
    argv, env = backend.pg_command("pg_dump", args)
    with os.fdopen(fd, "wb") as out, run_tool(argv, env, "pg_dump") as proc:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            try:
                out.write(chunk)
            except OSError as exc:
                proc.kill()
                raise write_failed(partial.parent, exc) from None
        try:
            out.flush()
            os.fsync(out.fileno())
        except OSError as exc:
            raise write_failed(partial.parent, exc) from None
    return digest.hexdigest(), size


def _dump_directory(backend: Backend, args: list[str], partial: Path, *, jobs: int) -> None:
    with backend.pg_output_dir(partial) as target:
        argv, env = backend.pg_command(
            "pg_dump", [*args, "--format=directory", f"--jobs={jobs}", "-f", target]
        )
        with run_tool(argv, env, "pg_dump", stdout=run.DEVNULL):
            pass
    partial.chmod(0o700)
    for path in partial.iterdir():
        path.chmod(0o600)
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    files.fsync_dir(partial)


@contextlib.contextmanager
def run_tool(
    argv: list[str],
    env: dict[str, str],
    name: str,
    *,
    stdin: int | None = None,
    stdout: int = run.PIPE,
) -> Iterator[run.Process]:
    """Run a pg tool; keep the errors of its --verbose output; end with its first error.

    Leaving the block waits for the tool; an exception (Ctrl-C included) stops it first.
    """
    proc = run.start(argv, env=env, stdin=stdin, stdout=stdout)
    errors: list[str] = []
    reader = threading.Thread(target=_follow, args=(proc.stderr, errors))
    reader.start()
    try:
        yield proc
        proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        proc.wait()
        raise
    finally:
        reader.join()
    if proc.returncode != 0:
        # With --jobs the last lines only say a worker died; the first error is the cause.
        causes = [e for e in errors if "worker process died" not in e] or errors
        detail = causes[0] if causes else f"exit code {proc.returncode}"
        raise ToolFailed(name, detail)


class ToolFailed(StackError):
    """A pg tool ended with an error; `detail` is its first error line."""

    def __init__(self, tool: str, detail: str) -> None:
        super().__init__(f"{tool} failed: {detail.rstrip('.')}.")
        self.tool = tool
        self.detail = detail


def _follow(stream: IO[bytes] | None, errors: list[str]) -> None:
    """Read a pg tool's --verbose output for its errors (progress comes from the server)."""
    assert stream is not None
    for raw in stream:
        line = raw.decode("utf-8", "replace").strip()
        if re.search(r"(?:^|: )(?:error|ERROR|FATAL|fatal):", line):
            errors.append(re.sub(r"^(pg_dump|pg_restore|psql): (error: )?", "", line))
