"""Tasks for the AI Marketplace local stack (PostgreSQL 15, Redis 7, Adminer).

Each task parses its arguments, calls one function of scripts.ops.commands (the stack's
tasks) or scripts.ops.db_commands (the data's), and shows what it returns with
scripts.views. A StackError (something the user can fix) ends the task with
its one-line message and exit code 1; a usage error (a mistyped task or option, a bad value:
scripts/cli.py) with exit code 2.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

F = TypeVar("F", bound=Callable[..., Any])

# invoke turns bytecode caching off before it loads this file (its --write-pyc default), so
# scripts/ and this file would be compiled again on every call; let Python cache them as
# usual (__pycache__ is ignored by git) unless the environment asks otherwise.
sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))


def _cache_own_bytecode() -> None:
    """Write this file's bytecode when it is missing or older than the file: invoke loads it
    through importlib, which reads a valid cache but never writes one here (3 ms of every
    `inv` call went to compiling it)."""
    import contextlib
    from importlib.util import cache_from_source
    from pathlib import Path

    source, cached = Path(__file__), Path(cache_from_source(__file__))
    with contextlib.suppress(OSError):
        if cached.stat().st_mtime >= source.stat().st_mtime:
            return
    import py_compile

    # A read-only checkout: compiled on every call, as before.
    with contextlib.suppress(OSError, py_compile.PyCompileError):
        py_compile.compile(str(source), cfile=str(cached), doraise=True)


if not sys.dont_write_bytecode:
    _cache_own_bytecode()

from scripts import cli  # noqa: E402 - after the bytecode setting above

cli.install(
    value_words={"db.restore": {"--latest"}, "db.rollback": {"--latest"}},
    optional_positional={"db.snapshot", "db.branch"},
)


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


def _ask(question: str, without_terminal: str) -> None:
    """Go on only when the user says yes; without a terminal, refuse with the given advice."""
    from scripts.console import confirm
    from scripts.errors import StackError

    answer = confirm(question)
    if answer is None:
        raise StackError(without_terminal)
    if not answer:
        raise StackError("Nothing was changed.")


# --- lifecycle ------------------------------------------------------------------------------


@task(help={"yes": "Install missing system packages without asking (for CI)."})
@user_errors
def init(c: Context, yes: bool = False) -> None:
    """First run: create .env, install prerequisites, start the core."""
    from scripts import views
    from scripts.ops import commands

    views.initialised(commands.init(yes=yes))


@task(
    help={
        "yes": "Install without asking (for CI).",
        "tools": "Include what the tools profile (Adminer) needs. Default: yes.",
    }
)
@user_errors
def setup(c: Context, yes: bool = False, tools: bool = True) -> None:
    """Install what the backend needs (PostgreSQL 15, Redis 7, PHP)."""
    from scripts.ops import commands

    commands.setup_prerequisites(yes=yes, tools=tools)


@task(name="up-core")
@user_errors
def up_core(c: Context) -> None:
    """Start postgres + redis and wait until both answer."""
    from scripts import views
    from scripts.ops import commands

    views.started(commands.up(commands.CORE), "postgres and redis")


@task
@user_errors
def up(c: Context) -> None:
    """Start postgres + redis + adminer (profile "tools") and wait."""
    from scripts import views
    from scripts.ops import commands

    result = commands.up(commands.ALL)
    views.started(result, "postgres, redis and adminer")
    print(f"    Adminer: {result.settings.adminer_url}")


@task
@user_errors
def down(c: Context) -> None:
    """Stop every service (all profiles). Data is kept."""
    from scripts import views
    from scripts.ops import commands

    views.stopped(commands.down())


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
    from scripts import views
    from scripts.ops import commands

    views.cleaned(commands.clean(orphans=orphans, yes=yes, ask=_ask))


@task(
    help={
        "yes": "Do not ask; delete the data (for scripts and CI).",
        "backup": "Take a safety backup of the database first (default). --no-backup skips it.",
    }
)
@user_errors
def reset(c: Context, yes: bool = False, backup: bool = True) -> None:
    """Delete all data after asking and a safety backup."""
    from scripts import views
    from scripts.ops import commands

    views.reset(*commands.reset(yes=yes, backup=backup, ask=_ask))


# --- observing ------------------------------------------------------------------------------


@task(help={"json": "Print JSON for machines instead of lines."})
@user_errors
def health(c: Context, json: bool = False) -> None:
    """Probe each service for real; exit 1 when one is unhealthy."""
    from scripts import views
    from scripts.ops import commands

    backend, results = commands.health(announce=not json)
    bad = views.health(backend, results, as_json=json)
    if bad:
        raise Exit(None if json else views.unhealthy(bad, results), code=1)


@task(help={"json": "Print JSON for machines instead of a table."})
@user_errors
def status(c: Context, json: bool = False) -> None:
    """Table of services: state, address, health, data size."""
    from scripts import views
    from scripts.ops import commands

    views.status(commands.status(), as_json=json)


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
    from scripts.ops import commands

    commands.logs(services, follow=follow, tail=tail)


@task(
    help={
        "format": "dotenv (default: KEY=value lines), shell (export lines, for eval) or json.",
        "show_secrets": "Print the passwords, and the URLs with them, instead of ****.",
    }
)
@user_errors
def env(c: Context, format: str = "dotenv", show_secrets: bool = False) -> None:
    """Print the application's environment: URLs, hosts, ports, users."""
    from scripts.ops import commands

    print(commands.env(format, show_secrets=show_secrets))


