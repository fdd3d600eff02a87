"""Copies of a database inside the stack's server, the step under snapshots and branches.

PostgreSQL copies a database (CREATE DATABASE ... TEMPLATE) only while nobody is connected
to it; STRATEGY FILE_COPY copies its files (a checkpoint, then a file copy: seconds per GB)
instead of WAL-logging every block, which only small databases copy faster. While a copy is
taken, the source refuses new connections, so an application that reconnects at once cannot
spoil it. A journal in the
state dir says what a killed command left half done; `recover` puts it in order: the source
open again, a half copy dropped, a rollback finished or undone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scripts import names
from scripts.errors import StackError
from scripts.infra import crashpoints
from scripts.ops import journals, swap

if TYPE_CHECKING:
    import psycopg

    from scripts.settings import Settings

Announce = Callable[[str], None]
# Below this size WAL_LOG copies faster: FILE_COPY's two checkpoints cost more than the data
# (measured here: 8 MB 0.14 s WAL_LOG vs 0.18-0.24 s FILE_COPY; 100 MB 0.52 s vs 0.38 s;
# 1 GB 5.7 s vs 2.8 s).
SMALL = 32 * 1024 * 1024


@dataclass(frozen=True)
class Journal:
    op: str  # "copy" (source -> partial) or "rollback" (live set aside, copied back)
    source: str  # the database copied (for a rollback: the snapshot)
    partial: str  # the copy under its temporary name (for a rollback: the old live one)
    live: str = ""  # rollback only: the live database's name
    keep_as: str = ""  # rollback only: what the old live database becomes once done
    keep_comment: str = ""
    redis: bool = False  # rollback only: Redis's data goes back too (ops.redis_copies.PENDING)


def journal_path(settings: Settings) -> Path:
    return journals.copy(settings)


def _write_journal(settings: Settings, journal: Journal) -> None:
    from scripts.files import write_atomic

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(journal_path(settings), json.dumps(asdict(journal)) + "\n")


def _clear_journal(settings: Settings) -> None:
    journal_path(settings).unlink(missing_ok=True)


def pending(settings: Settings) -> bool:
    return journals.copy(settings).exists()


def temporary_name(settings: Settings) -> str:
    """A new name for a copy being made (or a database set aside): never listed as done."""
    base = settings.postgres_base_db
    name = names.partial_database(base, swap.stamp(fine=True))
    if len(name.encode()) > 63:
        room = 63 - (len(name.encode()) - len(base.encode()))
        raise StackError(
            f"POSTGRES_DB={base} is too long for snapshots and branches, whose databases "
            f"are named after it: at most {room} bytes leave room for their names."
        )
    return name


def execute(conn: psycopg.Connection[Any], statement: str, *identifiers: str) -> None:
    """Run `statement` with `{}` placeholders filled by quoted identifiers."""
    from psycopg import sql

    conn.execute(sql.SQL(statement).format(*(sql.Identifier(i) for i in identifiers)))


def drop(conn: psycopg.Connection[Any], *databases: str) -> None:
    """Drop databases that may or may not exist, ending whatever is connected to them."""
    for database in databases:
        execute(conn, "DROP DATABASE IF EXISTS {} WITH (FORCE)", database)


def connections(conn: psycopg.Connection[Any], database: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        [database],
    ).fetchone()
    return int(row[0]) if row else 0


def owner(conn: psycopg.Connection[Any], database: str) -> str:
    row = conn.execute(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", [database]
    ).fetchone()
    if row is None:
        raise StackError(f"Database {database!r} does not exist.")
    return str(row[0])


def comment(conn: psycopg.Connection[Any], database: str) -> str | None:
    """The comment on `database` (None when it has none, or does not exist)."""
    row = conn.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
        [database],
    ).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def _existing_owner(conn: psycopg.Connection[Any], settings: Settings, database: str) -> str:
    """The owner of `database`, which must exist; for the current branch's database a
    missing one is named with the way back."""
    try:
        return owner(conn, database)
    except StackError:
        pass
    if database == settings.postgres_db and settings.postgres_branch != names.MAIN:
        raise StackError(
            f"POSTGRES_BRANCH={settings.postgres_branch} names no database ({database!r} does "
            "not exist): `inv db.branch --list` shows the branches; `inv db.branch --switch "
            "main` goes back to the stack's own. Nothing was changed."
        )
    raise StackError(f"Database {database!r} does not exist. Nothing was changed.")


def set_comment(conn: psycopg.Connection[Any], database: str, comment: str) -> None:
    from psycopg import sql

    conn.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(database), sql.Literal(comment)
        )
    )


def copy(
    conn: psycopg.Connection[Any],
    settings: Settings,
    source: str,
    announce: Announce,
) -> tuple[str, int]:
    """Copy `source` to a new database under a temporary name; return that name and how many
    connections had to end. The caller renames it to what it is (a complete copy)."""
    role = _existing_owner(conn, settings, source)  # before the journal: nothing to undo
    partial = temporary_name(settings)
    _write_journal(settings, Journal("copy", source, partial))
    ended = _closed(conn, source, announce, "copies")
    try:
        crashpoints.reached("copy.closed")
        create(conn, partial, source, role)
        crashpoints.reached("copy.created")
    finally:
        execute(conn, "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", source)
        _clear_journal(settings)
    return partial, ended


def rollback(
    conn: psycopg.Connection[Any],
    settings: Settings,
    snapshot: str,
    keep_as: str,
    keep_comment: str,
    announce: Announce,
    *,
    consume: bool = False,
    redis: bool = False,
) -> int:
    """Make the live database a copy of `snapshot`; the old one becomes `keep_as` (replacing
    it) with `keep_comment`. When `snapshot` is `keep_as` itself (an undo), or may be used up
    (`consume`: a spare copy), it is renamed into place instead, which costs no copy. With
    `redis`, Redis's data is put back from ops.redis_copies.PENDING once the database is in
    place and before the journal goes, so a killed rollback is finished with Redis too.
    Returns how many connections had to end."""
    live = settings.postgres_db
    app = _existing_owner(conn, settings, live)  # before the journal: nothing to undo
    aside = temporary_name(settings)
    journal = Journal("rollback", snapshot, aside, live, keep_as, keep_comment, redis)
    _write_journal(settings, journal)
    ended = _closed(conn, live, announce, "replaces")
    crashpoints.reached("rollback.closed")
    execute(conn, "ALTER DATABASE {} RENAME TO {}", live, aside)
    crashpoints.reached("rollback.set-aside")
    if snapshot == keep_as or consume:  # renamed into place: no copy
        execute(conn, "ALTER DATABASE {} RENAME TO {}", snapshot, live)
        crashpoints.reached("rollback.copied")
        execute(conn, "ALTER DATABASE {} OWNER TO {}", live, app)  # as a copy would have it
        execute(conn, "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", live)
        _keep(conn, journal)
        _redis_back(settings, journal)
        _clear_journal(settings)
        return ended
    try:
        create(conn, live, snapshot, app)
    except StackError:
        execute(conn, "ALTER DATABASE {} RENAME TO {}", aside, live)
        execute(conn, "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", live)
        _clear_journal(settings)
        raise
    crashpoints.reached("rollback.copied")
    _keep(conn, journal)
    _redis_back(settings, journal)
    _clear_journal(settings)
    return ended


def _redis_back(settings: Settings, journal: Journal) -> None:
    """A rollback --with-redis: Redis's data as the snapshot holds it (the pending copy),
    once the database is the snapshot's; the pending copy goes with the journal."""
    from scripts.ops import redis_copies

    pending = redis_copies.path(settings, redis_copies.PENDING)
    if journal.redis and pending.exists():
        redis_copies.put_back(settings, redis_copies.load(settings, redis_copies.PENDING))
    _drop_pending_redis(settings)


