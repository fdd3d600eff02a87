"""One function per task of the data (the db namespace and redis.backup): backups and
restores, migrations, seed, diagram, snapshots and branches (the stack's own tasks:
scripts.ops.commands). Each opens the stack as it needs (scripts.ops.preflight), runs the
use case and returns what the task shows (scripts.views draws it).

Questions go through `ask(question, without_terminal)`, which tasks.py supplies: it returns
when the answer is yes and raises a StackError otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.errors import UsageError
from scripts.ops.commands import Ask, announce
from scripts.ops.preflight import CHANGE, READ, open_stack

if TYPE_CHECKING:
    from scripts.ops.backup_files import BackupInfo
    from scripts.ops.backups import BackupResult
    from scripts.ops.branches import Branch
    from scripts.ops.diagram import Written
    from scripts.ops.migrations import Applied, MigrationStatus
    from scripts.ops.redis_backup import RedisBackup
    from scripts.ops.restore import RestoreResult
    from scripts.ops.snapshots import RolledBack, Snapshot, Taken
    from scripts.settings import Settings


def backup(fmt: str, name: str | None, jobs: int) -> BackupResult:
    from scripts.console import progress
    from scripts.ops import backups

    settings, backend = open_stack(READ)
    with progress("pg_dump") as report:
        return backups.create(settings, backend, fmt=fmt, name=name, jobs=jobs, progress=report)


def list_backups() -> tuple[Path, list[BackupInfo]]:
    from scripts.ops import backup_files

    settings, _ = open_stack(READ, announce=False)
    return settings.backup_dir, backup_files.list_backups(settings)


def prune(keep: int, *, yes: bool, ask: Ask) -> list[BackupInfo]:
    from scripts.ops import backup_files

    if keep == -1:  # invoke types an option by its default: -1 means "not given"
        raise UsageError("Say how many backups to keep, e.g. `inv db.prune --keep 5`.")
    settings, _ = open_stack(READ, announce=False)
    doomed = backup_files.prune_candidates(settings, keep)
    if doomed and not yes:
        names = ", ".join(i.path.name for i in doomed)
        ask(
            f"Delete {len(doomed)} backup(s): {names}?",
            f"db.prune deletes {len(doomed)} backup(s): run `inv db.prune --keep {keep} --yes`.",
        )
    for info in doomed:
        backup_files.delete(info)
    return doomed


LATEST = "--latest"  # invoke has no optional positional: `--latest` arrives as the FILE


def restore(
    file: str,
    *,
    into: str | None,
    jobs: int,
    yes: bool,
    force_other_database: bool,
    backup: bool,
    ask: Ask,
) -> RestoreResult:
    from scripts.console import display_path, progress, say
    from scripts.ops import backup_files, restore_checks, stack
    from scripts.ops import restore as restoring

    settings, backend = open_stack(CHANGE)
    restore_checks.check_into(settings, into)
    path = backup_files.latest(settings) if file == LATEST else backup_files.find(settings, file)
    with restore_checks.opened(path, backend) as checked:
        say("ok", f"{display_path(path)}: {checked.format} backup, checks passed")
        if into is None:
            restore_checks.check_origin(settings, checked, force=force_other_database)
        if into is None and not yes:
            ask(
                f"Replace database {settings.postgres_db!r} with this backup?",
                f"db.restore replaces database {settings.postgres_db!r}: add --yes to confirm, "
                "or restore beside it with --into NAME.",
            )
        with stack.locked(settings), progress("pg_restore") as report:
            return restoring.restore(
                settings,
                backend,
                checked,
                into=into,
                jobs=jobs,
                force_other_database=force_other_database,
                safety_backup=backup,
                progress=report,
            )


def redis_backup() -> RedisBackup:
    from scripts.ops import redis_backup as snapshots

    settings, backend = open_stack(READ)
    return snapshots.redis_snapshot(settings, backend)


def migration_status() -> list[MigrationStatus]:
    from scripts.ops import migrations

    settings, _ = open_stack(READ)
    return migrations.status(settings)


def new_migration(name: str) -> Path:
    from scripts.ops import migrations

    return migrations.create(name)


def migrate() -> list[Applied]:
    from scripts.console import warn
    from scripts.names import MAIN
    from scripts.ops import migrations, snapshots

    settings, _ = open_stack(CHANGE)
    applied = migrations.migrate(settings)
    if (
        applied
        and settings.postgres_branch == MAIN
        and (problem := snapshots.migrate_init(settings))
    ):
        warn(problem)
    return applied


@dataclass(frozen=True)
class Seeded:
    counts: dict[str, int]
    added: dict[str, int]
    size: int | None


def seed(scale: int) -> Seeded:
    from scripts.console import progress
    from scripts.ops import seed as seeding

    seeding.check_scale(scale)  # a bad --scale changes nothing, not even the dev seed
    settings, _ = open_stack(CHANGE)
    counts = seeding.seed(settings)
    if not scale:
        return Seeded(counts, {}, None)
    with progress("generating") as report:
        added = seeding.seed_scale(settings, scale, progress=report)
    return Seeded(counts, added, seeding.database_size(settings))


def diagram(output: str | None, *, yes: bool) -> Written:
    from scripts.ops import diagram as drawing

    settings, _ = open_stack(READ)
    target = None if output is None else Path(output).expanduser().absolute()
    return drawing.write(settings, target, yes=yes)


# --- snapshots and branches -------------------------------------------------------------------


def snapshot(name: str | None, *, with_redis: bool) -> Taken:
    import datetime as dt

    from scripts.ops import snapshots

    settings, _ = open_stack(CHANGE)
    if name is None:
        name = f"{settings.postgres_branch}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    return snapshots.take(settings, name, with_redis=with_redis, announce=announce)


def delete_snapshot(name: str, *, also_named: str = "") -> Snapshot:
    from scripts.ops import snapshots

    if also_named:
        raise UsageError(
            f"Give a NAME to take a snapshot, or --delete one, not both ({also_named!r} and "
            f"{name!r})."
        )
    settings, _ = open_stack(CHANGE)
    return snapshots.delete(settings, name)


def list_snapshots() -> tuple[Settings, list[Snapshot]]:
    from scripts.ops import snapshots

    settings, _ = open_stack(READ, announce=False)
    return settings, snapshots.list_snapshots(settings)


def rollback(name: str, *, with_redis: bool) -> RolledBack:
    from scripts.ops import snapshots

    settings, _ = open_stack(CHANGE)
    return snapshots.rollback(settings, name, with_redis=with_redis, announce=announce)


def db_reset(*, with_redis: bool) -> RolledBack:
    from scripts.ops import snapshots

    settings, _ = open_stack(CHANGE)
    return snapshots.reset(settings, with_redis=with_redis, announce=announce)


@dataclass(frozen=True)
class BranchOutcome:
    settings: Settings
    line: str = ""
    branches: list[Branch] = field(default_factory=list)


def branch(
    name: str | None,
    *,
    list_all: bool,
    switch: str | None,
    delete: str | None,
    follow_git: bool,
    unfollow_git: bool,
    repo: str | None,
    git_checkout: str | None,
    yes: bool,
    ask: Ask,
) -> BranchOutcome:
    from scripts.ops import branches
    from scripts.settings import ROOT

    chosen = [
        flag
        for flag, given in (
            ("NAME", name is not None),
            ("--list", list_all),
            ("--switch", switch is not None),
            ("--delete", delete is not None),
            ("--follow-git", follow_git),
            ("--unfollow-git", unfollow_git),
            ("--git-checkout", git_checkout is not None),
        )
        if given
    ]
    if len(chosen) > 1:
        raise UsageError(
            f"db.branch does one thing at a time, and got {', '.join(chosen)}: give a NAME to "
            "create, or one of --list, --switch, --delete, --follow-git, --unfollow-git."
        )
    list_all = list_all or not chosen
    quiet = list_all or git_checkout is not None
    kind = READ if list_all else CHANGE
    settings, _ = open_stack(kind, announce=not quiet, switching=switch is not None)
    where = Path(repo or git_checkout or ROOT).expanduser().absolute()
    if list_all:
        return BranchOutcome(settings, branches=branches.list_branches(settings))
    line = _branch_change(
        settings,
        name,
        switch=switch,
        delete=delete,
        follow_git=follow_git,
        unfollow_git=unfollow_git,
        where=where,
        yes=yes,
        ask=ask,
    )
    return BranchOutcome(settings, line)


def _branch_change(
    settings: Settings,
    name: str | None,
    *,
    switch: str | None,
    delete: str | None,
    follow_git: bool,
    unfollow_git: bool,
    where: Path,
    yes: bool,
    ask: Ask,
) -> str:
    from scripts.console import display_path
    from scripts.ops import branches, gitfollow

    if name is not None:
        done = branches.create(settings, name, announce=announce)
        return (
            f"Branch {name!r} ({done.branch.database}) cloned from {done.created_from!r} is "
            f"current; DATABASE_URL is now {done.database_url}"
        )
    if switch is not None:
        done = branches.switch(settings, switch)
        return (
            f"Branch {switch!r} ({done.branch.database}) is current; DATABASE_URL is now "
            f"{done.database_url}"
        )
    if delete is not None:
        if not yes:
            ask(
                f"Delete branch {delete!r} and its database?",
                "db.branch --delete deletes a database: add --yes to confirm.",
            )
        gone = branches.delete(settings, delete)
        return f"Deleted branch {gone.name!r} ({gone.database})."
    if follow_git:
        followed = gitfollow.follow(settings, where)
        return (
            f"Following git in {display_path(where)} ({display_path(followed.hook)}): git "
            f"{followed.git_branch or '(detached)'} keeps branch {followed.branch!r}; every other "
            "git branch gets its own database on its first checkout."
        )
    if unfollow_git:
        removed = gitfollow.unfollow(settings, where)
        return (
            f"Removed {display_path(removed)}; database branches stay as they are."
            if removed
            else "No hook of this stack was installed; nothing to remove."
        )
    return gitfollow.on_checkout(settings, where, announce)
