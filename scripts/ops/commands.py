"""One function per `inv` task: open the stack as the task needs (scripts.ops.preflight), run
the use case, and return what the task shows (scripts.views draws it).

Questions go through `ask(question, without_terminal)`, which tasks.py supplies: it returns
when the answer is yes and raises a StackError otherwise.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.errors import StackError, UsageError
from scripts.ops.preflight import CHANGE, READ, STOP, open_stack

if TYPE_CHECKING:
    from scripts.backends.base import Backend
    from scripts.backends.native.layout import Orphan
    from scripts.infra.probes import ProbeResult
    from scripts.ops.backup_files import BackupInfo
    from scripts.ops.backups import BackupResult
    from scripts.ops.branches import Branch
    from scripts.ops.diagram import Written
    from scripts.ops.migrations import Applied, MigrationStatus
    from scripts.ops.redis_backup import RedisBackup
    from scripts.ops.restore import RestoreResult
    from scripts.ops.snapshots import RolledBack, Snapshot, Taken
    from scripts.ops.stack import StatusRow, UpReport
    from scripts.settings import Settings

Ask = Callable[[str, str], None]
CORE = ("postgres", "redis")
ALL = ("postgres", "redis", "adminer")


@dataclass(frozen=True)
class Started:
    settings: Settings
    report: UpReport
    migrations: list[Applied] = field(default_factory=list)
    connection: Mapping[str, str] = field(default_factory=dict)


def init(*, yes: bool) -> Started:
    from scripts.ops import migrations, preflight, setup, snapshots, stack

    settings, backend = setup.run(yes=yes)
    preflight.check(settings, backend, CHANGE)
    first_start = not backend.has_database()
    report = stack.up(settings, backend, CORE)
    applied = migrations.migrate(settings)
    if first_start:  # what `inv db.reset` returns to: this state, exactly (Redis: empty)
        snapshots.take(settings, snapshots.INIT, with_redis=False, announce=_announce, own=True)
    return Started(settings, report, applied, stack.connection_lines(settings))


def setup_prerequisites(*, yes: bool, tools: bool) -> None:
    from scripts.ops import setup

    setup.ensure_prerequisites(setup.configured_backend(), yes=yes, with_tools=tools)


def up(services: Sequence[str]) -> Started:
    from scripts.ops import stack

    settings, backend = open_stack(CHANGE)
    return Started(settings, stack.up(settings, backend, services))


def down() -> list[str]:
    from scripts.ops import stack

    settings, backend = open_stack(STOP)
    return stack.down(settings, backend)


@dataclass(frozen=True)
class Cleaned:
    removed: list[str]
    orphans: list[Orphan] | None  # None: not asked for


def clean(*, orphans: bool, yes: bool, ask: Ask) -> Cleaned:
    import shutil

    from scripts.backends.native.layout import orphans as find_orphans
    from scripts.console import human_size
    from scripts.ops import stack

    settings, backend = open_stack(STOP)
    removed = stack.clean(settings, backend)
    if not orphans:
        return Cleaned(removed, None)
    found = find_orphans()
    if found and not yes:
        listed = "; ".join(f"{o.home} ({human_size(o.size)}, of {o.checkout})" for o in found)
        ask(
            f"Delete the data of {len(found)} deleted checkout(s): {listed}?",
            f"clean --orphans deletes {len(found)} data dir(s): add --yes to confirm.",
        )
    for orphan in found:
        shutil.rmtree(orphan.home)
    return Cleaned(removed, found)


def reset(*, yes: bool, backup: bool, ask: Ask) -> tuple[Path | None, list[str]]:
    from scripts.ops import snapshots, stack

    settings, backend = open_stack(CHANGE)
    inside = snapshots.inventory(settings) if backend.has_database() else []
    if not yes:
        listed = f", with {'; '.join(inside)}" if inside else ""
        ask(
            f"Delete every PostgreSQL and Redis data of this stack ({backend.where()}){listed}?",
            "reset deletes all data: run `inv reset --yes` to confirm.",
        )
    saved, removed = stack.reset(settings, backend, safety_backup=backup)
    return saved, [*removed, *inside, *snapshots.forget(settings)]


# --- observing --------------------------------------------------------------------------------


def health(*, announce: bool) -> tuple[Backend, dict[str, ProbeResult | None]]:
    from scripts.ops import stack

    settings, backend = open_stack(READ, announce=announce)
    return backend, stack.health(settings)


@dataclass(frozen=True)
class Status:
    backend: Backend
    rows: list[StatusRow]
    problems: list[str]
    database: str  # the database the tasks act on: the current branch's
    branch: str
    notes: list[str]  # the backend's, e.g. the SSH forwarding of a remote engine


def status() -> Status:
    from scripts.backends.native.layout import orphans_problem
    from scripts.ops import copies, stack, swap

    settings, backend = open_stack(READ, announce=False)
    rows = stack.status(settings, backend)
    names = swap.server_names(settings)  # one query for both kinds of leftover
    found = (
        backend.ownership_problem(),
        swap.leftovers_problem(settings, names),
        copies.leftovers_problem(settings, names),
        orphans_problem(),
    )
    problems = [p for p in found if p]
    return Status(
        backend, rows, problems, settings.postgres_db, settings.postgres_branch, backend.notes()
    )


def logs(services: str, *, follow: bool, tail: int) -> None:
    from scripts.backends.base import check_services
    from scripts.errors import UsageError
    from scripts.ops import logs as service_logs

    if tail < 0:
        raise UsageError(
            f"--tail {tail} is negative: give how many past lines to show (0 or more)."
        )
    names = check_services([s.strip() for s in services.split(",") if s.strip()])
    _, backend = open_stack(READ, announce=False)
    service_logs.show(backend, names, follow=follow, tail=tail)


def env(fmt: str, *, show_secrets: bool) -> str:
    from scripts.ops import appenv

    appenv.render({}, fmt)  # a bad --format is refused before anything else
    settings, _ = open_stack(READ, announce=False)
    return appenv.render(appenv.environment(settings, show_secrets=show_secrets), fmt)


@dataclass(frozen=True)
class Opened:
    url: str
    env_file: Path
    how: str  # "opened", "no display", "no browser"


def open_adminer() -> Opened:
    from scripts.infra import probes
    from scripts.ops import browser, stack

    settings, backend = open_stack(READ)
    probe = probes.probe_http(*stack.address(settings, "adminer"))
    if not probe.ok:
        raise StackError(f"Adminer is not running ({probe.detail}): `inv up` starts it.")
    url = browser.adminer_url(settings, backend.name)
    if not browser.has_display():
        return Opened(url, settings.env_file, "no display")
    return Opened(
        url, settings.env_file, "opened" if browser.open_in_browser(url) else "no browser"
    )


def db_shell(command: str | None, remainder: Sequence[str]) -> int:
    """psql on the stack's database; the arguments after `--` go to psql as they are."""
    settings, backend = open_stack(READ, announce=False)
    _running(settings, "postgres")
    return backend.psql(command, list(remainder))


