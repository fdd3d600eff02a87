"""Helpers for the integration suite: run `inv` as a user does, reach the stack, inspect it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from scripts.backends import CORE, get_backend
from scripts.settings import Settings
from scripts.stack import health

ROOT = Path(__file__).resolve().parents[2]
Inv = Callable[..., subprocess.CompletedProcess[str]]


def run_inv(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `inv ARGS` as a user would, from the repository root, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def core_healthy(stack: Settings) -> bool:
    results = health(stack)
    return all((result := results[s]) is not None and result.ok for s in CORE)


def ensure_up(stack: Settings) -> None:
    """Bring postgres and redis up unless both already answer (probing is cheap)."""
    if not core_healthy(stack):
        result = run_inv("up-core")
        assert result.returncode == 0, result.stdout + result.stderr


def connect(stack: Settings) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(stack.database_url.reveal(), autocommit=True, connect_timeout=10)


def kill_service(stack: Settings, service: str) -> None:
    """SIGKILL the service's server the hard way: no shutdown, no cleanup of pid files."""
    backend = get_backend(stack)
    if backend.name == "compose":
        from scripts.backends.compose import ComposeBackend

        container = ComposeBackend(stack).container(service)
        subprocess.run(["docker", "kill", "--signal", "KILL", container], check=True)
        return
    detail = backend.states()[service].detail  # "pid 1234"
    assert detail.startswith("pid "), f"{service} is not running: {detail!r}"
    os.kill(int(detail.removeprefix("pid ")), signal.SIGKILL)


def listening_addresses(port: int) -> set[str]:
    """Every local address with a listening TCP socket on `port`, from /proc/net/tcp{,6}."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) == port:
                raw = bytes.fromhex(address)
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(socket.inet_ntop(family, words))
    return found


def table_counts(conn: psycopg.Connection[tuple[Any, ...]]) -> dict[str, int]:
    counts = {}
    for table in ("users", "ai_agents", "reviews", "transactions"):
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608 - fixed names
        assert row is not None
        counts[table] = int(row[0])
    return counts
