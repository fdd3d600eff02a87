"""The Docker Compose backend: docker-compose.yml driven with this stack's env file.

The lifecycle (up, down, stop, exec, cp, logs) is the `docker compose` CLI's: every command
line is built by `compose_argv` and run by `_run`. Every query of containers, volumes,
networks, labels and health goes to the engine through the Docker SDK (`_engine`), which finds
the engine as the docker CLI does (DOCKER_HOST, TLS, contexts): local or remote. On an engine
reached over SSH the published ports are carried here by scripts.backends.compose_forward.
pg tools run inside the postgres container, so the host needs no PostgreSQL client.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scripts.backends import compose_forward
from scripts.backends.base import CORE, SERVICES, ServiceState
from scripts.console import display_path
from scripts.errors import StackError
from scripts.infra import net, run

if TYPE_CHECKING:
    import docker

    from scripts.backends.compose_logs import ComposeLog
    from scripts.infra.engine import Endpoint
    from scripts.settings import Settings

COMPOSE_FILE = "docker-compose.yml"
WORKING_DIR = "com.docker.compose.project.working_dir"
# A small volume per project whose label names the checkout that owns the project's volumes.
OWNER_VOLUME_SUFFIX = "checkout"
OWNER_LABEL = "org.ai-marketplace.checkout"
# The machine of that checkout: on a shared (remote) engine a path alone says nothing.
OWNER_MACHINE_LABEL = "org.ai-marketplace.machine"
_NO_DOCKER = "The docker CLI was not found: install Docker, or set STACK_BACKEND=native."
CONTAINER_SUFFIX = {"postgres": "db", "redis": "redis", "adminer": "adminer"}
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
TARGET_PORT = {"postgres": 5432, "redis": 6379, "adminer": 8080}
# docker-compose.yml publishes on ${<SERVICE>_ENGINE_PORT-${<SERVICE>_PORT}}: empty lets the
# engine pick a free port (the SSH forwarding's case).
ENGINE_PORT_KEY = {"postgres": "POSTGRES_ENGINE_PORT", "redis": "REDIS_ENGINE_PORT",
                   "adminer": "ADMINER_ENGINE_PORT"}  # fmt: skip


def compose_argv(settings: Settings, *args: str, override: Path | None = None) -> list[str]:
    """The one place a `docker compose` command line is put together (`override`: a second
    compose file, e.g. compose_remote's for an engine on another host)."""
    return [
        "docker",
        "compose",
        "--project-directory",
        str(settings.root),
        "--file",
        str(settings.root / COMPOSE_FILE),
        *(["--file", str(override)] if override else []),
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
        self._client: docker.APIClient | None = None
        self._point: Endpoint | None = None

    def endpoint(self) -> Endpoint:
        """The engine this stack's compose commands and queries go to."""
        if self._point is None:
            from scripts.infra import engine

            self._point = engine.endpoint(self.settings.subprocess_env())
        return self._point

    def where(self) -> str:
        point = self.endpoint()
        if not point.chosen_by:
            return f"project {self.settings.project}"
        return f"project {self.settings.project} · engine {point.named()}"

    def _engine(self) -> docker.APIClient:
        """The Docker SDK's API client for this stack's engine (one per process)."""
        if self._client is None:
            from scripts.infra import engine

            self._client = engine.client(self.settings.subprocess_env())
        return self._client

    def _api(self) -> Any:
        """The engine's API, untyped where the SDK's answers are JSON anyway; a failure is a
        StackError (scripts.infra.engine.Guarded)."""
        from scripts.infra.engine import Guarded

        return Guarded(self._engine(), self.endpoint())

    def _argv(self, *args: str) -> list[str]:
        """compose_argv for this stack's engine: on another host, with compose_remote's
        override (the checkout's files as configs instead of bind mounts)."""
        override = None
        if self.endpoint().remote:
            from scripts.backends.compose_remote import write_override

            override = write_override(self.settings)
        return compose_argv(self.settings, *args, override=override)

    def _compose_env(self) -> dict[str, str]:
        env = self.settings.subprocess_env()
        if self.endpoint().scheme == "ssh":
            # Publish on the engine host's loopback, on ports it picks: the forwarding
            # carries them to BIND_ADDRESS here.
            env["BIND_ADDRESS"] = "127.0.0.1"
            env.update(dict.fromkeys(ENGINE_PORT_KEY.values(), ""))
        return env

    def container(self, service: str) -> str:
        return f"{self.settings.project}_{CONTAINER_SUFFIX[service]}"

    def _docker(
        self, argv: list[str], *, capture: bool = True, input_text: str | None = None
    ) -> run.Result:
        result = run.run(argv, env=self._compose_env(), capture=capture, input_text=input_text)
        if result.returncode == run.NOT_FOUND:
            raise StackError(_NO_DOCKER)
        return result

    def _run(
        self, *args: str, capture: bool = True, check: bool = True, input_text: str | None = None
    ) -> run.Result:
        """`docker compose ARGS` for this stack; a failure is a StackError unless not `check`."""
        result = self._docker(self._argv(*args), capture=capture, input_text=input_text)
        if check and not result.ok:
            from scripts.infra.compose_plugin import compose_version, plugin_problem

            if problem := plugin_problem():
                raise StackError(problem)
            if compose_version() is None:  # the CLI's own words are about flags it lacks
                raise StackError(
                    "The docker CLI here has no Compose v2 plugin (`docker compose` runs on "
                    "this machine, whatever the engine): run `inv setup` to install it."
                )
            if _engine_down(result.stderr + result.stdout):
                self._client = None
                self._engine()  # names what is wrong with the engine, in one sentence
                raise StackError(_engine_failure(self.endpoint(), result.stderr))
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
        return self._owner_labels(with_machine=False)[0]

    def _owner_labels(self, *, with_machine: bool) -> tuple[str | None, str | None]:
        """The owner's directory (as `owner`) and, when asked for, the machine the marker
        records: the marker is read at most once."""
        marker: dict[str, str] | None = None
        directory = None
        for row in self._containers():
            if found := (row.get("Labels") or {}).get(WORKING_DIR):
                directory = str(found)
                break
        else:
            marker = self._marker_labels()
            directory = marker.get(OWNER_LABEL) or None
        if not with_machine or directory is None:
            return directory, None
        if marker is None:
            marker = self._marker_labels()
        return directory, marker.get(OWNER_MACHINE_LABEL)

    def _marker_labels(self) -> dict[str, str]:
        api = self._api()  # first: it imports the SDK as the engine needs it
        from docker.errors import NotFound

        try:
            labels = api.inspect_volume(self._marker()).get("Labels") or {}
        except NotFound:
            return {}
        return {str(k): str(v) for k, v in labels.items()}

    def _containers(self) -> list[dict[str, Any]]:
        """The project's containers as the engine lists them (running or not, no one-offs)."""
        label = f"{PROJECT_LABEL}={self.settings.project}"
        rows = self._api().containers(all=True, filters={"label": label})
        return [
            r for r in rows if (r.get("Labels") or {}).get("com.docker.compose.oneoff") != "True"
        ]

    def ownership_problem(self) -> str | None:
        """One sentence when another checkout owns this project (None when this one does, none
        does, or the one that did is gone from disk)."""
        remote = self.endpoint().remote
        owner, machine = self._owner_labels(with_machine=remote)
        here = str(self.settings.root)
        if owner is None:
            return None
        if remote:
            # A shared engine: the path is another machine's as likely as this one's.
            ours = this_machine()
            if machine in (None, ours) and owner == here:
                return None
            if machine == ours and not Path(owner).is_dir():
                return None  # a checkout of this machine that was deleted
            where = f"a checkout on {machine.split('/')[0]}" if machine else "another checkout"
            return (
                f"Compose project {self.settings.project!r} on {self.endpoint().named()} belongs "
                f"to {where}, {owner}: set COMPOSE_PROJECT_NAME in "
                f"{display_path(self.settings.env_file)} to a name of your own (on a shared "
                "engine, one per developer), or run the task there."
            )
        if owner == here or not Path(owner).is_dir():
            return None
        return (
            f"Compose project {self.settings.project!r} belongs to another checkout, {owner}: "
            f"set COMPOSE_PROJECT_NAME in {display_path(self.settings.env_file)} to a name of "
            "this checkout's own (and other ports), or run the task in that checkout."
        )

    def notes(self) -> list[str]:
        """The SSH forwarding of an ssh:// engine: what it carries, or that it is missing."""
        if self.endpoint().scheme != "ssh":
            return []
        forwarding = compose_forward.current(self.settings)
        if forwarding is not None:
            return [forwarding.describe(self.settings)]
        if self._published():
            return [
                "The stack's containers run on the engine's host, but no SSH forwarding carries "
                "their ports here: `inv up-core` (or `inv up`) starts it."
            ]
        return []

    def check_owner(self) -> None:
        if problem := self.ownership_problem():
            raise StackError(problem + " Nothing was changed.")

    def _claim(self) -> None:
        """Record this checkout as the project's owner (once; the marker lives until reset)."""
        labels = {OWNER_LABEL: str(self.settings.root), OWNER_MACHINE_LABEL: this_machine()}
        if self._marker_labels() == labels:
            return
        self._remove("volume", self._marker())
        self._api().create_volume(self._marker(), labels=labels)

    def _remove(self, kind: str, name: str) -> bool:
        """Remove a container (forced), volume or network of the project; False if it stays."""
        api = self._api()  # first: it imports the SDK as the engine needs it
        from docker.errors import NotFound

        try:
            if kind == "container":
                api.remove_container(name, force=True)
            elif kind == "volume":
                api.remove_volume(name, force=True)
            else:
                api.remove_network(name)
        except NotFound:
            return True
        except StackError:  # in use, or the engine went away: the caller names what is left
            return False
        return True

    def _running(self) -> set[str]:
        return {str(row.get("Service")) for row in self._ps() if row.get("State") == "running"}

    def start(self, services: Sequence[str]) -> list[str]:
        point = self.endpoint()
        if point.scheme == "tcp" and point.remote:
            from scripts.infra.engine import is_loopback

            if is_loopback(self.settings.bind_address):
                raise StackError(
                    f"{point.named()} would publish the ports on the loopback of "
                    f"{point.hostname}, which this machine cannot reach: use an ssh:// engine "
                    "(the tasks forward the ports), or set BIND_ADDRESS to an address of that "
                    "host. Nothing was started."
                )
        rows = self._ps()  # once
        running = {str(row.get("Service")) for row in rows if row.get("State") == "running"}
        wanted = [s for s in SERVICES if s in services and s not in running]
        forwarded = self.endpoint().scheme == "ssh"
        if wanted:
            if forwarded or not self.endpoint().remote:  # ports taken here, by anyone else
                held = compose_forward.current(self.settings)
                if held is not None and (not forwarded or held.host != self.endpoint().host):
                    compose_forward.stop(self.settings)  # to an engine this stack has left
                    held = None
                net.ensure_free(
                    self.settings, [s for s in wanted if not held or s not in held.ports]
                )
            before = self._made(rows)
            try:
                self._claim()
                self._run(*profile_args(services), "up", "--detach", *wanted)
            except StackError as exc:
                try:
                    undone = self._undo_start(before)
                except StackError as undo:  # the engine went away too: say both
                    undone = f"What it created could not be checked ({undo.message})"
                raise StackError(f"{exc.message} {undone}") from None
        if forwarded:
            self._forward()
        return wanted

    def _published(self) -> dict[str, int]:
        """The engine host's port of each running service (its loopback on an SSH engine)."""
        ports: dict[str, int] = {}
        for row in self._containers():
            service = str((row.get("Labels") or {}).get(SERVICE_LABEL, ""))
            if row.get("State") != "running" or service not in TARGET_PORT:
                continue
            for port in row.get("Ports") or []:
                if port.get("PrivatePort") == TARGET_PORT[service] and port.get("PublicPort"):
                    ports[service] = int(port["PublicPort"])
        return ports

    def _forward(self) -> None:
        """Carry the running services' ports here (the SSH engine's case)."""
        ports = self._published()
        if ports:
            compose_forward.ensure(self.settings, self.endpoint(), ports)
        else:
            compose_forward.stop(self.settings)

    def _made(
        self, rows: list[dict[str, object]] | None = None
    ) -> tuple[set[str], set[str], set[str]]:
        """The project's containers (from `rows`, `compose ps` as it just was, when given),
        volumes (with the marker) and network, as they are."""
        containers = {str(row.get("Name")) for row in (self._ps() if rows is None else rows)}
        volumes = {*self._volumes(), *self._named_volume(self._marker())}
        network = f"{self.settings.project}_network"
        return containers, volumes, self._network(network)

    def _named_volume(self, name: str) -> set[str]:
        listed = self._api().volumes(filters={"name": f"^{name}$"}).get("Volumes") or []
        return {str(v["Name"]) for v in listed if v.get("Name") == name}

    def _network(self, name: str) -> set[str]:
        listed = self._api().networks(names=[name])
        return {name} if any(n.get("Name") == name for n in listed) else set()

    def _undo_start(self, before: tuple[set[str], set[str], set[str]]) -> str:
        """Remove what a failed `up` created; say what was removed, and what could not be."""
        after = self._made()
        created = [now - then for now, then in zip(after, before, strict=True)]
        removed: list[str] = []
        left: list[str] = []
        for kind, names in zip(("container", "volume", "network"), created, strict=True):
            for name in sorted(names):
                (removed if self._remove(kind, name) else left).append(f"{kind} {name}")
        said = f"Removed what it had created: {', '.join(removed)}." if removed else ""
        if left:
            said += f" Left behind (remove by hand): {', '.join(left)}."
        return said.strip() or "It had created nothing."

    def stop(self, services: Sequence[str] = SERVICES) -> list[str]:
        running = self._running()
        if set(services) >= set(SERVICES):
            # A plain `down` leaves profiled services (adminer) running and the network busy.
            try:
                self._run("--profile", "*", "down", "--remove-orphans")
            finally:
                compose_forward.stop(self.settings)
        else:
            # A paused (hung) container would not stop: let it run first, then stop it.
            self._run(*profile_args(services), "unpause", *services, check=False)
            self._run(*profile_args(services), "stop", *services)
            if self.endpoint().scheme == "ssh":
                self._forward()
        return [s for s in reversed(SERVICES) if s in running and s in services]

    def clean(self) -> list[str]:
        try:
            self._run("--profile", "*", "down", "--remove-orphans")
        finally:
            compose_forward.stop(self.settings)
        return ["containers and network of project " + self.settings.project]

    def has_database(self) -> bool:
        return f"{self.settings.project}_postgres_data" in self._volumes()

    def destroy(self) -> list[str]:
        volumes = self._volumes()
        network = self._network(f"{self.settings.project}_network")
        try:
            self._run("--profile", "*", "down", "--volumes", "--remove-orphans")
        finally:
            compose_forward.stop(self.settings)
        self._remove("volume", self._marker())
        return [f"volume {v}" for v in volumes] + [f"network {n}" for n in network]

    def _volumes(self) -> list[str]:
        label = f"{PROJECT_LABEL}={self.settings.project}"
        listed = self._api().volumes(filters={"label": label}).get("Volumes") or []
        return sorted(str(v["Name"]) for v in listed)

    def _ps(self) -> list[dict[str, object]]:
        """The project's containers as `docker compose ps --all` shows them (Service, Name,
        State, ExitCode, Health), from one query of the engine."""
        rows: list[dict[str, object]] = []
        for row in self._containers():
            labels = row.get("Labels") or {}
            status = str(row.get("Status", ""))
            exited = _EXIT_CODE.search(status)
            health = _HEALTH.search(status)
            rows.append({
                "Service": labels.get(SERVICE_LABEL, ""),
                "Name": str((row.get("Names") or ["/?"])[0]).lstrip("/"),
                "State": row.get("State", "unknown"),
                "ExitCode": int(exited.group(1)) if exited else 0,
                "Health": health.group(1) if health else "",
            })  # fmt: skip
        return rows

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
        sizes: dict[str, int] = {}
        try:
            volumes = self._api().df().get("Volumes") or []
        except StackError:  # sizes are a nicety: the states are what status is about
            return sizes
        for volume in volumes:
            name = str(volume.get("Name", ""))
            size = (volume.get("UsageData") or {}).get("Size", -1)
            for service in CORE:
                if name == f"{self.settings.project}_{service}_data" and size >= 0:
                    sizes[service] = int(size)
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
        argv = self._argv("exec", "-T", "postgres", tool, "-U", user)
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
            if self.endpoint().scheme == "ssh":
                self._forward()  # the new container publishes on another engine port
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


def this_machine() -> str:
    """This machine as an owner label says it: its host name, and its machine id where the
    system has one (two laptops may share a host name)."""
    import socket

    machine_id = ""
    with contextlib.suppress(OSError):
        machine_id = Path("/etc/machine-id").read_text().strip()[:12]
    return f"{socket.gethostname()}/{machine_id}" if machine_id else socket.gethostname()


def _engine_down(output: str) -> bool:
    return any(
        sign in output
        for sign in (
            "Cannot connect to the Docker daemon",
            "Is the docker daemon running",
            "error during connect",
        )
    )


def _engine_failure(point: Endpoint, stderr: str) -> str:
    detail = (stderr.strip().splitlines() or ["no answer"])[-1].rstrip(".")
    return f"No Docker engine answers at {point.named()} ({detail}): {point.fix_hint()}."


_EXIT_CODE = re.compile(r"^Exited \((-?\d+)\)")
_HEALTH = re.compile(r"\((healthy|unhealthy|health: starting)\)")
