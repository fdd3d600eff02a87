"""One isolated stack under benchmark: its settings, `inv` as a user runs it, and raw clients.

The raw clients are the host's PostgreSQL 15 binaries and redis-cli, password in the environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scripts.backends.compose import COMPOSE_FILE
from scripts.infra import prerequisites
from scripts.settings import DEFAULTS, Settings, load
from tests.bench.timing import PYTHON, ROOT, BenchError, python_env, run

# Ports and names of a developer's own stack: the benchmark never touches them.
RESERVED_PORTS = (5432, 6379, 8080)
DEFAULT_PROJECT = "ai_marketplace"


def pg_bindir() -> Path:
    bindir = prerequisites.postgres_bindir()
    if bindir is None:
        raise BenchError("PostgreSQL 15's binaries were not found: run `inv setup` first.")
    return bindir


def redis_cli_path() -> str:
    found = shutil.which("redis-cli")
    if found is None:
        raise BenchError("redis-cli was not found: run `inv setup` first.")
    return found


@dataclass(frozen=True)
class PgClient:
    """Host PostgreSQL tools against one server over TCP, the password in the environment."""

    bindir: Path
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str

    def argv(self, tool: str, *args: str) -> list[str]:
        return [
            str(self.bindir / tool),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            self.user,
            *args,
        ]

    def psql_argv(self, *args: str, database: str | None = None) -> list[str]:
        db = database or self.database
        return self.argv("psql", "-X", "-v", "ON_ERROR_STOP=1", "-q", "-d", db, *args)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSWORD"] = self.password
        env["PGCONNECT_TIMEOUT"] = "5"
        return env

    def query(self, sql: str, *, database: str | None = None, check: bool = True) -> str:
        return run(
            self.psql_argv("-Atc", sql, database=database), env=self.env(), check=check
        ).stdout.strip()

    def answers(self) -> bool:
        """One `psql -c 'SELECT 1'` succeeded."""
        return self.query("SELECT 1", check=False) == "1"


@dataclass(frozen=True)
class RedisClient:
    """redis-cli against one server, the password in REDISCLI_AUTH (never on a command line)."""

    cli: str
    host: str
    port: int
    password: str = field(repr=False)

    def argv(self, *args: str) -> list[str]:
        return [self.cli, "-h", self.host, "-p", str(self.port), *args]

    def env(self) -> dict[str, str]:
        return {**os.environ, "REDISCLI_AUTH": self.password}

    def call(self, *args: str, check: bool = True) -> str:
        return run(self.argv(*args), env=self.env(), check=check).stdout.strip()

    def answers(self) -> bool:
        """One `redis-cli PING` answered PONG."""
        return self.call("PING", check=False) == "PONG"


def wait_ready(pg: PgClient, redis: RedisClient, timeout: float = 120) -> None:
    """Poll with psql and redis-cli (every 10 ms) until SELECT 1 and PING both succeed."""
    deadline = time.monotonic() + timeout
    pg_ok = redis_ok = False
    while True:
        pg_ok = pg_ok or pg.answers()
        redis_ok = redis_ok or redis.answers()
        if pg_ok and redis_ok:
            return
        if time.monotonic() > deadline:
            down = [n for n, ok in (("PostgreSQL", pg_ok), ("Redis", redis_ok)) if not ok]
            raise BenchError(f"{' and '.join(down)} did not answer within {timeout:.0f} s.")
        time.sleep(0.01)


class BenchStack:
    """A stack with its own env file; refuses anything that looks like a developer's stack."""

    def __init__(self, backend: str, env_file: Path) -> None:
        self.backend = backend
        self.env_file = env_file
        self.settings: Settings = load({"STACK_ENV_FILE": str(env_file)})
        self._check_isolated()
        self.env = self.inv_env()
        self.bindir = pg_bindir()

    def inv_env(self) -> dict[str, str]:
        """A user's environment plus STACK_ENV_FILE; the env file decides everything else."""
        env = {k: v for k, v in python_env().items() if k not in DEFAULTS}
        env["STACK_ENV_FILE"] = str(self.env_file)
        return env

    def _check_isolated(self) -> None:
        s = self.settings
        problems = []
        if self.env_file.resolve() == (ROOT / ".env").resolve():
            problems.append("it is the developer's own .env")
        if s.backend != self.backend:
            problems.append(f"its STACK_BACKEND is {s.backend!r}, not {self.backend!r}")
        taken = {s.postgres_port, s.redis_port, s.adminer_port} & set(RESERVED_PORTS)
        if taken:
            problems.append(f"it uses the default port(s) {sorted(taken)}")
        if s.project == DEFAULT_PROJECT:
            problems.append(f"its project name is the default {DEFAULT_PROJECT!r}")
        for path, default in ((s.state_dir, ".stack"), (s.backup_dir, "backups")):
            if path.resolve() == (ROOT / default).resolve():
                problems.append(f"it uses the default {default}/ directory")
        if problems:
            raise BenchError(
                f"{self.env_file} is not an isolated stack ({'; '.join(problems)}): run the "
                "benchmark with `nox -s bench`, which makes one."
            )

    # --- the product, as a user runs it -----------------------------------------------------

    def inv_argv(self, *args: str) -> list[str]:
        return [PYTHON, "-m", "invoke", *args]

    def inv(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(self.inv_argv(*args), env=self.env, check=check)

    # --- raw clients ----------------------------------------------------------------------

    @property
    def pg(self) -> PgClient:
        s = self.settings
        return PgClient(
            self.bindir,
            s.connect_host,
            s.postgres_port,
            s.postgres_user,
            s.postgres_password.reveal(),
            s.postgres_db,
        )

    @property
    def admin_pg(self) -> PgClient:
        """The stack's admin role (the application's is no superuser): for CHECKPOINT."""
        s = self.settings
        return PgClient(
            self.bindir,
            s.connect_host,
            s.postgres_port,
            s.postgres_admin_user,
            s.postgres_admin_password.reveal(),
            s.postgres_db,
        )

    @property
    def redis(self) -> RedisClient:
        s = self.settings
        return RedisClient(
            redis_cli_path(), s.connect_host, s.redis_port, s.redis_password.reveal()
        )

    def database_size(self) -> int:
        return int(self.pg.query("SELECT pg_database_size(current_database())"))

    # --- raw docker compose ----------------------------------------------------------------

    def compose_argv(self, *args: str, override: Path | None = None) -> list[str]:
        files = ["-f", str(ROOT / COMPOSE_FILE)] + (
            [] if override is None else ["-f", str(override)]
        )
        return [
            "docker",
            "compose",
            "--project-directory",
            str(ROOT),
            *files,
            "--env-file",
            str(self.env_file),
            "-p",
            self.settings.project,
            *args,
        ]

    def compose(self, *args: str, override: Path | None = None) -> None:
        # Like a user's shell: the env file decides, no stack variable of this process leaks in.
        env = {k: v for k, v in os.environ.items() if k not in DEFAULTS}
        run(self.compose_argv(*args, override=override), env=env)

    def describe(self) -> dict[str, object]:
        s = self.settings
        return {
            "backend": self.backend,
            "env_file": str(self.env_file),
            "project": s.project,
            "state_dir": str(s.state_dir),
            "backup_dir": str(s.backup_dir),
            "ports": {
                "postgres": s.postgres_port,
                "redis": s.redis_port,
                "adminer": s.adminer_port,
            },
            "bind_address": s.bind_address,
        }


def tool_version(argv: Sequence[str]) -> str:
    result = run(argv, check=False)
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0] if result.returncode == 0 and lines else "?"
