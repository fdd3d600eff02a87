"""Snapshots: whole copies of the live database kept inside the stack's server, for the
try-and-go-back loop (scripts.ops.copies makes them), with Redis's data beside them on demand.

A snapshot is a database named <POSTGRES_DB>__snapshot__<name> that refuses connections; a
comment on it records when it was taken, of which branch, and whether Redis was copied. It
exists under that name only once complete. Two names are the stack's own: "init", the state
right after `inv init` that `inv db.reset` returns to, and "undo", the state a rollback
replaced. Snapshots are not backups: they live in the stack and go with `inv reset`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scripts import names
from scripts.errors import StackError, UsageError
from scripts.infra import crashpoints
from scripts.ops import copies, redis_copies, spares, swap
from scripts.ops.copies import Announce

if TYPE_CHECKING:
    import psycopg

    from scripts.settings import Settings

INIT = "init"
UNDO = "undo"
RESERVED = (INIT, UNDO)


@dataclass(frozen=True)
class Snapshot:
    name: str
    database: str
    size: int
    taken: dt.datetime | None
    branch: str  # the branch it was taken of
    redis: bool  # Redis's data was copied with it
    spare: bool = False  # a spare copy is ready: a rollback to it is a rename (ops.spares)


@dataclass(frozen=True)
class Taken:
    snapshot: Snapshot
    ended: int  # connections ended to take it
    seconds: float


@dataclass(frozen=True)
class RolledBack:
    snapshot: Snapshot
    database: str
    ended: int
    redis: bool
    seconds: float
    migrations: list[str]  # applied after a db.reset (this checkout's, newer than the snapshot)
    from_spare: bool = False  # its spare copy was renamed into place (no copy was made)


def check_name(name: str, settings: Settings, *, own: bool = False) -> None:
    """A usage error for a name no snapshot may have (or one of the stack's own, unless
    `own`)."""
    if bad := names.problem("snapshot", name):
        raise UsageError(bad)
    if name in RESERVED and not own:
        what = "what `inv db.reset` returns to" if name == INIT else "the last rollback's undo"
        raise UsageError(
            f"{name!r} is the name of the stack's own snapshot ({what}): choose another name."
        )
    base = settings.postgres_base_db
    if long := names.too_long(base, name, names.snapshot_database(base, name)):
        raise UsageError(long)


def list_snapshots(settings: Settings) -> list[Snapshot]:
    with swap.admin(settings) as conn:
        return _listed(conn, settings)


def _listed(conn: psycopg.Connection[Any], settings: Settings) -> list[Snapshot]:
    base = settings.postgres_base_db
    rows = conn.execute(
        "SELECT datname, pg_database_size(oid), shobj_description(oid, 'pg_database') "
        "FROM pg_database ORDER BY datname"
    ).fetchall()
    spares = {names.spare_of(base, str(r[0])) for r in rows} - {None}
    found = []
    for database, size, comment in rows:
        name = names.snapshot_of(base, str(database))
        if name is None:
            continue
        meta = _meta(comment)
        taken = meta.get("taken")
        found.append(
            Snapshot(
                name,
                str(database),
                int(size),
                dt.datetime.fromisoformat(taken) if isinstance(taken, str) else None,
                str(meta.get("branch", "?")),
                bool(meta.get("redis")) and redis_copies.path(settings, name).exists(),
                name in spares,
            )
        )
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    return sorted(found, key=lambda s: (s.taken or epoch, s.name))


def _meta(comment: object) -> dict[str, Any]:
    try:
        data = json.loads(str(comment)) if comment else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _comment(settings: Settings, *, redis: bool) -> str:
    """What a snapshot's database comment records; `generation` changes whenever its contents
    do, so a spare copy made before (scripts.ops.spares) is never used for it."""
    import secrets

    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return json.dumps(
        {
            "taken": now,
            "branch": settings.postgres_branch,
            "redis": redis,
            "generation": secrets.token_hex(8),
        }
    )


def _comment_of(conn: psycopg.Connection[Any], database: str) -> dict[str, Any]:
    return _meta(copies.comment(conn, database))


def generation(conn: psycopg.Connection[Any], database: str) -> str | None:
    value = _comment_of(conn, database).get("generation")
    return str(value) if value else None


def _new_generation(conn: psycopg.Connection[Any], database: str) -> None:
    """The contents of snapshot `database` changed: spares made before are out of date."""
    import secrets

    comment = _comment_of(conn, database) | {"generation": secrets.token_hex(8)}
    copies.set_comment(conn, database, json.dumps(comment))


def find(settings: Settings, name: str) -> Snapshot:
    """The snapshot called `name`, or --latest's (the newest one a user took)."""
    from scripts.console import closest

    found = list_snapshots(settings)
    if name == "--latest":  # the current branch's: another branch's data never by accident
        taken = [s for s in found if s.name not in RESERVED]
        own = [s for s in taken if s.branch == settings.postgres_branch]
        if own:
            return own[-1]
        if taken:
            raise StackError(
                f"There is no snapshot of branch {settings.postgres_branch!r} yet (the others "
                "are of other branches; `inv db.snapshots` lists them, and a rollback to one "
                "by its name is yours to choose): take one with `inv db.snapshot`."
            )
        raise StackError("There is no snapshot yet: take one with `inv db.snapshot`.")
    by_name = {s.name: s for s in found}
    if name in by_name:
        return by_name[name]
    if bad := names.problem("snapshot", name):
        raise UsageError(bad)
    guess = closest(name, list(by_name))
    hint = f"did you mean {guess!r}? " if guess else ""
    raise StackError(f"There is no snapshot {name!r}: {hint}`inv db.snapshots` lists them.")