def redis_cli(command: str | None, remainder: Sequence[str]) -> int:
    """redis-cli on the stack's Redis; -c is split like a shell would, `--` arguments not."""
    settings, backend = open_stack(READ, announce=False)
    _running(settings, "redis")
    return backend.redis_cli(shlex.split(command or "") + list(remainder))


def _running(settings: Settings, service: str) -> None:
    """Refuse a client for a server that is not running, as every other task does."""
    from scripts.ops import stack

    result = stack.probe_for(settings, service)()
    if result.refused:
        name = {"postgres": "PostgreSQL", "redis": "Redis"}[service]
        raise StackError(f"{name} is not running ({result.detail}): start it with `inv up-core`.")


# --- data -------------------------------------------------------------------------------------


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


def _announce(message: str) -> None:
    from scripts.console import say

    say("info", message)


def snapshot(name: str | None, *, with_redis: bool) -> Taken:
    import datetime as dt

    from scripts.ops import snapshots

    settings, _ = open_stack(CHANGE)
    if name is None:
        name = f"{settings.postgres_branch}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    return snapshots.take(settings, name, with_redis=with_redis, announce=_announce)


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
    return snapshots.rollback(settings, name, with_redis=with_redis, announce=_announce)


def db_reset(*, with_redis: bool) -> RolledBack:
    from scripts.ops import snapshots

    settings, _ = open_stack(CHANGE)
    return snapshots.reset(settings, with_redis=with_redis, announce=_announce)


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
        done = branches.create(settings, name, announce=_announce)
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
    return gitfollow.on_checkout(settings, where, _announce)
