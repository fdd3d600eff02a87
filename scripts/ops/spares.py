"""A spare copy of the snapshot used last, made in the background, so that rolling back to it
is a rename instead of a copy (a copy of 1 GB costs seconds of disk writes; a rename costs
nothing).

After `inv db.snapshot NAME` or `inv db.rollback NAME`, a detached process copies the
snapshot once more, as <POSTGRES_DB>__spare__NAME, under a temporary name until complete.
It never touches the live database and takes no lock: a snapshot is never connected to, so
copying it can run beside anything, and until the spare is complete a rollback just copies
the snapshot itself; a spare records the generation of the snapshot it copied, and one of an
older generation (the snapshot "init" changes with each migration) is never used. One spare
exists at a time (the disk cost of one more copy of the
database); the spares of other snapshots, and of deleted ones, are dropped.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

from scripts import names
from scripts.errors import StackError
from scripts.ops import copies, swap

if TYPE_CHECKING:
    import psycopg

    from scripts.settings import Settings


def start(settings: Settings, name: str) -> None:
    """Make the spare of snapshot `name` in a process of its own (output: the state dir's
    logs/spares.log); return at once."""
    from scripts.infra import run

    env = {
        **os.environ,
        "STACK_ENV_FILE": str(settings.env_file),
        "PYTHONPATH": str(settings.root),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    log = settings.state_dir / "logs" / "spares.log"
    log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    run.spawn([sys.executable, "-m", "scripts.ops.spares", name], log, env=env)


def make(settings: Settings, name: str) -> str:
    """Copy snapshot `name` as its spare (dropping every other spare); say what was done."""
    from scripts.ops import snapshots  # which starts this module's process: imported late

    base = settings.postgres_base_db
    snapshot = names.snapshot_database(base, name)
    spare = names.spare_database(base, name)
    with swap.admin(settings) as conn:
        present = swap.databases(conn)
        for database in present:
            if names.spare_of(base, database) not in (None, name):
                copies.drop(conn, database)
        if snapshot not in present:
            return f"no snapshot {name!r}: no spare made"
        if spare in present:
            return f"the spare of {name!r} is there already"
        of = snapshots.generation(conn, snapshot)  # before the copy: never newer than it
        partial = copies.temporary_name(settings)
        copies.create(conn, partial, snapshot, copies.owner(conn, snapshot))
        copies.execute(conn, "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false", partial)
        copies.set_comment(conn, partial, json.dumps({"spare_of": name, "generation": of}))
        if snapshot not in swap.databases(conn):  # deleted meanwhile
            copies.drop(conn, partial)
            return f"snapshot {name!r} was deleted meanwhile: no spare made"
        copies.execute(conn, "ALTER DATABASE {} RENAME TO {}", partial, spare)
    return f"the spare of {name!r} is ready"


def drop(conn: psycopg.Connection[Any], settings: Settings, name: str) -> None:
    """Drop the spare of snapshot `name`, if there is one."""
    copies.drop(conn, names.spare_database(settings.postgres_base_db, name))


def main(argv: list[str]) -> int:
    import datetime as dt

    from scripts.settings import load

    try:
        outcome = make(load(), argv[0])
    except StackError as exc:
        outcome = f"no spare made: {exc.message}"
    print(
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} spare of {argv[0]!r}: {outcome}", flush=True
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
