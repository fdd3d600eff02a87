"""Tasks for the AI Marketplace local stack (PostgreSQL 15, Redis 7, Adminer).

Each task parses its arguments, calls one function in `scripts`, and prints. A StackError
(something the user can fix) ends the task with its one-line message and a non-zero exit.
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

if TYPE_CHECKING:
    from scripts.backends import Backend
    from scripts.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

# invoke turns bytecode caching off before it loads this file (its --write-pyc default), so
# scripts/ would be compiled again on every call; let Python cache it as usual (__pycache__
# is ignored by git) unless the environment asks otherwise.
sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))


def user_errors(func: F) -> F:
    """Turn a StackError into invoke's Exit: the message, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import signal

        from scripts.errors import StackError

        # SIGTERM (kill, a CI timeout) unwinds like Ctrl-C, so partial files get removed.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
        try:
            return func(*args, **kwargs)
        except StackError as exc:
            raise Exit(f"✘ {exc.message}", code=exc.exit_code) from None
        except BrokenPipeError:  # output piped into a reader that left (head): end quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise Exit(code=1) from None

    return wrapper  # type: ignore[return-value]


# What a task does to the stack decides what it checks first (scripts.preflight).
READ, STOP, CHANGE = "read", "stop", "change"


def _open(kind: str, *, announce: bool = True) -> tuple[Settings, Backend]:
    from scripts.preflight import open_stack

    return open_stack(kind, announce=announce)


def _report_up(report: Any, what: str) -> None:
    from scripts.console import say

    for note in report.notes:
        say("ok", note)
    for name, result in report.results.items():
        say("ok", f"{name}: {result.detail}")
    started = f"started {', '.join(report.started)}" if report.started else "already running"
    say("ok", f"{what} ready in {report.seconds:.2f} s ({started})")


# --- lifecycle ------------------------------------------------------------------------------


@task(help={"yes": "Install missing system packages without asking (for CI)."})
@user_errors
def init(c: Context, yes: bool = False) -> None:
    """First run: create .env, install prerequisites, start the core."""
    from scripts import initialise, preflight
    from scripts.console import display_path, say

    settings, backend = initialise.run(yes=yes)
    preflight.check(settings, backend, CHANGE)
    from scripts import stack

    report = stack.up(settings, backend, ("postgres", "redis"))
    _report_up(report, "postgres and redis")
    from scripts import migrations

    applied = migrations.migrate(settings)
    if applied:
        say("ok", f"Applied migrations: {', '.join(f'{a.version}_{a.name}' for a in applied)}")
    say("info", "Connection (`inv env` prints the application's environment; the URLs with")
    say("info", f"passwords are in {display_path(settings.env_file)}):")
    for label, value in stack.connection_lines(settings).items():
        print(f"    {label:<13} {value}")


@task(
    help={
        "yes": "Install without asking (for CI).",
        "tools": "Include what the tools profile (Adminer) needs. Default: yes.",
    }
)
@user_errors
def setup(c: Context, yes: bool = False, tools: bool = True) -> None:
    """Install what the backend needs (PostgreSQL 15, Redis 7, PHP)."""
    from scripts import initialise

    backend = initialise.configured_backend()
    initialise.ensure_prerequisites(backend, yes=yes, with_tools=tools)


@task(name="up-core")
@user_errors
def up_core(c: Context) -> None:
    """Start postgres + redis and wait until both answer."""
    from scripts import stack

    settings, backend = _open(CHANGE)
    _report_up(stack.up(settings, backend, ("postgres", "redis")), "postgres and redis")


@task
@user_errors
def up(c: Context) -> None:
    """Start postgres + redis + adminer (profile "tools") and wait."""
    from scripts import stack

    settings, backend = _open(CHANGE)
    report = stack.up(settings, backend, ("postgres", "redis", "adminer"))
    _report_up(report, "postgres, redis and adminer")
    print(f"    Adminer: {settings.adminer_url}")