def take(
    settings: Settings, name: str, *, with_redis: bool, announce: Announce, own: bool = False
) -> Taken:
    """Copy the live database (and with `with_redis` Redis's data) as snapshot `name`."""
    import time

    from scripts.ops import stack

    check_name(name, settings, own=own)
    began = time.monotonic()
    with stack.locked(settings), swap.admin(settings) as conn:
        copies.tidy(conn, settings)
        target = names.snapshot_database(settings.postgres_base_db, name)
        if not own and target in swap.databases(conn):
            raise StackError(
                f"Snapshot {name!r} exists already: choose another name, or delete it first "
                f"with `inv db.snapshot --delete {name}`."
            )
        spares.drop(conn, settings, name)  # a spare of an earlier snapshot of this name
        partial, ended = copies.copy(conn, settings, settings.postgres_db, announce)
        crashpoints.reached("snapshot.copied")
        if with_redis:
            redis_copies.take(settings, name)
        else:
            redis_copies.path(settings, name).unlink(missing_ok=True)
        if own:
            copies.drop(conn, target)
        copies.set_comment(conn, partial, _comment(settings, redis=with_redis))
        copies.execute(conn, "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false", partial)
        copies.execute(conn, "ALTER DATABASE {} RENAME TO {}", partial, target)
        snapshot = next(s for s in _listed(conn, settings) if s.name == name)
    spares.start(settings, name)
    return Taken(snapshot, ended, time.monotonic() - began)


def delete(settings: Settings, name: str) -> Snapshot:
    from scripts.ops import stack

    snapshot = find(settings, name)
    with stack.locked(settings), swap.admin(settings) as conn:
        copies.drop(conn, snapshot.database)
        spares.drop(conn, settings, snapshot.name)
    redis_copies.path(settings, snapshot.name).unlink(missing_ok=True)
    return snapshot