def _keep(conn: psycopg.Connection[Any], journal: Journal) -> None:
    """The old live database becomes the `keep_as` snapshot (dropping an older one)."""
    drop(conn, journal.keep_as)
    execute(conn, "ALTER DATABASE {} RENAME TO {}", journal.partial, journal.keep_as)
    set_comment(conn, journal.keep_as, journal.keep_comment)


def _closed(conn: psycopg.Connection[Any], database: str, announce: Announce, verb: str) -> int:
    """Refuse new connections to `database` and end the open ones; say so before."""
    if count := connections(conn, database):
        announce(
            f"Ending {count} connection(s) to {database!r}: PostgreSQL {verb} a database only "
            "while nobody is connected to it (applications reconnect afterwards)."
        )
    execute(conn, "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false", database)
    try:
        return swap.close_connections(conn, database)
    except StackError:
        execute(conn, "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", database)
        raise


def create(conn: psycopg.Connection[Any], target: str, template: str, role: str) -> None:
    import psycopg

    from scripts.infra.database import describe

    row = conn.execute("SELECT pg_database_size(%s)", [template]).fetchone()
    strategy = "WAL_LOG" if row and int(row[0]) < SMALL else "FILE_COPY"
    try:
        execute(
            conn,
            f"CREATE DATABASE {{}} TEMPLATE {{}} STRATEGY {strategy} OWNER {{}}",
            target,
            template,
            role,
        )
    except psycopg.Error as exc:
        reason = describe(exc)
        hint = (
            ": free some disk space (`inv db.snapshots` lists what snapshots hold)"
            if "No space left" in reason or "could not extend" in reason
            else ""
        )
        raise StackError(
            f"PostgreSQL could not copy {template!r} ({reason}); nothing was changed{hint}."
        ) from None