@task
@user_errors
def down(c: Context) -> None:
    """Stop every service (all profiles). Data is kept."""
    from scripts import stack
    from scripts.console import say

    settings, backend = _open(STOP)
    stopped = stack.down(settings, backend)
    say("ok", f"Stopped {', '.join(stopped)}." if stopped else "Nothing was running.")


@task(
    help={
        "orphans": "Also delete the data dirs of deleted checkouts (native, run by root): "
        "they are listed, and you are asked first.",
        "yes": "With --orphans: do not ask.",
    }
)
@user_errors
def clean(c: Context, orphans: bool = False, yes: bool = False) -> None:
    """Stop all, remove leftovers (pid files, logs); keep data."""
    from scripts import stack
    from scripts.console import say

    settings, backend = _open(STOP)
    removed = stack.clean(settings, backend)
    say("ok", "Removed: " + ", ".join(removed) if removed else "Nothing to clean.")
    if orphans:
        _clean_orphans(yes=yes)


def _clean_orphans(*, yes: bool) -> None:
    import shutil

    from scripts.backends.native.layout import orphans
    from scripts.console import human_size, say

    found = orphans()
    if not found:
        say("ok", "No data dir of a deleted checkout.")
        return
    listed = "; ".join(f"{o.home} ({human_size(o.size)}, of {o.checkout})" for o in found)
    if not yes:
        _ask(
            f"Delete the data of {len(found)} deleted checkout(s): {listed}?",
            f"clean --orphans deletes {len(found)} data dir(s): add --yes to confirm.",
        )
    for orphan in found:
        shutil.rmtree(orphan.home)
    say("ok", f"Deleted {listed}.")


@task(
    help={
        "yes": "Do not ask; delete the data (for scripts and CI).",
        "backup": "Take a safety backup of the database first (default). --no-backup skips it.",
    }
)
@user_errors
def reset(c: Context, yes: bool = False, backup: bool = True) -> None:
    """Delete all data after asking and a safety backup."""
    from scripts import stack
    from scripts.backups import restore_command
    from scripts.console import say

    settings, backend = _open(CHANGE)
    if not yes:
        _ask(
            f"Delete every PostgreSQL and Redis data of this stack ({backend.where()})?",
            "reset deletes all data: run `inv reset --yes` to confirm.",
        )
    saved, removed = stack.reset(settings, backend, safety_backup=backup)
    if saved is not None:
        say("ok", f"Safety backup: {saved}")
    say("ok", "Deleted: " + ", ".join(removed) if removed else "There was no data to delete.")
    say("info", "Run `inv init` (or `inv up-core`) to start again from the seed data.")
    if saved is not None:
        say(
            "info", f"To get the old database back: `inv up-core`, then `{restore_command(saved)}`."
        )


def _ask(question: str, without_terminal: str) -> None:
    """Go on only when the user says yes; without a terminal, refuse with the given advice."""
    from scripts.console import confirm
    from scripts.errors import StackError

    answer = confirm(question)
    if answer is None:
        raise StackError(without_terminal)
    if not answer:
        raise StackError("Nothing was changed.")


# --- observing ------------------------------------------------------------------------------


@task(help={"json": "Print JSON for machines instead of lines."})
@user_errors
def health(c: Context, json: bool = False) -> None:
    """Probe each service for real; exit 1 when one is unhealthy."""
    from scripts import stack
    from scripts.console import say

    settings, backend = _open(READ, announce=not json)
    results = stack.health(settings)
    bad = [name for name, r in results.items() if r is not None and not r.ok]
    if json:
        import json as jsonlib

        print(
            jsonlib.dumps(
                {
                    "backend": backend.name,
                    "healthy": not bad,
                    "services": {
                        name: (
                            {"healthy": None, "detail": "not started"}
                            if r is None
                            else {"healthy": r.ok, "detail": r.detail}
                        )
                        for name, r in results.items()
                    },
                },
                indent=2,
            )
        )
    else:
        for name, result in results.items():
            if result is None:
                say("info", f"{name}: not started (tools profile: `inv up`)")
            else:
                say("ok" if result.ok else "fail", f"{name}: {result.detail}")
    if bad:
        full = all("connection slot" in str(getattr(results[n], "detail", "")) for n in bad)
        advice = (
            "close some of the application's connections: PostgreSQL has no slot left"
            if full
            else "try `inv up-core`, then `inv logs`"
        )
        raise Exit(None if json else f"✘ Unhealthy: {', '.join(bad)}: {advice}.", code=1)


