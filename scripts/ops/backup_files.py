"""The backup files in BACKUP_DIR: their manifests and formats, checksums, the list of them,
the newest, pruning, and what killed backups left behind.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.console import closest, display_path
from scripts.errors import StackError, UsageError

if TYPE_CHECKING:
    from scripts.settings import Settings

_CHUNK = 1 << 20

FORMATS = {"custom": ".dump", "sql": ".sql.gz", "directory": ".dir"}


MANIFEST_SUFFIX = ".manifest.json"


PARTIAL_PREFIX = ".partial-"


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


def timestamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")


def write_failed(folder: Path, exc: OSError) -> StackError:
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some disk space or set BACKUP_DIR to another disk"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = "BACKUP_DIR must name a directory (or a path where one can be made): set it to one"
    else:  # permissions, a read-only disk, an immutable directory
        fix = "make it writable for this user, or set BACKUP_DIR to a directory that is"
    return StackError(
        f"Could not write the backup in {display_path(folder)} "
        f"({exc.strerror or exc}): {fix}. Nothing was kept."
    )


def make_backup_dir(backup_dir: Path) -> None:
    """BACKUP_DIR, made if missing; a path that cannot be one is a sentence, not a traceback."""
    try:
        backup_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failed(backup_dir, exc) from None


def hash_directory(path: Path) -> tuple[str, int]:
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
        return hash_directory(path)
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def write_private(path: Path, text: str) -> None:
    """Write a small file readable by its owner alone, fsynced; `path` as given (callers that
    need atomicity pass a temporary name and rename it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def remove_path(path: Path) -> None:
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


def find(settings: Settings, name: str) -> Path:
    """The backup a user names: a name in BACKUP_DIR (as `inv db.backups` lists it, with or
    without its extension), else a path. A bare name is looked up in BACKUP_DIR first."""
    given = Path(name).expanduser()
    bare = "/" not in name and name not in (".", "..")
    if bare:
        exact = settings.backup_dir / name
        if exact.exists() and not name.startswith(PARTIAL_PREFIX):
            return exact.absolute()
        found = [settings.backup_dir / (name + suffix) for suffix in (*FORMATS.values(), ".sql")]
        found = [p for p in found if p.exists()]
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise UsageError(f"{name!r} names {len(found)} backups ({names}): give the full name.")
        if found:
            return found[0].absolute()
    if given.exists():
        return given.absolute()
    known = [i.path.name for i in list_backups(settings, check=False)] if bare else []
    stems = {n: n for n in known} | {_stem(n): n for n in known}
    guess = closest(name, stems)
    hint = f"did you mean {stems[guess]!r}? " if guess else ""
    where = display_path(settings.backup_dir)
    raise StackError(
        f"No backup named {name!r} in {where} and no such path: {hint}"
        "(`inv db.backups` lists them)."
    )


def _stem(name: str) -> str:
    for suffix in (*FORMATS.values(), ".sql"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def prune_candidates(settings: Settings, keep: int) -> list[BackupInfo]:
    if keep < 0:
        raise UsageError(f"--keep {keep} is negative: give how many backups to keep (0 or more).")
    backups = list_backups(settings, check=False)
    return backups[: max(0, len(backups) - keep)]


def delete(info: BackupInfo) -> None:
    remove_path(info.path)
    manifest_path(info.path).unlink(missing_ok=True)


def remove_abandoned(settings: Settings) -> list[str]:
    """Delete the partial files killed backups left behind. Call it holding the stack lock:
    every backup holds it while it writes, so no partial file then belongs to a running one."""
    removed = []
    if settings.backup_dir.is_dir():
        for path in settings.backup_dir.glob(PARTIAL_PREFIX + "*"):
            remove_path(path)
            removed.append(display_path(path))
    return removed


def restore_command(path: Path) -> str:
    return f"inv db.restore {display_path(path)}"


# --- Redis ----------------------------------------------------------------------------------