def rollback(settings: Settings, name: str, *, with_redis: bool, announce: Announce) -> RolledBack:
    """The live database becomes snapshot `name`'s state; the state it had is kept as the
    snapshot "undo" (replacing the previous one), so a rollback can be rolled back."""
    snapshot = find(settings, name)
    branch = settings.postgres_branch
    if snapshot.name == UNDO and snapshot.branch not in (branch, "?"):
        raise StackError(
            f"The snapshot undo holds branch {snapshot.branch!r} as it was before its last "
            f"rollback, not {branch!r}: switch to it (`inv db.branch --switch "
            f"{snapshot.branch}`) to undo that rollback. Nothing was changed."
        )
    if snapshot.branch not in (branch, "?"):
        announce(
            f"Snapshot {snapshot.name!r} was taken of branch {snapshot.branch!r}: branch "
            f"{branch!r} becomes that state (its own is kept as the snapshot undo)."
        )
    return _rollback(settings, snapshot, with_redis=with_redis, announce=announce)


def _rollback(
    settings: Settings,
    snapshot: Snapshot,
    *,
    with_redis: bool,
    announce: Announce,
    keep_redis: bool | None = None,
) -> RolledBack:
    """`with_redis`: Redis's data too, from the snapshot. `keep_redis` (default: the same):
    the undo keeps Redis's data as it is now (db.reset --with-redis empties Redis without
    a copy in init, and its undo must still bring the keys back)."""
    import time

    from scripts.ops import stack

    if with_redis and not snapshot.redis:
        raise StackError(
            f"Snapshot {snapshot.name!r} holds no copy of Redis: roll back without "
            "--with-redis, or take snapshots with `inv db.snapshot --with-redis`."
        )
    began = time.monotonic()
    with stack.locked(settings), swap.admin(settings) as conn:
        copies.tidy(conn, settings)
        if with_redis:  # what a killed rollback's recovery puts back (copies._redis_back)
            redis_copies.set_pending(settings, snapshot.name)
        keep = with_redis if keep_redis is None else keep_redis
        if keep:  # "undo" holds Redis's data as it is now, too
            redis_copies.take(settings, UNDO)
        else:
            redis_copies.path(settings, UNDO).unlink(missing_ok=True)
        undo_comment = _comment(settings, redis=keep)
        base = settings.postgres_base_db
        spare = names.spare_database(base, snapshot.name)
        ready = (
            snapshot.name != UNDO
            and spare in swap.databases(conn)
            and generation(conn, spare) == generation(conn, snapshot.database) is not None
        )
        ended = copies.rollback(
            conn,
            settings,
            spare if ready else snapshot.database,
            names.snapshot_database(base, UNDO),
            undo_comment,
            announce,
            consume=ready,
            redis=with_redis,
        )
    if snapshot.name != UNDO:
        spares.start(settings, snapshot.name)  # for the next rollback to it
    seconds = time.monotonic() - began
    return RolledBack(snapshot, settings.postgres_db, ended, with_redis, seconds, [], ready)


def leftover_files(settings: Settings) -> list[Path]:
    return redis_copies.all_paths(settings)


def reset(settings: Settings, *, with_redis: bool, announce: Announce) -> RolledBack:
    """The live database back to the state right after `inv init` (the "init" snapshot, built
    from the init scripts when this stack has none), then this checkout's newer migrations."""
    import time

    from scripts.ops import migrations

    began = time.monotonic()
    init = next((s for s in list_snapshots(settings) if s.name == INIT), None)
    if init is None:
        announce("This stack has no post-init snapshot yet: building it from the init scripts.")
        build_init(settings)
        init = find(settings, INIT)
    result = _rollback(settings, init, with_redis=False, announce=announce, keep_redis=with_redis)
    if with_redis:
        file = redis_copies.path(settings, INIT)
        redis_copies.put_back(settings, redis_copies.load(settings, INIT) if file.exists() else [])
    applied = [f"{a.version}_{a.name}" for a in migrations.migrate(settings)]
    seconds = time.monotonic() - began
    return dataclasses.replace(result, redis=with_redis, seconds=seconds, migrations=applied)


