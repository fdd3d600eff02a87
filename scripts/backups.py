"""Database backups: create (consistent snapshot, atomic name, manifest), list, verify, prune.

A backup is a standard pg_dump file (custom, plain SQL gzipped, or a directory) plus a JSON
manifest beside it: sha256, size, format, database, server version, time, row counts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from scripts.console import display_path
from scripts.errors import StackError

if TYPE_CHECKING:
    from scripts.backends import Backend
    from scripts.settings import Settings

FORMATS = {"custom": ".dump", "sql": ".sql.gz", "directory": ".dir"}
MANIFEST_SUFFIX = ".manifest.json"
PARTIAL_PREFIX = ".partial-"
_CHUNK = 1 << 20
Progress = Callable[[int, int, str], None]  # (done, total, what)


@dataclass(frozen=True)
class Manifest:
    file: str
    format: str  # custom | sql | directory
    sha256: str
    size: int
    database: str
    server_version: str
    created_at: str  # ISO 8601, UTC
    seconds: float
    tables: dict[str, int]

    @classmethod
    def read(cls, backup: Path) -> Manifest | None:
        path = manifest_path(backup)
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise StackError(
                f"{display_path(path)} is not a readable manifest ({exc}): delete it to restore "
                "the backup without its checks."
            ) from None


def manifest_path(backup: Path) -> Path:
    return backup.with_name(backup.name + MANIFEST_SUFFIX)


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: Manifest


def timestamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")


def _name(settings: Settings, fmt: str, name: str | None) -> str:
    if fmt not in FORMATS:
        raise StackError(f"--format {fmt!r} is not a backup format: use custom, sql or directory.")
    base = name or f"{settings.postgres_db}-{timestamp()}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", base) or base.startswith(PARTIAL_PREFIX):
        raise StackError(
            f"--name {base!r} is not a usable file name: use letters, digits, '.', '_' and '-'."
        )
    return base if base.endswith(FORMATS[fmt]) else base + FORMATS[fmt]


Rows = list[tuple[Any, ...]]


@contextlib.contextmanager
def snapshot(settings: Settings) -> Iterator[tuple[Callable[[str], Rows], str]]:
    """A read-only transaction whose snapshot pg_dump shares (--snapshot), so the manifest's
    row counts describe exactly what the dump holds, even while the application writes.

    Yields a function that runs SQL in that transaction, and the snapshot's id. It speaks
    through the tasks' own client (scripts.probes), not psycopg, whose import would delay
    pg_dump's start by ~0.15 s.
    """
    from scripts import probes, roles

    login = roles.login(settings)
    try:
        session = probes.PgSession(login, timeout=10, query_timeout=None)
    except probes.PgError as exc:
        if exc.code == "53300":  # too_many_connections
            raise StackError(
                f"PostgreSQL has no free connection for the backup ({exc.message.rstrip('.')}): "
                "close some of the application's connections and run it again."
            ) from None
        raise StackError(
            f"PostgreSQL refused the backup's login ({exc.message.rstrip('.')}): check "
            f"the POSTGRES_* settings in {display_path(settings.env_file)}."
        ) from None
    except (OSError, probes.ProtocolError) as exc:
        why = probes.unreachable(exc, login.host, login.port).detail
        raise StackError(
            f"Cannot connect to PostgreSQL ({why}): start the stack with `inv up-core`."
        ) from None
    with session:
        session.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield session.query, str(session.query("SELECT pg_export_snapshot()")[0][0])


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
    """pg_dump the stack's database into BACKUP_DIR under a temporary name, fsync, rename."""
    if jobs < 1:
        raise StackError(f"--jobs {jobs} is not a number of parallel jobs: use 1 or more.")
    if jobs > 1 and fmt != "directory":
        raise StackError("--jobs needs --format directory (pg_dump writes in parallel only there).")
    from scripts.stack import locked

    with locked(settings):  # one backup of this stack at a time: its names stay its own
        return _create(
            settings,
            backend,
            fmt=fmt,
            final=_final_path(settings, fmt, name),
            jobs=jobs,
            progress=progress,
        )