@task(help={"json": "Print JSON for machines instead of a table."})
@user_errors
def status(c: Context, json: bool = False) -> None:
    """Table of services: state, address, health, data size."""
    from scripts import stack
    from scripts.console import human_size, mark, say, table

    settings, backend = _open(READ, announce=False)
    rows = stack.status(settings, backend)
    from scripts import swap
    from scripts.backends.native.layout import orphans_problem

    problems = [
        p
        for p in (backend.ownership_problem(), swap.leftovers_problem(settings), orphans_problem())
        if p
    ]
    if json:
        import json as jsonlib

        print(
            jsonlib.dumps(
                {
                    "backend": backend.name,
                    "where": backend.where(),
                    "problems": problems,
                    "services": [
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
                    ],
                },
                indent=2,
            )
        )
        return
    table(
        f"{backend.name} backend · {backend.where()}",
        ["Service", "State", "Address", "Health", "Data"],
        [
            [
                r.service,
                r.state.state,
                r.address,
                "-"
                if r.health is None
                else f"{mark('ok')} healthy"
                if r.health.ok
                else f"{mark('fail')} {r.health.detail}",
                human_size(r.state.data_bytes),
            ]
            for r in rows
        ],
    )
    for problem in problems:
        say("warn", problem)


@task(
    help={
        "services": "Comma-separated services, e.g. -s postgres,redis. Default: all.",
        "follow": "Keep printing new lines until Ctrl-C.",
        "tail": "How many past lines per service to print first (default 100).",
    },
)
@user_errors
def logs(c: Context, services: str = "", follow: bool = False, tail: int = 100) -> None:
    """Show logs (all, or -s postgres,redis); --follow streams."""
    from scripts.backends import check_services

    names = check_services([s.strip() for s in services.split(",") if s.strip()])
    _, backend = _open(READ, announce=False)
    backend.logs(names, follow, tail)


@task(
    help={
        "format": "dotenv (default: KEY=value lines), shell (export lines, for eval) or json.",
        "show_secrets": "Print the passwords, and the URLs with them, instead of ****.",
    }
)
@user_errors
def env(c: Context, format: str = "dotenv", show_secrets: bool = False) -> None:
    """Print the application's environment: URLs, hosts, ports, users."""
    from scripts import appenv

    appenv.render({}, format)  # a bad --format is refused before anything else
    settings, _ = _open(READ, announce=False)
    print(appenv.render(appenv.environment(settings, show_secrets=show_secrets), format))


@task(
    help={
        "offline": "Skip the checks that need running services (fast; no stack needed).",
        "json": "Print JSON for machines instead of a table.",
    }
)
@user_errors
def validate(c: Context, offline: bool = False, json: bool = False) -> None:
    """Check tools, .env, compose, SQL, ports, services, security."""
    from scripts import validate_setup
    from scripts.console import mark, table

    report = validate_setup.run(offline=offline)
    counts = report.counts()
    if json:
        import json as jsonlib

        print(jsonlib.dumps(report.as_json(), indent=2))
    else:
        marks = {"pass": "ok", "warn": "warn", "fail": "fail", "skip": "info"}
        rows, shown = [], ""
        for check in sorted(report.checks, key=lambda c: validate_setup.AREAS.index(c.area)):
            fix = f" → {check.fix}" if check.fix and check.status in ("fail", "warn") else ""
            area = check.area if check.area != shown else ""
            shown = check.area
            rows.append([area, f"{mark(marks[check.status])} {check.name}", check.finding + fix])
        table(
            "inv validate" + (" --offline" if offline else ""), ["Area", "Check", "Finding"], rows
        )
        print(
            f"{counts['pass']} passed, {counts['warn']} warnings, {counts['fail']} failed, "
            f"{counts['skip']} skipped"
        )
    if counts["fail"]:
        raise Exit(code=1)


