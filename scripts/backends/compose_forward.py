"""The stack's ports on an engine reached over SSH, carried to this machine by one `ssh -L`
process per stack: DATABASE_URL, REDIS_URL and Adminer's URL stay on BIND_ADDRESS, and the
application cannot tell that the containers run elsewhere.

On such an engine the containers publish on the engine host's loopback, on ports the engine
picks (two developers' stacks on one build host never collide); the forwarding carries
BIND_ADDRESS:POSTGRES_PORT (REDIS_PORT, ADMINER_PORT) to them. It is managed like a native
server: started by up (again when the engine's ports change), stopped by down, shown by status;
its pid and ports are in the state dir.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.errors import StackError
from scripts.files import write_atomic
from scripts.infra import net, procs, run, wait

if TYPE_CHECKING:
    from scripts.infra.engine import Endpoint
    from scripts.settings import Settings

STATE_FILE = "ssh-forward.json"
LOG_FILE = "ssh-forward.log"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class Forwarding:
    """A running forwarding: its process and the ports it carries (service -> engine port)."""

    pid: int
    host: str  # the engine's DOCKER_HOST
    ports: Mapping[str, int]
    local: Mapping[str, str]  # service -> "BIND_ADDRESS:port" here
    started: float = 0.0  # the process's start time: a pid reused by another ssh is not ours

    def describe(self, settings: Settings) -> str:
        pairs = ", ".join(
            f"{service} {settings.connect_host}:{settings.port(service)} -> {port}"
            for service, port in sorted(self.ports.items())
        )
        return f"ssh forwarding (pid {self.pid}): {pairs} on the engine's loopback"


def _paths(settings: Settings) -> tuple[Path, Path]:
    logs = settings.state_dir / "logs"
    return settings.state_dir / STATE_FILE, logs / LOG_FILE


def current(settings: Settings) -> Forwarding | None:
    """The forwarding of this stack when its process runs, else None (a stale file is ignored)."""
    state, _ = _paths(settings)
    try:
        data = json.loads(state.read_text())
        found = Forwarding(
            int(data["pid"]),
            str(data["host"]),
            {str(k): int(v) for k, v in dict(data["ports"]).items()},
            {str(k): str(v) for k, v in dict(data["local"]).items()},
            float(data["started"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if procs.command_name(found.pid) != "ssh" or procs.started_at(found.pid) != found.started:
        return None
    if not procs.alive(found.pid):  # killed, not yet reaped: a zombie carries no port
        return None
    return found


def _local(settings: Settings, ports: Mapping[str, int]) -> dict[str, str]:
    address = _bracketed(settings.bind_address)
    return {service: f"{address}:{settings.port(service)}" for service in sorted(ports)}


def ensure(settings: Settings, point: Endpoint, ports: Mapping[str, int]) -> Forwarding:
    """A forwarding of exactly `ports` to `point`'s host: the running one when it carries
    them, else a new one (the old one stopped first)."""
    running = current(settings)
    local = _local(settings, ports)
    wanted = (point.host, dict(ports), local)
    if running is not None and (running.host, dict(running.ports), dict(running.local)) == wanted:
        return running
    stop(settings)
    # Ports that this stack's forwarding no longer holds must be free: else the probes below
    # could reach whoever holds them before ssh gives up on its forward.
    net.ensure_free(settings, list(ports))
    state, log = _paths(settings)
    log.parent.mkdir(parents=True, exist_ok=True)
    forwards: list[str] = []
    for service, port in sorted(ports.items()):
        forwards += ["-L", f"{local[service]}:127.0.0.1:{port}"]
    options = (
        "-N",  # no remote command: only the forwards
        "-T",
        "-o", "BatchMode=yes",
        "-o", "ExitOnForwardFailure=yes",  # a local port in use is a failure, not a warning
        "-o", "ServerAliveInterval=15",
        "-o", "ServerAliveCountMax=3",
        *forwards,
    )  # fmt: skip
    process = run.spawn(point.ssh_argv(options=options), log)
    state.parent.mkdir(parents=True, exist_ok=True)
    forwarding = Forwarding(
        process.pid, point.host, dict(ports), local, procs.started_at(process.pid) or 0.0
    )
    write_atomic(state, json.dumps(dataclasses.asdict(forwarding)), durable=False)
    _wait_ready(settings, forwarding, process, log)
    return forwarding


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _wait_ready(
    settings: Settings, forwarding: Forwarding, process: run.Process, log: Path
) -> None:
    """Until every forwarded port accepts connections here; ssh exiting is a StackError."""

    def ready() -> bool | None:
        if process.poll() is not None:
            return False
        ports = [settings.port(s) for s in forwarding.ports]
        if not all(_accepts(settings.connect_host, port) for port in ports):
            return None
        # Listening, and by this ssh: nobody else answers in its place.
        return all(process.pid in {o.pid for o in net.listeners(port)} for port in ports) or None

    if not wait.until(ready, timeout=START_TIMEOUT, interval=0.05):
        said = run.last_line("\n".join(procs.tail(log, 5)), "no output")
        stop(settings)
        raise StackError(
            f"The SSH forwarding of the stack's ports to the Docker engine's host failed "
            f"({said}): free the ports named there, or see {log}."
        )


def _accepts(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def stop(settings: Settings) -> bool:
    """Stop this stack's forwarding if it runs; True when there was one."""
    state, _ = _paths(settings)
    running = current(settings)
    if running is not None:  # first the process, then its record: a kill between leaves both
        procs.stop(running.pid, signal.SIGTERM, STOP_TIMEOUT, signal.SIGKILL)
    with contextlib.suppress(OSError):
        state.unlink()
    return running is not None
