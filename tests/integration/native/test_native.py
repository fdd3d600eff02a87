"""Facts of the native backend: unprivileged servers, first-init atomicity, unreachable dirs.

Some tests run a second, throwaway stack from a copy of the project (own ports, env file and
state dir) so they can break init scripts or directory permissions without touching the
suite's stack.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.backends.native import NativeBackend
from scripts.infra import procs
from scripts.settings import Settings
from tests.integration.helpers import ROOT, Inv
from tests.support.net import free_ports

COPIED = ("tasks.py", "scripts", "docker", ".env.example", "pyproject.toml")
# invoke, and psycopg for the migrations `inv init` applies (with its compiled libpq).
SITE_PACKAGES = (
    "invoke",
    "invoke-*.dist-info",
    "psutil",
    "psutil-*.dist-info",
    "psycopg",
    "psycopg-*.dist-info",
    "psycopg_binary*",
    "typing_extensions*",
)


@dataclass
class Throwaway:
    """A copy of the project with its own env file, ports and state dir."""

    root: Path
    env: dict[str, str]
    python: str
    run_as: list[str]  # setpriv prefix, or [] to run as the current user

    def inv(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.run_as, self.python, "-m", "invoke", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    @property
    def state(self) -> Path:
        return self.root / ".stack"


def _make_copy(parent: Path, *, site: bool) -> Path:
    root = parent / "project"
    root.mkdir()
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / name)
    if site:  # what `inv init` imports, for an account that cannot read our virtualenv
        import invoke

        packages = Path(invoke.__file__).parent.parent
        for pattern in SITE_PACKAGES:
            for found in packages.glob(pattern):
                if found.is_dir():
                    shutil.copytree(found, root / "site" / found.name)
                else:
                    shutil.copy2(found, root / "site" / found.name)
    return root


def _env(root: Path, extra: dict[str, str]) -> dict[str, str]:
    postgres, redis_port, adminer = free_ports(3)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(root),
        "STACK_ENV_FILE": str(root / "stack.env"),
        "STACK_STATE_DIR": str(root / ".stack"),
        "STACK_BACKEND": "native",
        "COMPOSE_PROJECT_NAME": "aim_throwaway",
        "POSTGRES_PORT": str(postgres),
        "REDIS_PORT": str(redis_port),
        "ADMINER_PORT": str(adminer),
        **extra,
    }


@pytest.fixture
def throwaway() -> Iterator[Throwaway]:
    """A second stack run by root (when we are root) from a copy of the project."""
    parent = Path(tempfile.mkdtemp(prefix="aim-copy-"))
    root = _make_copy(parent, site=False)
    copy = Throwaway(root, _env(root, {}), sys.executable, [])
    try:
        yield copy
    finally:
        copy.inv("reset", "--yes", "--no-backup")
        shutil.rmtree(parent, ignore_errors=True)


def test_servers_run_unprivileged_when_started_by_root(running: Settings) -> None:
    pid = NativeBackend(running).states()["postgres"].detail.removeprefix("pid ")
    owner = Path(f"/proc/{pid}").stat().st_uid
    if os.geteuid() == 0:
        assert owner != 0, "PostgreSQL must not run as root"
        assert pwd.getpwuid(owner).pw_name in ("postgres", "nobody")
    else:
        assert owner == os.geteuid()


def test_a_failing_init_script_leaves_nothing_half_initialised(throwaway: Throwaway) -> None:
    broken = throwaway.root / "docker/init-scripts/03-broken.sql"
    broken.write_text("SELECT * FROM table_that_does_not_exist;\n")

    result = throwaway.inv("init")
    assert result.returncode == 1
    assert "03-broken.sql" in result.stderr
    assert "table_that_does_not_exist" in result.stderr
    assert "Traceback" not in result.stderr
    pg_data = NativeBackend(_settings(throwaway)).pg_data
    assert not (pg_data / "PG_VERSION").exists()
    assert not pg_data.with_name(pg_data.name + ".initialising").exists()
    port = int(throwaway.env["POSTGRES_PORT"])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the failed init left a server"

    broken.unlink()
    result = throwaway.inv("up-core")
    assert result.returncode == 0, result.stdout + result.stderr
    shell = throwaway.inv("db.shell", "-c", "SELECT count(*) FROM users")
    assert " 9\n" in shell.stdout, shell.stdout + shell.stderr


def test_a_postgres_that_cannot_start_is_named_and_nothing_is_left_running(
    throwaway: Throwaway,
) -> None:
    """pg_ctl hands the server over without waiting; a server that then refuses its settings
    is still reported with its own words, and what this start began is stopped again."""
    assert throwaway.inv("init").returncode == 0
    assert throwaway.inv("down").returncode == 0
    conf = NativeBackend(_settings(throwaway)).pg_data / "postgresql.auto.conf"
    kept = conf.read_text()
    conf.write_text(kept + "shared_buffers = 'plenty'\n")

    result = throwaway.inv("up-core")
    assert result.returncode == 1
    assert "postgres exited" in result.stderr, result.stderr
    assert "postgresql.auto.conf" in result.stderr and "contains errors" in result.stderr
    assert 'invalid value for parameter "shared_buffers": "plenty"' in result.stderr
    assert "Stopped again: redis" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    for port in (throwaway.env["POSTGRES_PORT"], throwaway.env["REDIS_PORT"]):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", int(port))) != 0, f"{port} still answers"

    conf.write_text(kept)
    result = throwaway.inv("up-core")
    assert result.returncode == 0, result.stdout + result.stderr
    shell = throwaway.inv("db.shell", "-c", "SELECT count(*) FROM users")
    assert " 9\n" in shell.stdout, shell.stdout + shell.stderr


def test_a_state_dir_the_server_account_cannot_enter_still_works(throwaway: Throwaway) -> None:
    """As root, a checkout under a 0700 directory (like /root) is unreachable for the
    server's account: the data dir then lives in the server home under /var/lib."""
    throwaway.root.parent.chmod(0o700)
    result = throwaway.inv("init")
    assert result.returncode == 0, result.stdout + result.stderr
    data = NativeBackend(_settings(throwaway)).pg_data
    if os.geteuid() == 0:
        assert data.is_relative_to("/var/lib/ai-marketplace-stack")
        assert str(data.parent) in result.stdout  # the banner names where the data is
    else:
        assert data == throwaway.state / "postgres_data"
    assert (data / "PG_VERSION").exists()

    assert throwaway.inv("reset", "--yes", "--no-backup").returncode == 0
    assert not data.exists(), "reset must delete the relocated data dir too"
    if os.geteuid() == 0:
        assert not data.parent.exists(), "and the server home with it"


