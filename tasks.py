"""Tasks for the AI Marketplace local stack (PostgreSQL 15, Redis 7, Adminer).

Each task parses its arguments, calls one function in `scripts`, and prints. A StackError
(something the user can fix) ends the task with its one-line message and a non-zero exit.
"""

from __future__ import annotations

import functools
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


def user_errors(func: F) -> F:
    """Turn a StackError into invoke's Exit: the message, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from scripts.errors import StackError

        try:
            return func(*args, **kwargs)
        except StackError as exc:
            raise Exit(f"✘ {exc.message}", code=exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _open(*, announce: bool = True) -> tuple[Settings, Backend]:
    from scripts.backends import get_backend
    from scripts.console import say
    from scripts.settings import load

    settings = load()
    backend = get_backend(settings)
    if announce:
        say("info", f"{backend.name} backend · {backend.where()}")
    return settings, backend


def _report_up(report: Any, what: str) -> None:
    from scripts.console import say

    for name, result in report.results.items():
        say("ok", f"{name}: {result.detail}")
    started = f"started {', '.join(report.started)}" if report.started else "already running"
    say("ok", f"{what} ready in {report.seconds:.2f} s ({started})")


# --- lifecycle ------------------------------------------------------------------------------


@task(help={"yes": "Install missing system packages without asking (for CI)."})
@user_errors
def init(c: Context, yes: bool = False) -> None:
    """First run: create .env, install prerequisites, start the core."""
    from scripts import initialise
    from scripts.console import say

    settings, backend = initialise.run(yes=yes)
    from scripts import stack

    report = stack.up(settings, backend, ("postgres", "redis"))
    _report_up(report, "postgres and redis")
    say("info", "Connection (full URLs with passwords are in the env file):")
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

    settings, backend = _open()
    _report_up(stack.up(settings, backend, ("postgres", "redis")), "postgres and redis")


@task
@user_errors
def up(c: Context) -> None:
    """Start postgres + redis + adminer (profile "tools") and wait."""
    from scripts import stack

    settings, backend = _open()
    report = stack.up(settings, backend, ("postgres", "redis", "adminer"))
    _report_up(report, "postgres, redis and adminer")
    host, port = stack.address(settings, "adminer")
    print(f"    Adminer: http://{host}:{port}/")


@task
@user_errors
def down(c: Context) -> None:
    """Stop every service (all profiles). Data is kept."""
    from scripts import stack
    from scripts.console import say

    settings, backend = _open()
    stopped = stack.down(settings, backend)
    say("ok", f"Stopped {', '.join(stopped)}." if stopped else "Nothing was running.")


@task
@user_errors
def clean(c: Context) -> None:
    """Stop everything, remove leftovers (pid files, logs); keep data."""
    from scripts import stack
    from scripts.console import say

    settings, backend = _open()
    removed = stack.clean(settings, backend)
    say("ok", "Removed: " + ", ".join(removed) if removed else "Nothing to clean.")


@task(help={"yes": "Do not ask; delete the data (for scripts and CI)."})
@user_errors
def reset(c: Context, yes: bool = False) -> None:
    """Delete all data (database, Redis, volumes) after asking."""
    from scripts import stack
    from scripts.console import confirm, say
    from scripts.errors import StackError

    settings, backend = _open()
    if not yes:
        answer = confirm(
            f"Delete every PostgreSQL and Redis data of this stack ({backend.where()})?"
        )
        if answer is None:
            raise StackError("reset deletes all data: run `inv reset --yes` to confirm.")
        if not answer:
            raise StackError("Nothing was deleted.", exit_code=1)
    removed = stack.reset(settings, backend)
    say("ok", "Deleted: " + ", ".join(removed) if removed else "There was no data to delete.")
    say("info", "Run `inv init` (or `inv up-core`) to start again from the seed data.")


# --- observing ------------------------------------------------------------------------------


@task(help={"json": "Print JSON for machines instead of lines."})
@user_errors
def health(c: Context, json: bool = False) -> None:
    """Probe each service for real; exit 1 when one is unhealthy."""
    from scripts import stack
    from scripts.console import say

    settings, backend = _open(announce=not json)
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
        raise Exit(
            None if json else f"✘ Unhealthy: {', '.join(bad)}. Try `inv up-core`, then `inv logs`.",
            code=1,
        )


@task(help={"json": "Print JSON for machines instead of a table."})
@user_errors
def status(c: Context, json: bool = False) -> None:
    """Table of services: state, address, health, data size."""
    from scripts import stack
    from scripts.console import human_size, mark, table

    settings, backend = _open(announce=False)
    rows = stack.status(settings, backend)
    if json:
        import json as jsonlib

        print(
            jsonlib.dumps(
                {
                    "backend": backend.name,
                    "where": backend.where(),
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


@task(
    help={
        "services": "Comma-separated services, e.g. -s postgres,redis. Default: all.",
        "follow": "Keep printing new lines until Ctrl-C.",
        "tail": "How many past lines per service to print first (default 100).",
    },
)
@user_errors
def logs(c: Context, services: str = "", follow: bool = False, tail: int = 100) -> None:
    """Show logs of all services or -s postgres,redis; --follow streams."""
    from scripts.backends import check_services

    names = check_services([s.strip() for s in services.split(",") if s.strip()])
    _, backend = _open(announce=False)
    backend.logs(names, follow, tail)


# --- clients --------------------------------------------------------------------------------


@task(
    name="shell",
    help={"command": "Run one SQL command and exit, instead of an interactive session."},
)
@user_errors
def db_shell(c: Context, command: str | None = None) -> None:
    """psql on the stack's database: interactive, or -c SQL."""
    _, backend = _open(announce=False)
    code = backend.psql(command, shlex.split(c.remainder))
    if code:
        raise Exit(code=code)


@task(name="cli", help={"command": 'One command to run, e.g. -c "INFO memory".'})
@user_errors
def redis_cli(c: Context, command: str | None = None) -> None:
    """redis-cli on the stack's Redis: interactive, or -c COMMAND."""
    _, backend = _open(announce=False)
    args = shlex.split(command or "") + shlex.split(c.remainder)
    code = backend.redis_cli(args)
    if code:
        raise Exit(code=code)


db = Collection("db", db_shell)
redis = Collection("redis", redis_cli)
ns = Collection(init, setup, up_core, up, down, clean, reset, health, status, logs, db, redis)

if __name__ == "__main__":  # pragma: no cover - `inv` is the entry point
    sys.exit("Run tasks with `inv`, e.g. `inv --list`.")
