"""How each task's result is shown: lines, tables and JSON, in one place (tasks.py calls these
with what scripts.ops.commands and db_commands return)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.console import Cell, Marked, display_path, human_size, say, table

if TYPE_CHECKING:
    from scripts.backends.base import Backend
    from scripts.infra.probes import ProbeResult
    from scripts.ops.backup_files import BackupInfo
    from scripts.ops.backups import BackupResult
    from scripts.ops.commands import Cleaned, Opened, Started, Status
    from scripts.ops.db_commands import BranchOutcome, Seeded
    from scripts.ops.diagram import Written
    from scripts.ops.migrations import Applied, MigrationStatus
    from scripts.ops.redis_backup import RedisBackup
    from scripts.ops.restore import RestoreResult
    from scripts.ops.snapshots import RolledBack, Snapshot, Taken
    from scripts.ops.validate import Report
    from scripts.settings import Settings


def started(result: Started, what: str) -> None:
    report = result.report
    for note in report.notes:
        say("ok", note)
    for name, probe in report.results.items():
        say("ok", f"{name}: {probe.detail}")
    how = f"started {', '.join(report.started)}" if report.started else "already running"
    say("ok", f"{what} ready in {report.seconds:.2f} s ({how})")


def initialised(result: Started) -> None:
    started(result, "postgres and redis")
    if result.migrations:
        names = ", ".join(f"{a.version}_{a.name}" for a in result.migrations)
        say("ok", f"Applied migrations: {names}")
    say("info", "Connection (`inv env` prints the application's environment; the URLs with")
    say("info", f"passwords are in {display_path(result.settings.env_file)}):")
    for label, value in result.connection.items():
        print(f"    {label:<13} {value}")


def stopped(names: Sequence[str]) -> None:
    say("ok", f"Stopped {', '.join(names)}." if names else "Nothing was running.")


def cleaned(result: Cleaned) -> None:
    removed = result.removed
    say("ok", "Removed: " + ", ".join(removed) if removed else "Nothing to clean.")
    if result.orphans is None:
        return
    if not result.orphans:
        say("ok", "No data dir of a deleted checkout.")
        return
    listed = "; ".join(f"{o.home} ({human_size(o.size)}, of {o.checkout})" for o in result.orphans)
    say("ok", f"Deleted {listed}.")


def reset(saved: Path | None, removed: Sequence[str]) -> None:
    from scripts.ops.backup_files import restore_command

    if saved is not None:
        say("ok", f"Safety backup: {saved}")
    say("ok", "Deleted: " + ", ".join(removed) if removed else "There was no data to delete.")
    say("info", "Run `inv init` (or `inv up-core`) to start again from the seed data.")
    if saved is not None:
        say(
            "info", f"To get the old database back: `inv up-core`, then `{restore_command(saved)}`."
        )


def health(
    backend: Backend, results: Mapping[str, ProbeResult | None], *, as_json: bool
) -> list[str]:
    """Show the probes; return the unhealthy services."""
    bad = [name for name, r in results.items() if r is not None and not r.ok]
    if as_json:
        services = {
            name: {"healthy": None, "detail": "not started"}
            if r is None
            else {"healthy": r.ok, "detail": r.detail}
            for name, r in results.items()
        }
        print(
            json.dumps(
                {"backend": backend.name, "healthy": not bad, "services": services}, indent=2
            )
        )
        return bad
    for name, result in results.items():
        if result is None:
            say("info", f"{name}: not started (tools profile: `inv up`)")
        else:
            say("ok" if result.ok else "fail", f"{name}: {result.detail}")
    return bad


def unhealthy(bad: Sequence[str], results: Mapping[str, ProbeResult | None]) -> str:
    full = all("connection slot" in str(getattr(results[n], "detail", "")) for n in bad)
    advice = (
        "close some of the application's connections: PostgreSQL has no slot left"
        if full
        else "try `inv up-core`, then `inv logs`"
    )
    return f"✘ Unhealthy: {', '.join(bad)}: {advice}."


def status(result: Status, *, as_json: bool) -> None:
    backend, rows = result.backend, result.rows
    if as_json:
        services = [
            {
                "service": r.service,
                "state": r.state.state,
                "running": r.state.running,
                "detail": r.state.detail,
                "address": r.address,
                "healthy": None if r.health is None else r.health.ok,
                "health": None if r.health is None else r.health.detail,
                "data_bytes": r.state.data_bytes,
            }
            for r in rows
        ]
        body = {
            "backend": backend.name,
            "where": backend.where(),
            "database": result.database,
            "branch": result.branch,
            "problems": result.problems,
            "notes": result.notes,
            "services": services,
        }
        print(json.dumps(body, indent=2))
        return
    cells = [
        [r.service, r.state.state, r.address, _health(r.health), human_size(r.state.data_bytes)]
        for r in rows
    ]
    table(
        f"{backend.name} backend · {backend.where()} · database {result.database} "
        f"(branch {result.branch})",
        ["Service", "State", "Address", "Health", "Data"],
        cells,
    )
    for note in result.notes:
        say("info", note)
    for problem in result.problems:
        say("warn", problem)


def _health(probe: ProbeResult | None) -> Cell:
    if probe is None:
        return "-"
    return Marked("ok", "healthy") if probe.ok else Marked("fail", probe.detail)


def validated(report: Report, *, offline: bool, as_json: bool) -> None:
    from scripts.ops.validate import AREAS

    counts = report.counts()
    if as_json:
        print(json.dumps(report.as_json(), indent=2))
        return
    marks = {"pass": "ok", "warn": "warn", "fail": "fail", "skip": "info"}
    rows: list[list[Cell]] = []
    shown = ""
    for check in sorted(report.checks, key=lambda c: AREAS.index(c.area)):
        fix = f" → {check.fix}" if check.fix and check.status in ("fail", "warn") else ""
        area = check.area if check.area != shown else ""
        shown = check.area
        rows.append([area, Marked(marks[check.status], check.name), check.finding + fix])
    table("inv validate" + (" --offline" if offline else ""), ["Area", "Check", "Finding"], rows)
    print(
        f"{counts['pass']} passed, {counts['warn']} warnings, {counts['fail']} failed, "
        f"{counts['skip']} skipped"
    )


def opened(result: Opened) -> None:
    print(f"    {result.url}")
    say("info", f"Password: POSTGRES_PASSWORD in {display_path(result.env_file)}.")
    if result.how == "no display":
        say("info", "No display here: open the URL above in a browser.")
    elif result.how == "opened":
        say("ok", "Opened in your browser.")
    else:
        say("warn", "No browser could be started: open the URL above yourself.")


def backed_up(result: BackupResult) -> None:
    from scripts.ops.backup_files import restore_command

    m = result.manifest
    rows = sum(m.tables.values())
    say(
        "ok",
        f"{display_path(result.path)}: {human_size(m.size)}, {len(m.tables)} tables, "
        f"{rows} rows, {m.seconds:.2f} s (sha256 {m.sha256[:12]}…)",
    )
    say("info", f"Restore it with: {restore_command(result.path)}")


def backups(directory: Path, found: Sequence[BackupInfo]) -> None:
    if not found:
        print(f"No backups in {display_path(directory)} yet: `inv db.backup` makes one.")
        return
    table(
        f"Backups in {display_path(directory)}",
        ["Name", "Format", "Size", "Age", "Check"],
        [
            [i.path.name, i.format, human_size(i.size), age(i.created), i.verified]
            for i in reversed(found)
        ],
        whole=("Name",),
    )


def age(created: dt.datetime) -> str:
    seconds = (dt.datetime.now(dt.UTC) - created).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def pruned(doomed: Sequence[BackupInfo], keep: int) -> None:
    if not doomed:
        say("ok", f"Nothing to prune: {keep} or fewer backups.")
    else:
        say("ok", f"Deleted {', '.join(i.path.name for i in doomed)}.")


def restored(result: RestoreResult) -> None:
    from scripts.ops.backup_files import restore_command

    if result.safety_backup is not None:
        say("ok", f"Safety backup of the replaced database: {display_path(result.safety_backup)}")
    action = "replaced" if result.replaced else "created"
    say("ok", f"Database {result.database!r} {action} in {result.seconds:.2f} s:")
    for name, count in result.counts.items():
        print(f"    {name:<24} {count:>10} rows")
    if result.safety_backup is not None:
        say("info", f"To undo: `{restore_command(result.safety_backup)} --yes`.")


def redis_backed_up(result: RedisBackup) -> None:
    say("ok", f"{display_path(result.path)}: {result.keys} keys, {human_size(result.size)}")


def unmigrated(rows: Sequence[MigrationStatus]) -> str | None:
    """What `inv db.migrate --check` fails on, in one sentence; None when all is applied."""
    from scripts.ops.migrations import NOT_APPLIED

    bad = [r for r in rows if r.state in NOT_APPLIED]
    if not bad:
        return None
    listed = ", ".join(f"{r.version}_{r.name} {r.state}" for r in bad)
    fixes = []
    if any(r.state == "pending" for r in bad):
        fixes.append("`inv db.migrate` applies what is pending")
    if any(r.state != "pending" for r in bad):
        fixes.append("a changed or missing file must be put back as it was applied")
    return f"Migrations not applied as they are ({listed}): {'; '.join(fixes)}."


def migrations(rows: Sequence[MigrationStatus]) -> None:
    if not rows:
        say("info", "No migrations in docker/migrations yet.")
        return
    table(
        "Migrations (docker/migrations)",
        ["Version", "Name", "State", "Applied at"],
        [
            [
                m.version,
                m.name,
                m.state,
                m.applied_at.isoformat(" ", "seconds") if m.applied_at else "-",
            ]
            for m in rows
        ],
    )


def migrated(applied: Sequence[Applied]) -> None:
    for a in applied:
        say("ok", f"{a.version}_{a.name}.sql applied in {a.seconds:.2f} s")
    say("ok", f"Applied {len(applied)} migration(s)." if applied else "No new migrations.")


def seeded(result: Seeded) -> None:
    say("ok", "Dev seed applied: " + ", ".join(f"{t} {n}" for t, n in result.counts.items()))
    if result.added:
        added = ", ".join(f"{n} {t}" for t, n in result.added.items())
        say("ok", f"Added {added}; now {human_size(result.size)}")


def drawn(written: Written, *, default_output: bool) -> None:
    from scripts.ops import diagram

    files = ", ".join(display_path(p) for p in written.files)
    say("ok", f"{written.tables} tables, {written.foreign_keys} foreign keys: {files}")
    if written.readme:
        say("ok", f"{display_path(diagram.README)}: diagram updated between the schema markers.")
    elif default_output:
        say(
            "warn",
            f"{display_path(diagram.README)} has no {diagram.START_MARKER} and "
            f"{diagram.END_MARKER} markers: add them where the diagram belongs.",
        )


def snapshot_taken(result: Taken) -> None:
    snap = result.snapshot
    redis = " with Redis's data" if snap.redis else ""
    say(
        "ok",
        f"Snapshot {snap.name!r} of branch {snap.branch!r}{redis}: {human_size(snap.size)} in "
        f"{result.seconds:.2f} s. Back to it: `inv db.rollback {snap.name}`",
    )


def snapshot_deleted(snapshot: Snapshot) -> None:
    say("ok", f"Deleted snapshot {snapshot.name!r} ({human_size(snapshot.size)}).")


def snapshots(settings: Settings, found: Sequence[Snapshot], *, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "name": s.name,
                        "database": s.database,
                        "branch": s.branch,
                        "size": s.size,
                        "taken": s.taken.isoformat() if s.taken else None,
                        "redis": s.redis,
                        "spare": s.spare,
                    }
                    for s in found
                ],
                indent=2,
            )
        )
        return
    if not found:
        print("No snapshots yet: `inv db.snapshot` takes one.")
        return
    table(
        f"Snapshots in the stack's PostgreSQL (not backups: `inv reset` deletes them; "
        f"current branch {settings.postgres_branch!r})",
        ["Name", "Of branch", "Size", "Age", "Redis", "Spare copy"],
        [
            [
                s.name,
                s.branch,
                human_size(s.size),
                age(s.taken) if s.taken else "?",
                "yes" if s.redis else "-",
                "ready" if s.spare else "-",
            ]
            for s in reversed(found)
        ],
        whole=("Name",),
    )


def rolled_back(result: RolledBack) -> None:
    ended = (
        f"; ended {result.ended} connection(s)" if result.ended else "; no connection had to end"
    )
    redis = " and Redis" if result.redis else ""
    spare = " (its spare copy was ready)" if result.from_spare else ""
    say(
        "ok",
        f"Database {result.database!r}{redis} back to snapshot {result.snapshot.name!r} in "
        f"{result.seconds:.2f} s{spare}{ended}. Undo: `inv db.rollback undo`",
    )
    if result.migrations:
        say("ok", f"Applied this checkout's newer migrations: {', '.join(result.migrations)}")


def branched(outcome: BranchOutcome) -> None:
    if outcome.line:
        say("ok", outcome.line)
        return
    table(
        "Branches (databases of the stack's PostgreSQL)",
        ["Branch", "Database", "Size", "Current"],
        [
            [b.name, b.database, human_size(b.size), "◀ current" if b.current else ""]
            for b in outcome.branches
        ],
        whole=("Branch", "Database"),
    )