def test_the_stack_runs_as_a_normal_user() -> None:
    """Everything the native backend does also works without root."""
    # Not under TMPDIR: nox points that into the checkout, which may sit in a 0700 directory.
    parent = Path(tempfile.mkdtemp(prefix="aim-user-", dir="/tmp"))
    parent.chmod(0o755)
    root = _make_copy(parent, site=True)
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        for path in [root, *root.rglob("*")]:
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        prefix = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}"]
        prefix += ["--clear-groups", "--"]
        python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    else:
        prefix, python = [], sys.executable
    env = _env(root, {"PYTHONPATH": str(root / "site"), "XDG_CACHE_HOME": str(root / "cache")})
    user = Throwaway(root, env, python, prefix)
    try:
        result = user.inv("init")
        assert result.returncode == 0, result.stdout + result.stderr
        assert user.inv("health").returncode == 0
        postmaster = procs.read_pid(user.state / "postgres_data" / "postmaster.pid")
        assert postmaster is not None
        expected_uid = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else os.geteuid()
        assert Path(f"/proc/{postmaster}").stat().st_uid == expected_uid
        assert (user.state / "postgres_data").stat().st_uid == expected_uid
        assert user.inv("down").returncode == 0
    finally:
        user.inv("reset", "--yes", "--no-backup")
        shutil.rmtree(parent, ignore_errors=True)


def test_logs_and_pid_files_hold_no_secret(running: Settings, inv: Inv) -> None:
    assert inv("up").returncode == 0
    backend = NativeBackend(running)
    secrets = [running.postgres_password.reveal(), running.redis_password.reveal()]
    files = [*backend.layout.logs.glob("*"), *backend.layout.run.glob("*")]
    assert files
    for path in files:
        text = path.read_text(errors="replace")
        assert all(secret not in text for secret in secrets), path
    # Redis gets its configuration, password included, on stdin: no file holds it.
    assert not (running.state_dir / "redis.conf").exists()
    assert inv("down").returncode == 0


def _settings(copy: Throwaway) -> Settings:
    from scripts.settings import load

    return load(copy.env)


def test_the_urls_work_with_the_stock_command_line_clients(running: Settings) -> None:
    """What the application (and a developer) does with .env: psql and redis-cli -u."""
    psql = subprocess.run(
        ["psql", running.database_url.reveal(), "-Atc", "SELECT count(*) FROM ai_agents"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    assert psql.returncode == 0, psql.stderr
    assert int(psql.stdout) >= 10
    cli = subprocess.run(
        ["redis-cli", "-u", running.redis_url.reveal(), "--no-auth-warning", "PING"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cli.stdout.strip() == "PONG", cli.stdout + cli.stderr


def test_a_port_answering_for_another_stack_is_refused_before_any_change(
    running: Settings, inv: Inv
) -> None:
    """A second checkout with a copied .env: this checkout's servers are stopped and another
    program answers on POSTGRES_PORT (here a listening socket stands in for the other
    checkout's PostgreSQL). Changing tasks refuse in one sentence instead of acting on that
    server's data; this checkout's own data is untouched and starts again afterwards."""
    stopped = inv("down")
    assert stopped.returncode == 0, stopped.stderr
    port = running.postgres_port
    try:
        with socket.socket() as other:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            other.bind((running.bind_address, port))
            other.listen()
            for command in (("db.snapshot", "elsewhere"), ("db.reset",), ("reset", "--yes")):
                refused = inv(*command)
                output = refused.stdout + refused.stderr
                assert refused.returncode == 1, (command, output)
                assert "Traceback" not in output, output
                assert f"Nothing was changed: port {port} (postgres)" in refused.stderr, output
                assert "which is not part of this stack" in refused.stderr
    finally:
        started = inv("up-core")
    assert started.returncode == 0, started.stdout + started.stderr
    listed = inv("db.snapshots", "--json")
    assert listed.returncode == 0 and '"elsewhere"' not in listed.stdout, listed.stdout
