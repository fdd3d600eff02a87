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
    from scripts.ops.diagram import Written
    from scripts.ops.migrations import Applied, MigrationStatus
    from scripts.ops.redis_backup import RedisBackup
    from scripts.ops.restore import RestoreResult
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
    from scripts.ops import migrations, preflight, setup, stack

    settings, backend = setup.run(yes=yes)
    preflight.check(settings, backend, CHANGE)
    report = stack.up(settings, backend, CORE)
    applied = migrations.migrate(settings)
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
    from scripts.ops import stack

    settings, backend = open_stack(CHANGE)
    if not yes:
        ask(
            f"Delete every PostgreSQL and Redis data of this stack ({backend.where()})?",
            "reset deletes all data: run `inv reset --yes` to confirm.",
        )
    return stack.reset(settings, backend, safety_backup=backup)


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


def status() -> Status:
    from scripts.backends.native.layout import orphans_problem
    from scripts.ops import stack, swap

    settings, backend = open_stack(READ, announce=False)
    rows = stack.status(settings, backend)
    found = (backend.ownership_problem(), swap.leftovers_problem(settings), orphans_problem())
    return Status(backend, rows, [p for p in found if p])


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
    from scripts.ops import migrations

    settings, _ = open_stack(CHANGE)
    return migrations.migrate(settings)


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
