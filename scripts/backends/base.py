"""What every backend offers (the Backend protocol, ServiceState), and the one place a
configured backend of `auto` becomes compose or native (`resolve`).

The use cases act through the protocol; where a backend is named (Adminer's address inside
the compose network, validate's tools), it is as data the protocol or settings give.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from scripts.errors import UsageError

if TYPE_CHECKING:
    from scripts.settings import Settings

SERVICES = ("postgres", "redis", "adminer")
CORE = ("postgres", "redis")


@dataclass(frozen=True)
class ServiceState:
    service: str
    running: bool
    state: str  # "running", "stopped", "exited (1)", "not created", ...
    detail: str = ""  # pid or container name, for people
    data_bytes: int | None = None
    pid: int | None = None  # the server's process, on the native backend


@dataclass(frozen=True)
class LogLine:
    at: float | None  # when it was written (seconds since the epoch), if the line says
    text: str


class LogSource(Protocol):
    """One service's log: the last lines, then (when followed) what is written after them."""

    def past(self, tail: int) -> list[LogLine]:
        """The last `tail` lines; what `new` returns starts after them."""

    def new(self) -> list[LogLine]:
        """The complete lines written since the last call, without waiting."""

    def close(self) -> None:
        """Stop reading (a follower process ends)."""


class Backend(Protocol):
    name: str
    local_files: bool  # the pg tools run on this machine and read and write its paths

    def where(self) -> str:
        """Where this backend keeps the stack, for the line every task prints."""

    def start(self, services: Sequence[str]) -> list[str]:
        """Start the services not running yet; return those it started."""

    def stop(self, services: Sequence[str] = SERVICES) -> list[str]:
        """Stop services (every profile by default); return those it stopped."""

    def clean(self) -> list[str]:
        """Stop everything and remove leftovers that hold no data; return what went."""

    def destroy(self) -> list[str]:
        """Stop everything and delete the data; return what was deleted."""

    def has_database(self) -> bool:
        """Whether PostgreSQL data exists (initialised), running or not."""

    def states(self, *, sizes: bool = True) -> dict[str, ServiceState]:
        """State of every service, running or not (data sizes cost a walk of the data)."""

    def exit_reason(self, service: str) -> str | None:
        """Why a starting service can never become ready (it exited), else None."""

    def log_source(self, service: str, *, follow: bool) -> LogSource:
        """A service's log, its lines with the time each was written (scripts.ops.logs
        merges the services' lines in time order)."""

    def psql(self, sql: str | None, extra: Sequence[str] = ()) -> int:
        """Run psql on the stack's database: interactive, or one command."""

    def redis_cli(self, args: Sequence[str]) -> int:
        """Run redis-cli on the stack's Redis, authenticated."""

    def pg_command(
        self, tool: str, args: Sequence[str], login: tuple[str, str] | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """argv and environment that run a PostgreSQL client tool (pg_dump, pg_restore, psql)
        of the server's major version against the stack, logged in as the application's role
        or as `login` (user, password)."""

    def pg_input(self, local: Path) -> AbstractContextManager[str]:
        """The path under which the pg tools see a local file or directory (for reading)."""

    def pg_output_dir(self, local: Path) -> AbstractContextManager[str]:
        """A path where the pg tools may write a directory that ends up at `local` once the
        block exits without an error."""

    def copy_service_file(self, service: str, relative: str, target: Path) -> None:
        """Copy a file from a service's data directory (e.g. redis's dump.rdb) to `target`."""

    def apply_password(self, service: str) -> str:
        """Make a running postgres or redis take the password in the env file, without the
        old one; return how (for the user). A StackError says why it could not."""

    def ownership_problem(self) -> str | None:
        """One sentence when another checkout owns what this stack would act on, else None."""

    def notes(self) -> list[str]:
        """What `inv status` shows besides the services (e.g. a forwarding of the ports)."""

    def check_owner(self) -> None:
        """Refuse (StackError) when another checkout owns what this stack would change."""


def resolve(configured: str) -> tuple[str, str]:
    """A configured backend name (auto, compose or native) as the backend to use, and why.

    The one place `auto` is decided: compose when a Docker engine with Compose v2 answers,
    else native."""
    if configured != "auto":
        return configured, f"STACK_BACKEND={configured}"
    from scripts.infra.compose_plugin import compose_version
    from scripts.infra.docker import engine_version

    if engine_version() and compose_version():
        return "compose", "STACK_BACKEND=auto chose compose: a Docker engine answers"
    return "native", "STACK_BACKEND=auto chose native: no Docker engine answers"


def resolve_backend_name(settings: Settings) -> str:
    return resolve(settings.backend)[0]


def check_services(names: Sequence[str]) -> list[str]:
    """Validate service names given on the command line."""
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        from scripts.console import closest

        guess = closest(unknown[0], SERVICES)
        hint = f"did you mean {guess}? " if guess else ""
        raise UsageError(
            f"No service named {', '.join(unknown)}: {hint}choose from {', '.join(SERVICES)}."
        )
    return list(names) or list(SERVICES)