@task(name="open")
@user_errors
def open_adminer(c: Context) -> None:
    """Print Adminer's URL with the login filled in; open a browser."""
    from scripts import browser, probes, stack
    from scripts.console import display_path, say
    from scripts.errors import StackError

    settings, backend = _open(READ)
    probe = probes.probe_http(*stack.address(settings, "adminer"))
    if not probe.ok:
        raise StackError(f"Adminer is not running ({probe.detail}): `inv up` starts it.")
    url = browser.adminer_url(settings, backend.name)
    print(f"    {url}")
    say("info", f"Password: POSTGRES_PASSWORD in {display_path(settings.env_file)}.")
    if not browser.has_display():
        say("info", "No display here: open the URL above in a browser.")
    elif browser.open_in_browser(url):
        say("ok", "Opened in your browser.")
    else:
        say("warn", "No browser could be started: open the URL above yourself.")


# --- clients --------------------------------------------------------------------------------


@task(
    name="shell",
    help={"command": "Run one SQL command and exit, instead of an interactive session."},
)
@user_errors
def db_shell(c: Context, command: str | None = None) -> None:
    """psql on the stack's database: interactive, or -c SQL."""
    _, backend = _open(READ, announce=False)
    code = backend.psql(command, shlex.split(c.remainder))
    if code:
        raise Exit(code=code)


@task(name="cli", help={"command": 'One command to run, e.g. -c "INFO memory".'})
@user_errors
def redis_cli(c: Context, command: str | None = None) -> None:
    """redis-cli on the stack's Redis: interactive, or -c COMMAND."""
    _, backend = _open(READ, announce=False)
    args = shlex.split(command or "") + shlex.split(c.remainder)
    code = backend.redis_cli(args)
    if code:
        raise Exit(code=code)


# --- data -----------------------------------------------------------------------------------


@task(
    name="backup",
    help={
        "format": "custom (default: compressed, parallel restore), sql (gzipped plain SQL) or "
        "directory (parallel dump with --jobs).",
        "name": "File name instead of <database>-<UTC time>.",
        "jobs": "Parallel dump jobs (directory format only).",
    },
)
@user_errors
def db_backup(c: Context, format: str = "custom", name: str | None = None, jobs: int = 1) -> None:
    """Back up the database: snapshot, checksum, manifest."""
    from scripts import backups
    from scripts.console import display_path, human_size, progress, say

    settings, backend = _open(READ)
    with progress("pg_dump") as report:
        result = backups.create(
            settings, backend, fmt=format, name=name, jobs=jobs, progress=report
        )
    m = result.manifest
    rows = sum(m.tables.values())
    say(
        "ok",
        f"{display_path(result.path)}: {human_size(m.size)}, {len(m.tables)} tables, "
        f"{rows} rows, {m.seconds:.2f} s (sha256 {m.sha256[:12]}…)",
    )
    say("info", f"Restore it with: {backups.restore_command(result.path)}")