def build_init(settings: Settings) -> None:
    """The "init" snapshot made from scratch: a new database, the init scripts' schema and
    seed, this checkout's migrations (for stacks initialised before snapshots existed)."""
    from scripts.infra.database import connect, describe
    from scripts.ops import migrations, stack

    base = settings.postgres_base_db
    target = names.snapshot_database(base, INIT)
    scripts_dir = settings.root / "docker" / "init-scripts"
    with stack.locked(settings), swap.admin(settings) as conn:
        copies.tidy(conn, settings)
        partial = copies.temporary_name(settings)
        app = copies.owner(conn, settings.postgres_db)
        copies.execute(conn, "CREATE DATABASE {} TEMPLATE template0 OWNER {}", partial, app)
        try:
            with connect(settings, dbname=partial, admin=True) as scratch:
                for script in sorted(scripts_dir.glob("*.sql")):
                    scratch.execute(script.read_text(encoding="utf-8"))
            migrations.migrate(settings, database=partial)
        except Exception as exc:
            copies.drop(conn, partial)
            reason = describe(exc) if not isinstance(exc, StackError) else exc.message
            raise StackError(f"The post-init snapshot could not be built: {reason}") from None
        copies.set_comment(conn, partial, _comment(settings, redis=False))
        copies.execute(conn, "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false", partial)
        copies.drop(conn, target)
        spares.drop(conn, settings, INIT)
        copies.execute(conn, "ALTER DATABASE {} RENAME TO {}", partial, target)


def _same_log_times(settings: Settings, target: str, versions: list[str]) -> None:
    """The migration log of `target` gets the live database's times for `versions`, so a
    reset gives exactly what the live database had right after migrating."""
    from scripts.infra.database import connect

    query = "SELECT version, applied_at FROM schema_migrations WHERE version = ANY(%s)"
    with connect(settings) as live:
        times = live.execute(query, [versions]).fetchall()
    with connect(settings, dbname=target) as copy:
        for version, applied_at in times:
            copy.execute(
                "UPDATE schema_migrations SET applied_at = %s WHERE version = %s",
                [applied_at, version],
            )


def migrate_init(settings: Settings) -> str | None:
    """Apply new migrations to the "init" snapshot too, so `inv db.reset` keeps them; return
    a warning when that failed (the snapshot is then dropped and rebuilt on the next reset)."""
    from scripts.ops import migrations, stack

    target = names.snapshot_database(settings.postgres_base_db, INIT)
    with stack.locked(settings), swap.admin(settings) as conn:
        if target not in swap.databases(conn):
            return None
        copies.execute(conn, "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", target)
        try:
            applied = migrations.migrate(settings, database=target)
            _same_log_times(settings, target, [a.version for a in applied])
            _new_generation(conn, target)
        except StackError as exc:
            copies.drop(conn, target)
            return (
                f"The post-init snapshot could not take the new migrations ({exc.message}); "
                "it was dropped, and the next `inv db.reset` builds it again."
            )
        finally:
            if target in swap.databases(conn):
                swap.close_connections(conn, target)
                copies.execute(conn, "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false", target)
    return None


def inventory(settings: Settings) -> list[str]:
    """What `inv reset` deletes besides the data itself: the snapshots and the branches,
    named (nothing when PostgreSQL does not run: it cannot be asked)."""
    from scripts.ops import branches

    try:
        found = list_snapshots(settings)
        others = [b for b in branches.list_branches(settings) if b.name != names.MAIN]
    except StackError:
        return []
    listed = []
    if found:
        listed.append(f"snapshots {', '.join(s.name for s in found)} (not backups)")
    if others:
        listed.append(
            f"branches {', '.join(b.name for b in others)} (the safety backup holds main's "
            "database only)"
        )
    return listed


def forget(settings: Settings) -> list[str]:
    """After `inv reset` (which made main the current branch before it deleted anything):
    the copies of Redis and the git pairs go too."""
    from scripts.ops import gitfollow

    gone = []
    for file in redis_copies.all_paths(settings):
        file.unlink(missing_ok=True)
        gone.append(f"Redis copy {file.name}")
    gitfollow.state_path(settings).unlink(missing_ok=True)
    return gone