def _final_path(settings: Settings, fmt: str, name: str | None) -> Path:
    final = settings.backup_dir / _name(settings, fmt, name)
    if final.exists() and name is not None:
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

    settings.backup_dir.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(PARTIAL_PREFIX + final.name)
    manifest_partial = manifest_path(partial)
    # The stack lock is held: a partial file now is one a killed backup left behind.
    _remove(partial)
    _remove(manifest_partial)
    started = dt.datetime.now(dt.UTC)
    try:
        with snapshot(settings) as (query, snapshot_id), ThreadPoolExecutor(1) as counter:
            tables = user_tables(query)
            version = str(query("SHOW server_version")[0][0])
            # Counting rows in the snapshot's own transaction while pg_dump runs hides the
            # cost (a scan of every table) behind the dump.
            counting = counter.submit(row_counts, query, tables)
            args = [f"--snapshot={snapshot_id}", "--verbose", "-d", settings.postgres_db]
            if fmt == "directory":
                _dump_directory(
                    backend, args, partial, jobs=jobs, tables=len(tables), progress=progress
                )
                digest, size = _hash_directory(partial)
            else:
                args += ["--format=custom"] if fmt == "custom" else ["--format=plain", "-Z", "6"]
                digest, size = _dump_stream(backend, args, partial, len(tables), progress)
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
        _write_private(manifest_partial, json.dumps(asdict(manifest), indent=2) + "\n")
        partial.rename(final)
        manifest_partial.rename(manifest_path(final))
        _fsync_dir(final.parent)
    except ToolFailed as exc:
        _remove(partial)
        _remove(manifest_partial)
        if "No space left on device" in exc.detail:
            raise _write_failed(partial, OSError(28, "No space left on device")) from None
        raise
    except OSError as exc:
        _remove(partial)
        _remove(manifest_partial)
        raise _write_failed(partial, exc) from None
    except BaseException:
        _remove(partial)
        _remove(manifest_partial)
        raise
    return BackupResult(final, manifest)


def _dump_stream(
    backend: Backend, args: list[str], partial: Path, tables: int, progress: Progress | None
) -> tuple[str, int]:
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
        with run_tool(argv, env, tables, progress, "pg_dump", stdout=subprocess.DEVNULL):
            pass
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        return hash_file(partial)
    argv, env = backend.pg_command("pg_dump", args)
    with os.fdopen(fd, "wb") as out, run_tool(argv, env, tables, progress, "pg_dump") as proc:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            try:
                out.write(chunk)
            except OSError as exc:
                proc.kill()
                raise _write_failed(partial, exc) from None
        try:
            out.flush()
            os.fsync(out.fileno())
        except OSError as exc:
            raise _write_failed(partial, exc) from None
    return digest.hexdigest(), size


def _dump_directory(
    backend: Backend,
    args: list[str],
    partial: Path,
    *,
    jobs: int,
    tables: int,
    progress: Progress | None,
) -> None:
    with backend.pg_output_dir(partial) as target:
        argv, env = backend.pg_command(
            "pg_dump", [*args, "--format=directory", f"--jobs={jobs}", "-f", target]
        )
        with run_tool(argv, env, tables, progress, "pg_dump", stdout=subprocess.DEVNULL):
            pass
    partial.chmod(0o700)
    for path in partial.iterdir():
        path.chmod(0o600)
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    _fsync_dir(partial)