@task(name="backups")
@user_errors
def db_backups(c: Context) -> None:
    """List backups: name, format, size, age, checksum verified."""
    from scripts import backups
    from scripts.console import display_path, human_size, table

    settings, _ = _open(READ, announce=False)
    found = backups.list_backups(settings)
    if not found:
        print(f"No backups in {display_path(settings.backup_dir)} yet: `inv db.backup` makes one.")
        return
    table(
        f"Backups in {display_path(settings.backup_dir)}",
        ["Name", "Format", "Size", "Age", "Check"],
        [
            [i.path.name, i.format, human_size(i.size), _age(i.created), i.verified]
            for i in reversed(found)
        ],
        whole=("Name",),
    )


def _age(created: Any) -> str:
    import datetime as dt

    seconds = (dt.datetime.now(dt.UTC) - created).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


@task(
    name="prune",
    help={"keep": "How many of the newest backups to keep.", "yes": "Do not ask."},
)
@user_errors
def db_prune(c: Context, keep: int = -1, yes: bool = False) -> None:
    """Delete the oldest backups, keeping the newest --keep N."""
    from scripts import backups
    from scripts.console import say
    from scripts.errors import StackError

    if keep == -1:  # invoke types an option by its default: -1 means "not given"
        raise StackError("Say how many backups to keep, e.g. `inv db.prune --keep 5`.")
    settings, _ = _open(READ, announce=False)
    doomed = backups.prune_candidates(settings, keep)
    if not doomed:
        say("ok", f"Nothing to prune: {keep} or fewer backups.")
        return
    names = ", ".join(i.path.name for i in doomed)
    if not yes:
        _ask(
            f"Delete {len(doomed)} backup(s): {names}?",
            f"db.prune deletes {len(doomed)} backup(s): run `inv db.prune --keep {keep} --yes`.",
        )
    for info in doomed:
        backups.delete(info)
    say("ok", f"Deleted {names}.")


LATEST = "--latest"


@task(
    name="restore",
    help={
        "file": "Backup file or directory (custom, directory, .sql, .sql.gz), or --latest for "
        "the newest one in BACKUP_DIR.",
        "into": "Restore into this new database beside the live one instead of replacing it.",
        "jobs": "Parallel restore jobs for custom and directory backups (default 2).",
        "yes": "Do not ask before replacing the live database.",
        "force_other_database": "Replace the database even with a dump of another database or "
        "schema (a safety backup is taken first).",
        "backup": "Take a safety backup of the live database before replacing it (default). "
        "--no-backup skips it.",
    },
)
@user_errors
def db_restore(
    c: Context,
    file: str,
    into: str | None = None,
    jobs: int = 2,
    yes: bool = False,
    force_other_database: bool = False,
    backup: bool = True,
) -> None:
    """Restore a backup: checked, loaded aside, then swapped in."""
    from pathlib import Path

    from scripts import backups, restore, stack
    from scripts.console import display_path, progress, say

    settings, backend = _open(CHANGE)
    restore.check_into(settings, into)
    # invoke has no optional positional arguments; `--latest` is a value of FILE (it is no
    # flag of this task, so the parser hands it to the positional FILE).
    path = backups.latest(settings) if file == LATEST else Path(file).expanduser().absolute()
    with restore.opened(path, backend) as checked:
        say("ok", f"{display_path(path)}: {checked.format} backup, checks passed")
        if into is None:
            restore.check_origin(settings, checked, force=force_other_database)
        if into is None and not yes:
            _ask(
                f"Replace database {settings.postgres_db!r} with this backup?",
                f"db.restore replaces database {settings.postgres_db!r}: add --yes to confirm, "
                "or restore beside it with --into NAME.",
            )
        with stack.locked(settings), progress("pg_restore") as report:
            result = restore.restore(
                settings,
                backend,
                checked,
                into=into,
                jobs=jobs,
                force_other_database=force_other_database,
                safety_backup=backup,
                progress=report,
            )
    if result.safety_backup is not None:
        say("ok", f"Safety backup of the replaced database: {display_path(result.safety_backup)}")
    action = "replaced" if result.replaced else "created"
    say("ok", f"Database {result.database!r} {action} in {result.seconds:.2f} s:")
    for name, count in result.counts.items():
        print(f"    {name:<24} {count:>10} rows")
    if result.safety_backup is not None:
        say("info", f"To undo: `{backups.restore_command(result.safety_backup)} --yes`.")


