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
import json
import signal
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.errors import StackError
from scripts.files import write_atomic
from scripts.infra import procs, run, wait

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
        found = Forwarding(int(data["pid"]), str(data["host"]),
                           {str(k): int(v) for k, v in dict(data["ports"]).items()})  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not procs.alive(found.pid) or procs.command_name(found.pid) != "ssh":
        return None
    return found


def ensure(settings: Settings, point: Endpoint, ports: Mapping[str, int]) -> Forwarding:
    """A forwarding of exactly `ports` to `point`'s host: the running one when it carries
    them, else a new one (the old one stopped first)."""
    running = current(settings)
    if running is not None and running.host == point.host and dict(running.ports) == dict(ports):
        return running
    stop(settings)
    state, log = _paths(settings)
    log.parent.mkdir(parents=True, exist_ok=True)
    forwards: list[str] = []
    for service, port in sorted(ports.items()):
        local = f"{_bracketed(settings.bind_address)}:{settings.port(service)}"
        forwards += ["-L", f"{local}:127.0.0.1:{port}"]
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
    payload = {"pid": process.pid, "host": point.host, "ports": dict(ports)}
    write_atomic(state, json.dumps(payload), durable=False)
    forwarding = Forwarding(process.pid, point.host, dict(ports))
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
        return (
            all(_accepts(settings.connect_host, settings.port(s)) for s in forwarding.ports) or None
        )

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
    with contextlib.suppress(OSError):
        state.unlink()
    if running is None:
        return False
    procs.stop(running.pid, signal.SIGTERM, STOP_TIMEOUT, signal.SIGKILL)
    return True