@contextlib.contextmanager
def run_tool(
    argv: list[str],
    env: dict[str, str],
    tables: int,
    progress: Progress | None,
    name: str,
    *,
    stdin: int | None = None,
    stdout: int = subprocess.PIPE,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a pg tool; count its --verbose per-table lines as progress; end with its error.

    Leaving the block waits for the tool; an exception (Ctrl-C included) stops it first.
    """
    proc = subprocess.Popen(
        argv,
        env=env,
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        preexec_fn=die_with_parent(),  # noqa: PLW1509 - only prctl, with nothing to import
    )
    errors: list[str] = []
    reader = threading.Thread(target=_follow, args=(proc.stderr, tables, progress, errors))
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


def die_with_parent() -> Callable[[], None] | None:
    """For a child process: end it (SIGTERM) when this process dies, even by SIGKILL, so no
    pg_dump or pg_restore goes on writing for nobody. Linux's prctl(PR_SET_PDEATHSIG);
    elsewhere nothing (None). The function is made here, in the parent, so the child only
    calls it: nothing to import or load between fork and exec."""
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # libc's, in this process already
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the line above
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


class ToolFailed(StackError):
    """A pg tool ended with an error; `detail` is its first error line."""

    def __init__(self, tool: str, detail: str) -> None:
        super().__init__(f"{tool} failed: {detail.rstrip('.')}.")
        self.tool = tool
        self.detail = detail


def _follow(
    stream: IO[bytes] | None, tables: int, progress: Progress | None, errors: list[str]
) -> None:
    """Read a pg tool's --verbose output: a table's data starting is progress, errors kept."""
    seen: set[str] = set()
    assert stream is not None
    for raw in stream:
        line = raw.decode("utf-8", "replace").strip()
        what = re.search(r"(?:processing data for|dumping contents of) table \"?([^\"]+)\"?", line)
        if what:
            seen.add(what[1])
            if progress is not None:
                progress(min(len(seen), tables), tables, what[1])
        elif re.search(r"(?:^|: )(?:error|ERROR|FATAL|fatal):", line):
            errors.append(re.sub(r"^(pg_dump|pg_restore|psql): (error: )?", "", line))


def _write_failed(partial: Path, exc: OSError) -> StackError:
    return StackError(
        f"Could not write the backup in {display_path(partial.parent)} ({exc.strerror}): free "
        "some disk space or set BACKUP_DIR to another disk. Nothing was kept."
    )


def _hash_directory(path: Path) -> tuple[str, int]:
    """sha256 over every file's name and content, in name order; total size."""
    digest = hashlib.sha256()
    size = 0
    for file in sorted(path.iterdir()):
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    return digest.hexdigest(), size


def hash_file(path: Path) -> tuple[str, int]:
    if path.is_dir():
        return _hash_directory(path)
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _write_private(path: Path, text: str) -> None:
    """Write a small file readable by its owner alone, fsynced; `path` as given (callers that
    need atomicity pass a temporary name and rename it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# --- reading backups ------------------------------------------------------------------------


def detect_format(path: Path) -> str:
    """custom | directory | sql | sql.gz, from the content (not the name)."""
    if path.is_dir():
        if (path / "toc.dat").is_file():
            return "directory"
        raise StackError(
            f"{display_path(path)} is a directory without toc.dat: not a pg_dump directory backup."
        )
    with path.open("rb") as handle:
        head = handle.read(4096)
    if head.startswith(b"PGDMP"):
        return "custom"
    if head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as handle:
                text = handle.read(4096)
        except (OSError, EOFError) as exc:
            raise StackError(f"{display_path(path)} is a damaged gzip file ({exc}).") from None
        if _looks_like_sql(text):
            return "sql.gz"
    elif _looks_like_sql(head):
        return "sql"
    raise StackError(
        f"{display_path(path)} is not a PostgreSQL backup (pg_dump custom, directory, .sql or "
        ".sql.gz): choose a file made by `inv db.backup` or pg_dump."
    )


def _looks_like_sql(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character may be cut at the end of the sample.
        try:
            text = head[:-4].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return bool(
        re.search(
            r"^\s*(--|SET\s|CREATE\s|INSERT\s|COPY\s|BEGIN|SELECT\s|ALTER\s|\\connect)",
            text,
            re.IGNORECASE | re.MULTILINE,
        )
    )


@dataclass(frozen=True)
class BackupInfo:
    path: Path
    format: str
    size: int
    created: dt.datetime
    verified: str  # "verified", "no manifest", "DAMAGED: ..."


def list_backups(settings: Settings, *, check: bool = True) -> list[BackupInfo]:
    """Every finished backup in BACKUP_DIR, oldest first (temporary files are not listed)."""
    directory = settings.backup_dir
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        if path.name.startswith((PARTIAL_PREFIX, ".")) or path.name.endswith(MANIFEST_SUFFIX):
            continue
        if not (path.is_dir() or path.name.endswith((".dump", ".sql", ".sql.gz", ".backup"))):
            continue
        try:
            manifest = Manifest.read(path)
            created = dt.datetime.fromisoformat(manifest.created_at) if manifest else None
        except (StackError, ValueError):  # one damaged manifest must not hide the rest
            found.append(
                BackupInfo(
                    path,
                    _format_or_unknown(path),
                    hash_file(path)[1],
                    dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC),
                    "DAMAGED: unreadable manifest",
                )
            )
            continue
        if manifest is not None and created is not None:
            fmt, size = manifest.format, manifest.size
            verified = _verify_digest(path, manifest) if check else "not checked"
        else:
            created = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
            fmt = _format_or_unknown(path)
            size = hash_file(path)[1] if path.is_dir() else path.stat().st_size
            verified = "no manifest"
        found.append(BackupInfo(path, fmt, size, created, verified))
    return sorted(found, key=lambda info: info.created)


def _format_or_unknown(path: Path) -> str:
    try:
        return detect_format(path)
    except StackError:
        return "unknown"


def _verify_digest(path: Path, manifest: Manifest) -> str:
    digest, size = hash_file(path)
    if size != manifest.size:
        return f"DAMAGED: {size} bytes, manifest says {manifest.size}"
    if digest != manifest.sha256:
        return "DAMAGED: sha256 differs from the manifest"
    return "verified"


def latest(settings: Settings) -> Path:
    backups = list_backups(settings, check=False)
    if not backups:
        raise StackError(
            f"There is no backup in {display_path(settings.backup_dir)}: make one with "
            "`inv db.backup`."
        )
    return backups[-1].path


def prune_candidates(settings: Settings, keep: int) -> list[BackupInfo]:
    if keep < 0:
        raise StackError(f"--keep {keep} is negative: give how many backups to keep (0 or more).")
    backups = list_backups(settings, check=False)
    return backups[: max(0, len(backups) - keep)]


def delete(info: BackupInfo) -> None:
    _remove(info.path)
    manifest_path(info.path).unlink(missing_ok=True)


def remove_abandoned(settings: Settings) -> list[str]:
    """Delete the partial files killed backups left behind. Call it holding the stack lock:
    every backup holds it while it writes, so no partial file then belongs to a running one."""
    removed = []
    if settings.backup_dir.is_dir():
        for path in settings.backup_dir.glob(PARTIAL_PREFIX + "*"):
            _remove(path)
            removed.append(display_path(path))
    return removed


def restore_command(path: Path) -> str:
    return f"inv db.restore {display_path(path)}"


# --- Redis ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisBackup:
    path: Path
    keys: int
    size: int


def redis_snapshot(settings: Settings, backend: Backend, timeout: float = 300) -> RedisBackup:
    """A point-in-time copy of Redis: BGSAVE, wait for it, copy dump.rdb beside the backups."""
    from scripts.stack import locked

    with locked(settings):
        return _redis_snapshot(settings, backend, timeout)


def _redis_snapshot(settings: Settings, backend: Backend, timeout: float) -> RedisBackup:
    import time

    from scripts.probes import ProtocolError, RedisError, redis_command

    address = (settings.connect_host, settings.redis_port)
    password = settings.redis_password.reveal()

    def ask(*args: str) -> str:
        try:
            reply = redis_command(address, password, *args, timeout=10)
        except (OSError, ProtocolError, RedisError) as exc:
            raise StackError(
                f"Redis did not answer {args[0]} ({exc}): start it with `inv up-core`."
            ) from None
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    def info() -> dict[str, str]:
        lines = ask("INFO", "persistence").splitlines()
        return dict(line.split(":", 1) for line in lines if ":" in line)

    before = int(ask("LASTSAVE"))
    if int(time.time()) <= before:  # LASTSAVE counts seconds: make ours tell apart
        time.sleep(1.05)
    keys = int(ask("DBSIZE"))
    ask("BGSAVE", "SCHEDULE")  # SCHEDULE: runs after an AOF rewrite in progress, if any
    deadline = time.monotonic() + timeout
    while True:
        state = info()
        if state.get("rdb_bgsave_in_progress") == "0" and int(ask("LASTSAVE")) > before:
            break
        if time.monotonic() > deadline:
            raise StackError(
                f"Redis's BGSAVE did not finish within {timeout:.0f} s: see `inv logs -s redis`."
            )
        time.sleep(0.05)
    if state.get("rdb_last_bgsave_status") != "ok":
        raise StackError("Redis's BGSAVE failed: see `inv logs -s redis` (disk full?).")
    settings.backup_dir.mkdir(parents=True, exist_ok=True)
    final = settings.backup_dir / f"redis-{timestamp()}.rdb"
    partial = final.with_name(PARTIAL_PREFIX + final.name)
    try:
        backend.copy_service_file("redis", "dump.rdb", partial)
        partial.chmod(0o600)
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        partial.rename(final)
        _fsync_dir(final.parent)
    except OSError as exc:
        _remove(partial)
        raise _write_failed(partial, exc) from None
    except BaseException:
        _remove(partial)
        raise
    digest, size = hash_file(final)
    manifest = manifest_path(final)
    _write_private(
        manifest_path(partial),
        json.dumps({"file": final.name, "sha256": digest, "size": size, "keys": keys}, indent=2)
        + "\n",
    )
    manifest_path(partial).rename(manifest)
    _fsync_dir(manifest.parent)
    return RedisBackup(final, keys, size)
