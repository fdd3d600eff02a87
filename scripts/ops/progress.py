"""How far a pg_dump or a restore is, as PostgreSQL itself reports it: the rows and bytes
of each COPY (pg_stat_progress_copy, PostgreSQL 14+) and the index being built
(pg_stat_progress_create_index), read from a connection of its own while the tool works.

Rows count against the totals known beforehand (the snapshot's exact counts for a backup,
the manifest's for a restore): a table whose COPY was seen and has ended counts in full.
A table too quick to be seen between two polls counts when the work ends.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from scripts.console import Amount, Progress

if TYPE_CHECKING:
    from scripts.settings import Settings

POLL = 0.5

_COPIES = """
SELECT relid::regclass::text, tuples_processed, bytes_processed
  FROM pg_stat_progress_copy
 WHERE datname = %s AND command = %s
"""
_INDEXES = """
SELECT relid::regclass::text, phase
  FROM pg_stat_progress_create_index
 WHERE datname = %s
"""


def _table(name: str) -> str:
    return name.removeprefix("public.").strip('"')


class CopyWatch:
    """Polls the progress views for the COPY commands of one kind in one database."""

    def __init__(
        self, totals: Mapping[str, int], report: Progress, *, command: str, indexes: bool
    ) -> None:
        self.totals = {_table(k): v for k, v in totals.items()}
        self.total = sum(self.totals.values()) or None
        self.report = report
        self.command = command
        self.indexes = indexes
        self.rows: dict[str, int] = {}  # per table: the rows seen copied so far
        self.bytes: dict[str, int] = {}
        self.copying: set[str] = set()
        self.done = 0

    def poll(self, query: Any, database: str) -> None:
        """One look at the views (through `query(sql, params) -> rows`); reports progress."""
        now = {}
        for name, tuples, size in query(_COPIES, (database, self.command)):
            table = _table(str(name))
            now[table] = table
            self.rows[table] = max(self.rows.get(table, 0), int(tuples or 0))
            self.bytes[table] = max(self.bytes.get(table, 0), int(size or 0))
        for ended in self.copying - set(now):
            self.rows[ended] = self.totals.get(ended, self.rows[ended])
        self.copying = set(now)
        what = ", ".join(sorted(self.copying))
        if self.indexes and not self.copying:
            built = query(_INDEXES, (database,))
            what = ", ".join(f"index on {_table(str(t))} ({phase})" for t, phase in built)
        self.done = max(self.done, sum(self.rows.values()))
        total = max(self.total or 0, self.done) or None
        self.report(Amount(self.done, total, sum(self.bytes.values()), what))

    def finish(self) -> None:
        """The work ended: every table counts in full."""
        if self.total:
            self.report(Amount(self.total, self.total, sum(self.bytes.values()), "done"))


@contextlib.contextmanager
def watched(
    settings: Settings,
    database: str,
    totals: Mapping[str, int],
    report: Progress | None,
    *,
    command: str,
    indexes: bool = False,
    admin: bool = False,
) -> Iterator[None]:
    """Watch the block's COPY commands (`command`: "COPY TO" for dumps, "COPY FROM" for
    loads) in `database`, reporting to `report`; nothing when `report` is None. The watcher
    connects to that database (table names resolve there), as the admin role when the tool
    runs as another role (whose progress the application's role may not read)."""
    if report is None:
        yield
        return
    from scripts.infra.database import connect

    watch = CopyWatch(totals, report, command=command, indexes=indexes)
    stop = threading.Event()

    def run() -> None:
        # Progress is a courtesy: a watcher that cannot connect leaves the work alone.
        with (
            contextlib.suppress(Exception),
            connect(settings, dbname=database, admin=admin) as conn,
        ):
            while not stop.wait(POLL):
                watch.poll(lambda sql, params: conn.execute(sql, params).fetchall(), database)

    thread = threading.Thread(target=run, name="progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
    watch.finish()  # reached only when the work succeeded
