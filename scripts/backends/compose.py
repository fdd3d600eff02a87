"""The Docker Compose backend: docker-compose.yml driven with this stack's env file.

Every `docker compose` invocation is built by `compose_argv` and run by `ComposeBackend._run`;
pg tools run inside the postgres container, so the host needs no PostgreSQL client.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from scripts.backends import CORE, SERVICES, ServiceState
from scripts.errors import StackError

if TYPE_CHECKING:
    from scripts.settings import Settings

COMPOSE_FILE = "docker-compose.yml"
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


def engine_answers(timeout: float = 1.0) -> str | None:
    """The engine's version when a Docker engine answers on DOCKER_HOST (or the default socket).

    Talks to the API directly: spawning `docker info` costs more than the answer.
    """
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(host[len("unix://") :])
        elif host.startswith("tcp://"):
            address, _, port = host[len("tcp://") :].rpartition(":")
            sock = socket.create_connection((address, int(port)), timeout=timeout)
        else:
            return None  # ssh:// and friends: let the docker CLI decide
        with sock:
            sock.sendall(b"GET /version HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
    except (OSError, ValueError):
        return None
    head, _, body = reply.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n", 1)[0]:
        return None
    try:
        return str(json.loads(body).get("Version", "unknown"))
    except ValueError:
        return "unknown"


def compose_version() -> str | None:
    """Compose v2's version, or None when `docker compose` is not available."""
    if shutil.which("docker") is None:
        return None
    try:
        result = subprocess.run(
            ["docker", "compose", "version", "--short"],
            capture_output=True,
            text=True,
            check=False,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = result.stdout.strip().lstrip("v")
    if result.returncode != 0 or not version[:1].isdigit() or version.startswith("1."):
        return None
    return version


def profile_args(services: Sequence[str]) -> list[str]:
    return ["--profile", "tools"] if "adminer" in services else []


class ComposeBackend:
    name = "compose"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def where(self) -> str:
        return f"project {self.settings.project}"

    def container(self, service: str) -> str:
        return f"{self.settings.project}_{CONTAINER_SUFFIX[service]}"

    def _run(
        self, *args: str, capture: bool = True, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = compose_argv(self.settings, *args)
        try:
            result = subprocess.run(
                argv,
                env=self.settings.subprocess_env(),
                capture_output=capture,
                text=True,
                check=False,
            )
        except FileNotFoundError:
            raise StackError(
                "The docker CLI was not found: install Docker, or set STACK_BACKEND=native."
            ) from None
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout or "").strip().splitlines()
            raise StackError(
                f"`docker compose {' '.join(args)}` failed: "
                f"{detail[-1] if detail else f'exit code {result.returncode}'}."
            )
        return result

    def _running(self) -> set[str]:
        return {str(row.get("Service")) for row in self._ps() if row.get("State") == "running"}

    def start(self, services: Sequence[str]) -> list[str]:
        running = self._running()
        wanted = [s for s in SERVICES if s in services and s not in running]
        if wanted:
            self._run(*profile_args(services), "up", "--detach", *wanted)
        return wanted

    def stop(self, services: Sequence[str] = SERVICES) -> list[str]:
        running = self._running()
        if set(services) >= set(SERVICES):
            # A plain `down` leaves profiled services (adminer) running and the network busy.
            self._run("--profile", "*", "down", "--remove-orphans")
        else:
            self._run(*profile_args(services), "stop", *services)
        return [s for s in reversed(SERVICES) if s in running and s in services]

    def clean(self) -> list[str]:
        self._run("--profile", "*", "down", "--remove-orphans")
        return ["containers and network of project " + self.settings.project]

    def destroy(self) -> list[str]:
        volumes = self._volumes()
        self._run("--profile", "*", "down", "--volumes", "--remove-orphans")
        return [*(f"volume {v}" for v in volumes), f"network {self.settings.project}_network"]

    def _volumes(self) -> list[str]:
        result = subprocess.run(
            [
                "docker",
                "volume",
                "ls",
                "--quiet",
                "--filter",
                f"label=com.docker.compose.project={self.settings.project}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout.split()

    def _ps(self) -> list[dict[str, object]]:
        result = self._run("--profile", "*", "ps", "--all", "--format", "json")
        text = result.stdout.strip()
        if not text:
            return []
        if text.startswith("["):  # Compose before 2.21 printed one JSON array
            return list(json.loads(text))
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def states(self) -> dict[str, ServiceState]:
        found = {str(row.get("Service")): row for row in self._ps()}
        sizes = self._volume_sizes()
        result = {}
        for service in SERVICES:
            row = found.get(service)
            size = sizes.get(service)
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
        result = subprocess.run(
            ["docker", "system", "df", "--verbose", "--format", "json"],
            capture_output=True,
            text=True,
            check=False,
        )
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

    def logs(self, services: Sequence[str], follow: bool, tail: int) -> None:
        args = ["--profile", "*", "logs", "--tail", str(tail)]
        if follow:
            args.append("--follow")
        with contextlib.suppress(KeyboardInterrupt):
            self._run(*args, *services, capture=False, check=False)

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

    def redis_cli(self, args: Sequence[str]) -> int:
        # The password comes from the container's own environment, never from our argv.
        script = 'REDISCLI_AUTH="$REDIS_PASSWORD" exec redis-cli "$@"'
        return self._exec("redis", ["sh", "-c", script, "redis-cli", *args])


def _parse_size(text: str) -> int:
    units = {"B": 1, "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            with contextlib.suppress(ValueError):
                return int(float(text[: -len(unit)]) * units[unit])
    return 0
