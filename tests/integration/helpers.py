"""Helpers for the integration suite: run `inv` as a user does, reach the stack, inspect it,
clone the checkout as a user would, and run a PostgreSQL that is not the stack's."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from scripts.backends import get_backend
from scripts.backends.base import CORE
from scripts.ops.stack import health
from scripts.settings import Settings

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


def ctrl_c_as_in_a_terminal() -> None:
    """preexec_fn for a child that a test ends with SIGINT: SIGINT raises KeyboardInterrupt,
    as in a terminal, even when this run was started in the background by a shell without
    job control, which makes its children ignore SIGINT (and Python keeps it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
    """Every local address with a listening TCP socket on `port`."""
    from scripts.infra.net import listening_on

    return listening_on(port)


def table_counts(conn: psycopg.Connection[tuple[Any, ...]]) -> dict[str, int]:
    counts = {}
    for table in ("users", "ai_agents", "reviews", "transactions"):
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608 - fixed names
        assert row is not None
        counts[table] = int(row[0])
    return counts


# --- checkouts as users make them -----------------------------------------------------------


def clone_checkout(dest: Path) -> Path:
    """A copy of this checkout's files as a fresh clone has them (tracked, and new files not
    ignored by git; no .env, .venv, state or backups), at `dest`."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


@dataclass
class Checkout:
    """A clone of the project used the way a user uses one: its own .env, edited by hand,
    `inv` run in its directory with no test settings in the environment."""

    root: Path

    @classmethod
    def clone(cls, dest: Path) -> Checkout:
        return cls(clone_checkout(dest))

    @property
    def env_file(self) -> Path:
        return self.root / ".env"

    def environ(self) -> dict[str, str]:
        """A user's shell: no STACK_* or stack setting of the test run leaks in."""
        keep = ("PATH", "HOME", "LANG", "DOCKER_HOST", "DOCKER_CONFIG", "XDG_CACHE_HOME")
        return {key: os.environ[key] for key in keep if key in os.environ}

    def inv(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "invoke", *args],
            cwd=self.root,
            env=self.environ(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def edit_env(self, **values: str) -> None:
        """Change KEY=value lines in .env as a text editor does (no quoting, comments kept)."""
        lines = self.env_file.read_text(encoding="utf-8").splitlines()
        for key, value in values.items():
            at = [i for i, line in enumerate(lines) if line.startswith(f"{key}=")]
            assert at, f"{key} is not in {self.env_file}"
            lines[at[0]] = f"{key}={value}"
        self.env_file.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def env_values(self) -> dict[str, str]:
        """.env as the application reads it: with python-dotenv."""
        from dotenv import dotenv_values

        return {k: v or "" for k, v in dotenv_values(self.env_file).items()}


# --- a PostgreSQL that is not the stack's ------------------------------------------------------


@dataclass
class OtherPostgres:
    port: int
    user: str
    password: str
    data: Path

    def conninfo(self, dbname: str = "postgres") -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=dbname,
            connect_timeout=10,
        )


@contextlib.contextmanager
def other_postgres(port: int, user: str, password: str, database: str) -> Iterator[OtherPostgres]:
    """Another project's PostgreSQL 15 on 127.0.0.1:`port`, with `database` holding a few
    tables of rows, started with pg_ctl (as the postgres account when we are root)."""
    from scripts.infra import prerequisites, procs
    from scripts.infra import run as runner

    bindir = prerequisites.postgres_bindir()
    assert bindir is not None, "PostgreSQL 15 binaries are missing: run `inv setup`"
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            pytest.fail(
                f"Port {port} on 127.0.0.1 is in use: this test starts another PostgreSQL "
                "there, as on a machine where one runs already; stop what listens on it.",
                pytrace=False,
            )
    run_as = procs.RunAs.for_server()
    # In /tmp, not TMPDIR: nox points that into the checkout, which may sit in a private dir.
    parent = Path(tempfile.mkdtemp(prefix="aim-other-pg-", dir="/tmp"))
    if run_as is not None:
        run_as.chown(parent)
    data = parent / "data"
    pwfile = parent / "pw"
    pwfile.write_text(password + "\n")
    if run_as is not None:
        run_as.chown(pwfile)

    def run(*argv: str) -> None:
        result = runner.run(list(argv), run_as=run_as)
        assert result.returncode == 0, result.stdout + result.stderr

    try:
        run(
            str(bindir / "initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}",
            "--auth=scram-sha-256", "--locale=C.UTF-8", "--no-instructions",
        )  # fmt: skip
        options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={parent}"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(parent / "log"),
            "-w", "start")  # fmt: skip
        other = OtherPostgres(port, user, password, data)
        with psycopg.connect(other.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        with psycopg.connect(other.conninfo(database), autocommit=True) as conn:
            conn.execute("CREATE TABLE users (id int PRIMARY KEY, email text)")
            conn.execute("INSERT INTO users SELECT i, 'other' || i FROM generate_series(1, 50) i")
            conn.execute("CREATE TABLE precious (note text)")
            conn.execute("INSERT INTO precious VALUES ('another project''s data')")
        yield other
    finally:
        runner.run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                      run_as=run_as)  # fmt: skip
        shutil.rmtree(parent, ignore_errors=True)


def fingerprint(conninfo: str) -> dict[str, dict[str, str]]:
    """Every database of a server, each with the md5 of every table's rows (in row order):
    equal fingerprints mean nothing was created, dropped or changed."""
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    with psycopg.connect(conninfo, autocommit=True) as conn:
        names = [
            str(r[0])
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname"
            ).fetchall()
        ]
    found: dict[str, dict[str, str]] = {}
    for name in names:
        with psycopg.connect(make_conninfo(conninfo, dbname=name)) as conn:
            tables = conn.execute(
                "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN "
                "('pg_catalog', 'information_schema') ORDER BY 1, 2"
            ).fetchall()
            found[name] = {}
            for schema, table in tables:
                query = sql.SQL(
                    "SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') "
                    "FROM {} AS t"
                ).format(sql.Identifier(schema, table))
                row = conn.execute(query).fetchone()
                found[name][f"{schema}.{table}"] = str(row[0] if row else "")
    return found