@task(
    help={
        "offline": "Skip the checks that need running services (fast; no stack needed).",
        "json": "Print JSON for machines instead of a table.",
    }
)
@user_errors
def validate(c: Context, offline: bool = False, json: bool = False) -> None:
    """Check tools, .env, compose, SQL, ports, services, security."""
    from scripts import views
    from scripts.ops import validate

    report = validate.run(offline=offline)
    views.validated(report, offline=offline, as_json=json)
    if report.counts()["fail"]:
        raise Exit(code=1)


@task(name="open")
@user_errors
def open_adminer(c: Context) -> None:
    """Print Adminer's URL with the login filled in; open a browser."""
    from scripts import views
    from scripts.ops import commands

    views.opened(commands.open_adminer())


# --- clients --------------------------------------------------------------------------------


@task(
    name="shell",
    help={"command": "Run one SQL command and exit, instead of an interactive session."},
)
@user_errors
def db_shell(c: Context, command: str | None = None) -> None:
    """psql on the stack's database: interactive, or -c SQL."""
    from scripts.ops import commands

    if code := commands.db_shell(command, cli.remainder()):
        raise Exit(code=code)


@task(name="cli", help={"command": 'One command to run, e.g. -c "INFO memory".'})
@user_errors
def redis_cli(c: Context, command: str | None = None) -> None:
    """redis-cli on the stack's Redis: interactive, or -c COMMAND."""
    from scripts.ops import commands

    if code := commands.redis_cli(command, cli.remainder()):
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
    from scripts import views
    from scripts.ops import db_commands

    views.backed_up(db_commands.backup(format, name, jobs))


@task(name="backups")
@user_errors
def db_backups(c: Context) -> None:
    """List backups: name, format, size, age, checksum verified."""
    from scripts import views
    from scripts.ops import db_commands

    views.backups(*db_commands.list_backups())


@task(
    name="prune",
    help={"keep": "How many of the newest backups to keep.", "yes": "Do not ask."},
)
@user_errors
def db_prune(c: Context, keep: int = -1, yes: bool = False) -> None:
    """Delete the oldest backups, keeping the newest --keep N."""
    from scripts import views
    from scripts.ops import db_commands

    views.pruned(db_commands.prune(keep, yes=yes, ask=_ask), keep)