def recover(settings: Settings) -> list[str]:
    """Put in order what a killed copy or rollback left; return what was done."""
    if not pending(settings):
        return []
    with swap.admin(settings) as conn:
        return _recover(conn, settings)


def _recover(conn: psycopg.Connection[Any], settings: Settings) -> list[str]:
    try:
        data = json.loads(journal_path(settings).read_text())
        journal = Journal(**data)
    except FileNotFoundError:
        return []
    except (ValueError, TypeError):
        _clear_journal(settings)
        return ["A damaged copy journal was removed."]
    _end_orphans(conn, journal.source, journal.partial, journal.live)
    present = swap.databases(conn)
    if journal.op == "copy":
        if journal.partial in present:
            drop(conn, journal.partial)
        if journal.source in present:
            execute(conn, "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", journal.source)
        note = f"A copy of {journal.source!r} was interrupted: the half copy was removed."
    elif journal.live not in present and journal.partial in present:
        execute(conn, "ALTER DATABASE {} RENAME TO {}", journal.partial, journal.live)
        execute(conn, "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", journal.live)
        note = f"A rollback of {journal.live!r} was interrupted: the database is as it was."
    elif journal.live not in present:  # a journal of a database gone since (dropped by hand)
        note = (
            f"A rollback of {journal.live!r} was interrupted, and that database no longer "
            "exists: there was nothing to put back."
        )
    elif journal.partial in present:
        _keep(conn, journal)
        execute(conn, "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", journal.live)
        _redis_back(settings, journal)
        note = f"A rollback of {journal.live!r} was interrupted after its copy: it was finished."
    else:
        execute(conn, "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", journal.live)
        if comment(conn, journal.keep_as) == journal.keep_comment:  # killed after _keep
            _redis_back(settings, journal)
            note = f"A rollback of {journal.live!r} was interrupted at its end: it was finished."
        else:  # killed before the live database was set aside: nothing else changed
            note = f"A rollback of {journal.live!r} was interrupted: the database is as it was."
    if journal.op == "rollback":
        _drop_pending_redis(settings)  # an undone rollback's; a finished one used it above
    _clear_journal(settings)
    return [note]


def _drop_pending_redis(settings: Settings) -> None:
    from scripts.ops import redis_copies

    redis_copies.path(settings, redis_copies.PENDING).unlink(missing_ok=True)


def _end_orphans(conn: psycopg.Connection[Any], *databases: str) -> None:
    """End the statements a killed command left running on the server, and wait for them.

    PostgreSQL notices a client is gone only when it next talks to it: a CREATE DATABASE
    copying a gigabyte runs to its end after `kill -9` of the command, and would create the
    copy after recovery removed it (or the live database while recovery renames the old one
    back). Only statements on this journal's databases are ended; recovery runs only while no
    command of this stack holds its lock, so none of them is still wanted."""
    names = [d for d in databases if d]
    rows = conn.execute(
        "SELECT pid, query FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
        "AND state = 'active' AND backend_type = 'client backend'"
    ).fetchall()
    for pid, query in rows:
        statement = str(query).lstrip().upper()
        ours = statement.startswith(("CREATE DATABASE", "ALTER DATABASE", "DROP DATABASE"))
        if ours and any(name in str(query) for name in names):
            conn.execute("SELECT pg_terminate_backend(%s, 30000)", [pid])


def tidy(conn: psycopg.Connection[Any], settings: Settings) -> list[str]:
    """Before a change (under the stack's lock): finish or undo a killed copy or rollback,
    then drop the half copies no journal accounts for; return what was done."""
    notes = _recover(conn, settings)
    found = leftovers(conn, settings)
    drop(conn, *found)
    return [*notes, *(f"database {name}" for name in found)]


def leftovers(conn: psycopg.Connection[Any], settings: Settings) -> list[str]:
    """Temporary copies no journal accounts for (a command killed before it wrote one)."""
    if pending(settings):
        return []
    base = settings.postgres_base_db
    return sorted(n for n in swap.databases(conn) if names.is_partial(base, n))


def remove_leftovers(settings: Settings) -> list[str]:
    """`tidy` for `inv clean`."""
    with swap.admin(settings) as conn:
        return tidy(conn, settings)


def leftovers_problem(settings: Settings, server_names: list[str]) -> str | None:
    """For `inv status`: half copies among the server's database names (swap.server_names),
    or a killed snapshot or rollback."""
    if pending(settings):
        return (
            "A snapshot, rollback or branch was interrupted: the next changing command (or "
            "`inv up-core`) puts it in order."
        )
    base = settings.postgres_base_db
    found = sorted(n for n in server_names if names.is_partial(base, n))
    if not found:
        return None
    return (
        f"Half copies left by killed snapshots or branches: {', '.join(found)} (disk space): "
        "`inv clean` removes them."
    )
