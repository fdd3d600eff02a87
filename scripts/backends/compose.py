"""The Docker Compose backend: docker-compose.yml driven with this stack's env file.

Every `docker compose` command line is built by `compose_argv`, and every docker call of the
backend goes through `_docker`, which turns a missing docker CLI into one clear sentence.
pg tools run inside the postgres container, so the host needs no PostgreSQL client.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.backends.base import CORE, SERVICES, ServiceState
from scripts.console import display_path
from scripts.errors import StackError
from scripts.infra import net, run

if TYPE_CHECKING:
    from scripts.backends.compose_logs import ComposeLog
    from scripts.settings import Settings

COMPOSE_FILE = "docker-compose.yml"
WORKING_DIR = "com.docker.compose.project.working_dir"
# A small volume per project whose label names the checkout that owns the project's volumes.
OWNER_VOLUME_SUFFIX = "checkout"
OWNER_LABEL = "org.ai-marketplace.checkout"
_NO_DOCKER = "The docker CLI was not found: install Docker, or set STACK_BACKEND=native."
CONTAINER_SUFFIX = {"postgres": "db", "redis": "redis", "adminer": "adminer"}


def compose_argv(settings: Settings, *args: str) -> list[str]:
    """The one place a `docker compose` command line is put together."""
    return [
        "docker",
        "compose",
        "--project-directory",
        str(settings.root),
        "--file",
        str(settings.root / COMPOSE_FILE),
        "--env-file",
        str(settings.env_file),
        "--project-name",
        settings.project,
        *args,
    ]


def profile_args(services: Sequence[str]) -> list[str]:
    return ["--profile", "tools"] if "adminer" in services else []


class ComposeBackend:
    name = "compose"
    local_files = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def where(self) -> str:
        return f"project {self.settings.project}"

    def container(self, service: str) -> str:
        return f"{self.settings.project}_{CONTAINER_SUFFIX[service]}"

    def _docker(
        self, argv: list[str], *, capture: bool = True, input_text: str | None = None
    ) -> run.Result:
        result = run.run(
            argv, env=self.settings.subprocess_env(), capture=capture, input_text=input_text
        )
        if result.returncode == run.NOT_FOUND:
            raise StackError(_NO_DOCKER)
        return result

    def _run(
        self, *args: str, capture: bool = True, check: bool = True, input_text: str | None = None
    ) -> run.Result:
        """`docker compose ARGS` for this stack; a failure is a StackError unless not `check`."""
        result = self._docker(
            compose_argv(self.settings, *args), capture=capture, input_text=input_text
        )
        if check and not result.ok:
            if _engine_down(result.stderr + result.stdout):
                raise StackError(_engine_failure(result.stderr))
            raise StackError(
                f"`docker compose {' '.join(args)}` failed: "
                f"{result.last_line(f'exit code {result.returncode}')}."
            )
        return result

    # --- which checkout owns the project ---------------------------------------------------

    def _marker(self) -> str:
        return f"{self.settings.project}_{OWNER_VOLUME_SUFFIX}"

    def owner(self) -> str | None:
        """The directory of the checkout that owns this compose project, if one does: the
        working dir Compose records on the project's containers, else the one this stack
        records on its marker volume (volumes outlive containers, and Compose records none
        on them)."""
        project = f"label=com.docker.compose.project={self.settings.project}"
        listed = self._docker(
            [
                "docker",
                "ps",
                "--all",
                "--filter",
                project,
                "--format",
                f'{{{{.Label "{WORKING_DIR}"}}}}',
            ]
        )
        if listed.returncode != 0:
            raise StackError(_engine_failure(listed.stderr))
        dirs = [line.strip() for line in listed.stdout.splitlines() if line.strip()]
        if dirs:
            return dirs[0]
        marker = self._docker(
            [
                "docker",
                "volume",
                "inspect",
                self._marker(),
                "--format",
                f'{{{{index .Labels "{OWNER_LABEL}"}}}}',
            ]
        )
        found = marker.stdout.strip() if marker.returncode == 0 else ""
        return found if found and found != "<no value>" else None

    def ownership_problem(self) -> str | None:
        """One sentence when another checkout owns this project (None when this one does, none
        does, or the one that did is gone from disk)."""
        owner = self.owner()
        here = str(self.settings.root)
        if owner is None or owner == here or not Path(owner).is_dir():
            return None
        return (
            f"Compose project {self.settings.project!r} belongs to another checkout, {owner}: "
            f"set COMPOSE_PROJECT_NAME in {display_path(self.settings.env_file)} to a name of "
            "this checkout's own (and other ports), or run the task in that checkout."
        )

    def check_owner(self) -> None:
        if problem := self.ownership_problem():
            raise StackError(problem + " Nothing was changed.")

    def _claim(self) -> None:
        """Record this checkout as the project's owner (once; the marker lives until reset)."""
        owner = self.owner()
        here = str(self.settings.root)
        if owner == here:
            return
        self._docker(["docker", "volume", "rm", "--force", self._marker()])
        created = self._docker(
            ["docker", "volume", "create", "--label", f"{OWNER_LABEL}={here}", self._marker()]
        )
        if created.returncode != 0:
            raise StackError(_engine_failure(created.stderr))

    def _running(self) -> set[str]:
        return {str(row.get("Service")) for row in self._ps() if row.get("State") == "running"}

    def start(self, services: Sequence[str]) -> list[str]:
        rows = self._ps()  # once: each `compose ps` costs 0.13 s here
        running = {str(row.get("Service")) for row in rows if row.get("State") == "running"}
        wanted = [s for s in SERVICES if s in services and s not in running]
        if wanted:
            net.ensure_free(self.settings, wanted)
            before = self._made(rows)
            try:
                self._claim()
                self._run(*profile_args(services), "up", "--detach", *wanted)
            except StackError as exc:
                raise StackError(f"{exc.message} {self._undo_start(before)}") from None
        return wanted

    def _made(
        self, rows: list[dict[str, object]] | None = None
    ) -> tuple[set[str], set[str], set[str]]:
        """The project's containers (from `rows`, `compose ps` as it just was, when given),
        volumes (with the marker) and network, as they are."""
        containers = {str(row.get("Name")) for row in (self._ps() if rows is None else rows)}
        volumes = {*self._volumes(), *self._named_volume(self._marker())}
        network = f"{self.settings.project}_network"
        listed = self._docker(["docker", "network", "ls", "-q", "--filter", f"name=^{network}$"])
        return containers, volumes, {network} if listed.stdout.strip() else set()

    def _named_volume(self, name: str) -> set[str]:
        found = self._docker(["docker", "volume", "ls", "-q", "--filter", f"name=^{name}$"])
        return set(found.stdout.split())

    def _undo_start(self, before: tuple[set[str], set[str], set[str]]) -> str:
        """Remove what a failed `up` created; say what was removed, and what could not be."""
        after = self._made()
        created = [now - then for now, then in zip(after, before, strict=True)]
        removed: list[str] = []
        left: list[str] = []
        for kind, names in zip(("container", "volume", "network"), created, strict=True):
            for name in sorted(names):
                gone = self._docker(["docker", kind, "rm", "--force", name] if kind == "container"
                                    else ["docker", kind, "rm", name])  # fmt: skip
                (removed if gone.returncode == 0 else left).append(f"{kind} {name}")
        said = f"Removed what it had created: {', '.join(removed)}." if removed else ""
        if left:
            said += f" Left behind (remove by hand): {', '.join(left)}."
        return said.strip() or "It had created nothing."

    def stop(self, services: Sequence[str] = SERVICES) -> list[str]:
        running = self._running()
        if set(services) >= set(SERVICES):
            # A plain `down` leaves profiled services (adminer) running and the network busy.
            self._run("--profile", "*", "down", "--remove-orphans")
        else:
            # A paused (hung) container would not stop: let it run first, then stop it.
            self._run(*profile_args(services), "unpause", *services, check=False)
            self._run(*profile_args(services), "stop", *services)
        return [s for s in reversed(SERVICES) if s in running and s in services]

    def clean(self) -> list[str]:
        self._run("--profile", "*", "down", "--remove-orphans")
        return ["containers and network of project " + self.settings.project]

    def has_database(self) -> bool:
        return f"{self.settings.project}_postgres_data" in self._volumes()

    def destroy(self) -> list[str]:
        volumes = self._volumes()
        network = f"{self.settings.project}_network"
        listed = self._docker(
            ["docker", "network", "ls", "--quiet", "--filter", f"name=^{network}$"]
        )
        self._run("--profile", "*", "down", "--volumes", "--remove-orphans")
        self._docker(["docker", "volume", "rm", "--force", self._marker()])
        removed = [f"volume {v}" for v in volumes]
        return removed + ([f"network {network}"] if listed.stdout.strip() else [])

    def _volumes(self) -> list[str]:
        label = f"label=com.docker.compose.project={self.settings.project}"
        return self._docker(["docker", "volume", "ls", "--quiet", "--filter", label]).stdout.split()

    def _ps(self) -> list[dict[str, object]]:
        result = self._run("--profile", "*", "ps", "--all", "--format", "json")
        text = result.stdout.strip()
        if not text:
            return []
        if text.startswith("["):  # Compose before 2.21 printed one JSON array
            return list(json.loads(text))
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def states(self, *, sizes: bool = True) -> dict[str, ServiceState]:
        found = {str(row.get("Service")): row for row in self._ps()}
        data = self._volume_sizes() if sizes else {}
        result = {}
        for service in SERVICES:
            row = found.get(service)
            size = data.get(service)
            if row is None:
                result[service] = ServiceState(service, False, "not created", "", size)
                continue
            state = str(row.get("State", "unknown"))
            running = state == "running"
            if state == "exited":
                state = f"exited ({row.get('ExitCode', '?')})"
            result[service] = ServiceState(service, running, state, str(row.get("Name")), size)
        return result

    def _volume_sizes(self) -> dict[str, int]:
        result = self._docker(["docker", "system", "df", "--verbose", "--format", "json"])
        sizes: dict[str, int] = {}
        if result.returncode != 0:
            return sizes
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            for volume in json.loads(result.stdout).get("Volumes") or []:
                name = str(volume.get("Name", ""))
                for service in CORE:
                    if name == f"{self.settings.project}_{service}_data":
                        sizes[service] = _parse_size(str(volume.get("Size", "0B")))
        return sizes

    def exit_reason(self, service: str) -> str | None:
        row = next((r for r in self._ps() if r.get("Service") == service), None)
        if row is None or row.get("State") in ("running", "created", "restarting"):
            return None
        state = f"{row.get('State')} (exit code {row.get('ExitCode', '?')})"
        return f"container {self.container(service)} is {state}: see `inv logs -s {service}`"

    def log_source(self, service: str, *, follow: bool) -> ComposeLog:
        from scripts.backends.compose_logs import ComposeLog

        return ComposeLog(self.settings, service, follow=follow)

    def _exec(self, service: str, argv: Sequence[str]) -> int:
        tty = [] if sys.stdin.isatty() and sys.stdout.isatty() else ["-T"]
        return self._run("exec", *tty, service, *argv, capture=False, check=False).returncode

    def psql(self, sql: str | None, extra: Sequence[str] = ()) -> int:
        s = self.settings
        # Inside the container the Unix socket is trusted: no password crosses a command line.
        argv = ["psql", "-U", s.postgres_user, "-d", s.postgres_db, *extra]
        if sql is not None:
            argv += ["-v", "ON_ERROR_STOP=1", "-c", sql]
        return self._exec("postgres", argv)

    def pg_command(
        self, tool: str, args: Sequence[str], login: tuple[str, str] | None = None
    ) -> tuple[list[str], dict[str, str]]:
        # The tools of the server's own image, over its trusted Unix socket: the host needs
        # no PostgreSQL client and no password crosses a command line. The session is the
        # role's all the same: no more rights than it has.
        user = login[0] if login else self.settings.postgres_user
        argv = compose_argv(self.settings, "exec", "-T", "postgres", tool, "-U", user)
        return [*argv, *args], self.settings.subprocess_env()

    @contextlib.contextmanager
    def pg_input(self, local: Path) -> Iterator[str]:
        inside = f"/tmp/aim-{secrets.token_hex(6)}"  # noqa: S108 - the container's own /tmp
        self._run("cp", str(local), f"postgres:{inside}")
        try:
            yield inside
        finally:
            self._run("exec", "-T", "postgres", "rm", "-rf", inside, check=False)

    @contextlib.contextmanager
    def pg_output_dir(self, local: Path) -> Iterator[str]:
        inside = f"/tmp/aim-{secrets.token_hex(6)}"  # noqa: S108 - the container's own /tmp
        try:
            yield inside
            self._run("cp", f"postgres:{inside}", str(local))
        finally:
            self._run("exec", "-T", "postgres", "rm", "-rf", inside, check=False)

    def copy_service_file(self, service: str, relative: str, target: Path) -> None:
        data = {"postgres": "/var/lib/postgresql/data", "redis": "/data"}[service]
        self._run("cp", f"{service}:{data}/{relative}", str(target))

    def apply_password(self, service: str) -> str:
        """Make a running service take the password in the env file; say how it was done.

        PostgreSQL keeps the passwords it was first given in its volume: they are changed
        with psql inside the container, over the socket the image trusts (as the admin, or on
        a stack from before the admin role, as the application's role, then its superuser).
        Redis takes its password from the container's environment: recreating it does.
        """
        s = self.settings
        if service == "redis":
            self._run("up", "--detach", "--force-recreate", "redis")
            return "container recreated"
        from scripts.infra.database import password_sql

        detail = ""
        for user in (s.postgres_admin_user, s.postgres_user):
            argv = ["exec", "-T", "postgres", "psql", "-U", user, "-d", "postgres"]
            argv += ["-v", "ON_ERROR_STOP=1", "--no-psqlrc", "-q"]
            result = self._run(*argv, check=False, input_text=password_sql(s))
            if result.ok:
                return "with psql inside its container"
            detail = result.last_line()
        raise StackError(
            f"PostgreSQL refuses the passwords in {display_path(s.env_file)}, and applying them "
            f"inside container {self.container('postgres')} failed ({detail}): put the old "
            "passwords back, or see `inv logs -s postgres`."
        )

    def redis_cli(self, args: Sequence[str]) -> int:
        # The password comes from the container's own environment, never from our argv.
        script = 'REDISCLI_AUTH="$REDIS_PASSWORD" exec redis-cli "$@"'
        return self._exec("redis", ["sh", "-c", script, "redis-cli", *args])


def _engine_down(output: str) -> bool:
    return any(
        sign in output
        for sign in (
            "Cannot connect to the Docker daemon",
            "Is the docker daemon running",
            "error during connect",
        )
    )


def _engine_failure(stderr: str) -> str:
    import os

    host = os.environ.get("DOCKER_HOST") or "the local socket"
    detail = (stderr.strip().splitlines() or ["no answer"])[-1].rstrip(".")
    return (
        f"No Docker engine answers on {host} ({detail}): start one with `inv setup`, or set "
        "STACK_BACKEND=native in the env file."
    )


def _parse_size(text: str) -> int:
    units = {"B": 1, "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            with contextlib.suppress(ValueError):
                return int(float(text[: -len(unit)]) * units[unit])
    return 0
