"""One function per `inv` task of the stack itself (start, stop, health, status, clients; the
database's data: scripts.ops.db_commands): open the stack as the task needs
(scripts.ops.preflight), run the use case, and return what the task shows (scripts.views
draws it).

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
    from scripts.ops.migrations import Applied
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
        snapshots.take(settings, snapshots.INIT, with_redis=False, announce=announce, own=True)
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
    settings, was = _back_on_main(settings)
    saved, removed = stack.reset(settings, backend, safety_backup=backup)
    return saved, [*removed, *inside, *was, *snapshots.forget(settings)]


def _back_on_main(settings: Settings) -> tuple[Settings, list[str]]:
    """Before a reset deletes anything: main becomes the current branch again, so that the
    safety backup holds main's database (the one `inv init` makes again, which the backup
    can be restored into) and a reset killed half-way leaves an env file the stack can
    start with."""
    from scripts.names import MAIN
    from scripts.ops import branches

    if settings.postgres_branch == MAIN:
        return settings, []
    branches.make_current(settings, MAIN)
    was = f"branch {settings.postgres_branch!r} (POSTGRES_BRANCH is main again)"
    return branches.on_branch(settings, MAIN), [was]


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
    from scripts.infra import lock
    from scripts.ops import copies, stack, swap

    settings, backend = open_stack(READ, announce=False)
    rows = stack.status(settings, backend)
    if lock.busy(settings.state_dir):  # its temporary databases are no leftovers
        changing = (
            "Another command is changing this stack (a restore, snapshot, rollback or branch "
            "copy, say): its temporary databases are its own; `inv status` again once it ends."
        )
        leftovers: tuple[str | None, ...] = (changing,)
    else:
        names = swap.server_names(settings)  # one query for both kinds of leftover
        leftovers = (
            swap.leftovers_problem(settings, names),
            copies.leftovers_problem(settings, names),
        )
    found = (backend.ownership_problem(), *leftovers, orphans_problem())
    problems = [p for p in found if p]
    return Status(
        backend, rows, problems, settings.postgres_db, settings.postgres_branch, backend.notes()
    )


def logs(services: str, *, follow: bool, tail: int) -> None:
    from scripts.backends.base import check_services
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


def announce(message: str) -> None:
    """What a use case says while it works (the connections it ends, say), as a notice."""
    from scripts.console import say

    say("info", message)