@task(name="backup")
@user_errors
def redis_backup(c: Context) -> None:
    """Copy Redis's data at one point in time (BGSAVE)."""
    from scripts import backups
    from scripts.console import display_path, human_size, say

    settings, backend = _open(READ)
    result = backups.redis_snapshot(settings, backend)
    say("ok", f"{display_path(result.path)}: {result.keys} keys, {human_size(result.size)}")


@task(name="migrate", help={"status": "Only list the migrations and their state; apply none."})
@user_errors
def db_migrate(c: Context, status: bool = False) -> None:
    """Apply new SQL migrations, each once, in a transaction."""
    from scripts import migrations
    from scripts.console import say, table

    settings, _ = _open(READ if status else CHANGE)
    if status:
        rows = migrations.status(settings)
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
        return
    applied = migrations.migrate(settings)
    for a in applied:
        say("ok", f"{a.version}_{a.name}.sql applied in {a.seconds:.2f} s")
    say("ok", f"Applied {len(applied)} migration(s)." if applied else "No new migrations.")


@task(
    name="seed",
    help={
        "scale": "Also generate N users (scaled_<n>@example.com, password scaled123!) with "
        "about 0.2 agents, 3 reviews and 3 transactions each: 45000 is ~100 MB, "
        "470000 ~1 GB.",
    },
)
@user_errors
def db_seed(c: Context, scale: int = 0) -> None:
    """Re-apply the dev seed; --scale N adds load-test data."""
    from scripts import seed
    from scripts.console import human_size, progress, say

    seed.check_scale(scale)  # a bad --scale changes nothing, not even the dev seed
    settings, _ = _open(CHANGE)
    counts = seed.seed(settings)
    say("ok", "Dev seed applied: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    if scale:
        with progress("generating") as report:
            added = seed.seed_scale(settings, scale, progress=report)
        size = human_size(seed.database_size(settings))
        say("ok", "Added " + ", ".join(f"{n} {t}" for t, n in added.items()) + f"; now {size}")


@task(
    name="diagram",
    help={
        "output": "Directory for schema.svg, schema.png and schema.mmd. Default: docs/, which "
        "also updates the diagram in README.md.",
        "yes": "Install Graphviz (dot) without asking when it is missing.",
    },
)
@user_errors
def db_diagram(c: Context, output: str | None = None, yes: bool = False) -> None:
    """Draw the live schema: ER diagram as SVG, PNG and Mermaid."""
    from pathlib import Path

    from scripts import diagram
    from scripts.console import display_path, say

    settings, _ = _open(READ)
    target = None if output is None else Path(output).expanduser().absolute()
    written = diagram.write(settings, target, yes=yes)
    files = ", ".join(display_path(p) for p in written.files)
    say("ok", f"{written.tables} tables, {written.foreign_keys} foreign keys: {files}")
    if written.readme:
        say("ok", f"{display_path(diagram.README)}: diagram updated between the schema markers.")
    elif target is None:
        say(
            "warn",
            f"{display_path(diagram.README)} has no {diagram.START_MARKER} and "
            f"{diagram.END_MARKER} markers: add them where the diagram belongs.",
        )


db = Collection("db", db_shell, db_backup, db_backups, db_prune, db_restore, db_migrate, db_seed)
redis = Collection("redis", redis_cli, redis_backup)
ns = Collection(
    init, setup, up_core, up, down, clean, reset, health, status, logs, validate, env, db, redis
)
ns.add_task(open_adminer)
db.add_task(db_diagram)

if __name__ == "__main__":  # pragma: no cover - `inv` is the entry point
    sys.exit("Run tasks with `inv`, e.g. `inv --list`.")
