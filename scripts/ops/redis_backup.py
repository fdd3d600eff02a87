"""Redis's backup: a point-in-time copy of its data (BGSAVE), beside the database's backups."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.errors import StackError
from scripts.files import fsync_dir
from scripts.infra import lock, wait
from scripts.ops.backup_files import (
    PARTIAL_PREFIX,
    hash_file,
    make_backup_dir,
    manifest_path,
    remove_path,
    timestamp,
    write_failed,
    write_private,
)

if TYPE_CHECKING:
    from scripts.backends.base import Backend
    from scripts.settings import Settings


@dataclass(frozen=True)
class RedisBackup:
    path: Path
    keys: int
    size: int


def redis_snapshot(settings: Settings, backend: Backend, timeout: float = 300) -> RedisBackup:
    """A point-in-time copy of Redis: BGSAVE, wait for it, copy dump.rdb beside the backups."""
    with lock.held(settings.state_dir):
        return _redis_snapshot(settings, backend, timeout)


def _redis_snapshot(settings: Settings, backend: Backend, timeout: float) -> RedisBackup:
    import time

    from scripts.infra.probes import ProtocolError, RedisError, redis_command

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

    def saved() -> dict[str, str] | None:
        state = info()
        done = state.get("rdb_bgsave_in_progress") == "0" and int(ask("LASTSAVE")) > before
        return state if done else None

    state = wait.until(saved, timeout=timeout)
    if state is None:
        raise StackError(
            f"Redis's BGSAVE did not finish within {timeout:.0f} s: see `inv logs -s redis`."
        )
    if state.get("rdb_last_bgsave_status") != "ok":
        raise StackError("Redis's BGSAVE failed: see `inv logs -s redis` (disk full?).")
    make_backup_dir(settings.backup_dir)
    final = settings.backup_dir / f"redis-{timestamp()}.rdb"
    partial = final.with_name(PARTIAL_PREFIX + final.name)
    try:
        backend.copy_service_file("redis", "dump.rdb", partial)
        partial.chmod(0o600)
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        partial.rename(final)
        fsync_dir(final.parent)
    except OSError as exc:
        remove_path(partial)
        raise write_failed(partial.parent, exc) from None
    except BaseException:
        remove_path(partial)
        raise
    digest, size = hash_file(final)
    manifest = manifest_path(final)
    write_private(
        manifest_path(partial),
        json.dumps({"file": final.name, "sha256": digest, "size": size, "keys": keys}, indent=2)
        + "\n",
    )
    manifest_path(partial).rename(manifest)
    fsync_dir(manifest.parent)
    return RedisBackup(final, keys, size)