@task(
    name="restore",
    help={
        "file": "A backup's name in BACKUP_DIR (as `inv db.backups` lists it, with or without "
        "its extension), a backup's path, or --latest for the newest backup",
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
    from scripts import views
    from scripts.ops import db_commands

    result = db_commands.restore(
        file,
        into=into,
        jobs=jobs,
        yes=yes,
        force_other_database=force_other_database,
        backup=backup,
        ask=_ask,
    )
    views.restored(result)


@task(name="backup")
@user_errors
def redis_backup(c: Context) -> None:
    """Copy Redis's data at one point in time (BGSAVE)."""
    from scripts import views
    from scripts.ops import db_commands

    views.redis_backed_up(db_commands.redis_backup())


@task(
    name="migrate",
    help={
        "status": "Only list the migrations and their state; apply none.",
        "check": "Like --status, and exit 1 when a migration is pending, changed or missing "
        "(a CI gate).",
    },
)
@user_errors
def db_migrate(c: Context, status: bool = False, check: bool = False) -> None:
    """Apply new SQL migrations, each once, in a transaction."""
    from scripts import views
    from scripts.ops import db_commands

    if not (status or check):
        views.migrated(db_commands.migrate())
        return
    rows = db_commands.migration_status()
    views.migrations(rows)
    if check and (bad := views.unmigrated(rows)):
        raise Exit(f"✘ {bad}", code=1)


@task(name="migration", help={"name": "What it does, e.g. add_agent_tags (words are joined by _)."})
@user_errors
def db_migration(c: Context, name: str) -> None:
    """Create the next numbered migration file from a template."""
    from scripts.ops import db_commands

    print(db_commands.new_migration(name))


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
    from scripts import views
    from scripts.ops import db_commands

    views.seeded(db_commands.seed(scale))


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
    from scripts import views
    from scripts.ops import db_commands

    views.drawn(db_commands.diagram(output, yes=yes), default_output=output is None)


@task(
    name="snapshot",
    positional=["name"],
    help={
        "name": "The snapshot's name (letters, digits, - and _). Default: <branch>-<UTC time>.",
        "with_redis": "Also copy Redis's data (every key, with its time to live).",
        "delete": "Delete this snapshot instead of taking one.",
    },
)
@user_errors
def db_snapshot(
    c: Context, name: str | None = None, with_redis: bool = False, delete: str | None = None
) -> None:
    """Copy the database inside the server, to roll back to in seconds."""
    from scripts import views
    from scripts.ops import db_commands

    if delete is not None:
        views.snapshot_deleted(db_commands.delete_snapshot(delete, also_named=name or ""))
        return
    views.snapshot_taken(db_commands.snapshot(name or None, with_redis=with_redis))


@task(name="snapshots", help={"json": "Print JSON for machines instead of a table."})
@user_errors
def db_snapshots(c: Context, json: bool = False) -> None:
    """List snapshots: name, branch, size, age, Redis copied."""
    from scripts import views
    from scripts.ops import db_commands

    views.snapshots(*db_commands.list_snapshots(), as_json=json)


@task(
    name="rollback",
    help={
        "name": "The snapshot (as `inv db.snapshots` lists it), or --latest for the newest one "
        "you took; undo is the state the last rollback replaced",
        "with_redis": "Also put back the snapshot's copy of Redis's data.",
    },
)
@user_errors
def db_rollback(c: Context, name: str, with_redis: bool = False) -> None:
    """Make the database a snapshot's state again (the old one is kept as undo)."""
    from scripts import views
    from scripts.ops import db_commands

    views.rolled_back(db_commands.rollback(name, with_redis=with_redis))


@task(
    name="reset",
    help={"with_redis": "Also put Redis back as it was after `inv init` (empty)."},
)
@user_errors
def db_reset(c: Context, with_redis: bool = False) -> None:
    """Put the database back to right after `inv init`, in about a second."""
    from scripts import views
    from scripts.ops import db_commands

    views.rolled_back(db_commands.db_reset(with_redis=with_redis))


@task(
    name="branch",
    positional=["name"],
    help={
        "name": "Create this branch from the current database and make it current.",
        "list": "List the branches, their databases and sizes.",
        "switch": "Make this branch current (POSTGRES_BRANCH and DATABASE_URL in .env).",
        "delete": "Delete this branch and its database (asks, or --yes).",
        "follow_git": "Install a git post-checkout hook: each git branch gets its own database.",
        "unfollow_git": "Remove that hook; the database branches stay.",
        "repo": "The git repository to follow (default: this checkout), e.g. the application's.",
        "git_checkout": "What the hook runs after a checkout in this repository.",
        "yes": "With --delete: do not ask.",
    },
)
@user_errors
def db_branch(
    c: Context,
    name: str | None = None,
    list: bool = False,
    switch: str | None = None,
    delete: str | None = None,
    follow_git: bool = False,
    unfollow_git: bool = False,
    repo: str | None = None,
    git_checkout: str | None = None,
    yes: bool = False,
) -> None:
    """A database per branch of work: create, --list, --switch, --delete, --follow-git."""
    from scripts import views
    from scripts.ops import db_commands

    outcome = db_commands.branch(
        name or None,
        list_all=list,
        switch=switch,
        delete=delete,
        follow_git=follow_git,
        unfollow_git=unfollow_git,
        repo=repo,
        git_checkout=git_checkout,
        yes=yes,
        ask=_ask,
    )
    views.branched(outcome)


db = Collection(
    "db",
    db_shell,
    db_backup,
    db_backups,
    db_prune,
    db_restore,
    db_migrate,
    db_migration,
    db_seed,
    db_snapshot,
    db_snapshots,
    db_rollback,
    db_reset,
    db_branch,
)
redis = Collection("redis", redis_cli, redis_backup)
ns = Collection(
    init, setup, up_core, up, down, clean, reset, health, status, logs, validate, env, db, redis
)
ns.add_task(open_adminer)
db.add_task(db_diagram)

if __name__ == "__main__":  # pragma: no cover - `inv` is the entry point
    sys.exit("Run tasks with `inv`, e.g. `inv --list`.")
