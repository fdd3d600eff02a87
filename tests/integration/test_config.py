"""One source of truth for where the stack is: the env file as users write it by hand.

The tasks reach the stack from its settings (POSTGRES_*, REDIS_*, BIND_ADDRESS) only;
DATABASE_URL and REDIS_URL are the application's, written true into .env. Runs on either
backend: clones of the checkout, another PostgreSQL, and a second stack are made here.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from scripts import envfile
from scripts.envfile import PLACEHOLDER_PASSWORD
from scripts.settings import Settings
from tests.integration.helpers import (
    Checkout,
    Inv,
    connect,
    ensure_up,
    fingerprint,
    other_postgres,
)
from tests.support.net import free_ports

CHANGING_TASKS = (
    ("up-core",),
    ("up",),
    ("init", "--yes"),
    ("db.migrate",),
    ("db.seed",),
    ("db.restore", "--latest", "--yes"),
    ("reset", "--yes"),
)


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def _postmaster_start(checkout: Checkout) -> str:
    result = checkout.inv("db.shell", "-c", "SELECT pg_postmaster_start_time()", "--", "-tA")
    _ok(result)
    return result.stdout.strip().splitlines()[-1]


def _redis_run_id(checkout: Checkout) -> str:
    result = checkout.inv("redis.cli", "-c", "INFO server")
    _ok(result)
    found = re.search(r"^run_id:(\w+)", result.stdout, re.M)
    assert found, result.stdout
    return found[1]


@pytest.fixture
def clone(tmp_path_factory: pytest.TempPathFactory, stack: Settings) -> Iterator[Checkout]:
    """A fresh clone of this checkout, on the suite's backend; its stack reset afterwards."""
    checkout = Checkout.clone(tmp_path_factory.mktemp("clone") / "ai-marketplace")
    try:
        yield checkout
    finally:
        if checkout.env_file.exists():
            checkout.inv("reset", "--yes", "--no-backup")


def test_a_hand_copied_env_file_sends_no_task_and_no_client_to_another_server(
    stack: Settings, clone: Checkout
) -> None:
    """The naive path: `cp .env.example .env`, new ports, `inv init --yes`, with another
    PostgreSQL on 5432 that accepts the template's login. Nothing of it may change."""
    with other_postgres(5432, "marketplace", PLACEHOLDER_PASSWORD, "ai_marketplace") as other:
        before = fingerprint(other.conninfo())
        (clone.root / ".env").write_bytes((clone.root / ".env.example").read_bytes())
        (clone.root / ".env").chmod(0o644)  # what cp gives under the usual umask
        postgres_port, redis_port, adminer_port = free_ports(3)
        clone.edit_env(
            POSTGRES_PORT=str(postgres_port),
            REDIS_PORT=str(redis_port),
            ADMINER_PORT=str(adminer_port),
            # The suite's backend, and a project name no other stack on this engine uses.
            STACK_BACKEND=stack.backend,
            COMPOSE_PROJECT_NAME=f"aim_clone_{uuid.uuid4().hex[:8]}",
        )

        init = clone.inv("init", "--yes")
        _ok(init)
        assert (
            "Finished .env: generated POSTGRES_PASSWORD, REDIS_PASSWORD and "
            "POSTGRES_ADMIN_PASSWORD" in init.stdout
        )
        assert stat.S_IMODE(clone.env_file.stat().st_mode) == 0o600
        values = clone.env_values()
        for key in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "POSTGRES_ADMIN_PASSWORD"):
            assert values[key] != PLACEHOLDER_PASSWORD and len(values[key]) >= 24
            assert values[key] not in init.stdout + init.stderr

        # Stock clients, with the URLs as the application reads them, reach this stack.
        with psycopg.connect(values["DATABASE_URL"], connect_timeout=10) as conn:
            row = conn.execute("SELECT pg_postmaster_start_time()::text, count(*) FROM users")
            started, users = row.fetchone() or ("", 0)
            if stack.backend == "native":  # in a container, the server's own port is 5432
                assert conn.execute("SELECT inet_server_port()").fetchone() == (postgres_port,)
        assert users == 9
        assert started == _postmaster_start(clone)
        client = redis.Redis.from_url(values["REDIS_URL"], socket_timeout=10)
        try:
            info = client.info("server")
        finally:
            client.close()
        assert info["run_id"] == _redis_run_id(clone)
        if stack.backend == "native":
            assert info["tcp_port"] == redis_port

        for task in (
            ("db.migrate",),
            ("db.migrate", "--status"),
            ("db.seed",),
            ("db.backup",),
            ("db.restore", "--latest", "--yes"),
            ("reset", "--yes"),
        ):
            _ok(clone.inv(*task))
        assert fingerprint(other.conninfo()) == before


@pytest.fixture
def other_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Checkout]:
    """A second, live, isolated stack (native backend) from a clone of the checkout."""
    checkout = Checkout.clone(tmp_path_factory.mktemp("other") / "ai-marketplace")
    (clone_env := checkout.root / ".env").write_bytes((checkout.root / ".env.example").read_bytes())
    clone_env.chmod(0o600)
    postgres_port, redis_port, adminer_port = free_ports(3)
    checkout.edit_env(
        STACK_BACKEND="native",
        POSTGRES_PORT=str(postgres_port),
        REDIS_PORT=str(redis_port),
        ADMINER_PORT=str(adminer_port),
    )
    try:
        _ok(checkout.inv("init", "--yes"))
        yield checkout
    finally:
        checkout.inv("reset", "--yes", "--no-backup")


def _copy_env(stack: Settings, tmp_path: Path, **changes: str) -> dict[str, str]:
    """The suite's env file copied (same stack), with `changes`: the environment to run
    `inv` with it."""
    copy = tmp_path / "stack.env"
    copy.write_bytes(stack.env_file.read_bytes())
    copy.chmod(0o600)
    envfile.update(copy, changes)
    return {"STACK_ENV_FILE": str(copy)}


def test_a_database_url_of_another_stack_refuses_every_changing_task(
    stack: Settings, inv: Inv, other_stack: Checkout, tmp_path: Path
) -> None:
    other_url = other_stack.env_values()["DATABASE_URL"]
    before = fingerprint(other_url)
    ensure_up(stack)
    env = _copy_env(stack, tmp_path, DATABASE_URL=other_url)

    for task in CHANGING_TASKS:
        result = inv(*task, env=env)
        assert result.returncode == 1, (task, result.stdout + result.stderr)
        assert "Traceback" not in result.stdout + result.stderr
        refusal = result.stderr.strip().splitlines()[-1]
        assert refusal.startswith("✘ DATABASE_URL in "), (task, refusal)
        assert "in its port (the stack's: " in refusal and "password" in refusal, refusal
        assert "Nothing was changed." in refusal
        assert other_url.split("@")[0] not in result.stdout + result.stderr  # no password

    reading = inv("status", env=env)  # a read-only task warns in one line, and goes on
    _ok(reading)
    assert [line for line in reading.stderr.splitlines() if "DATABASE_URL" in line] != []
    assert fingerprint(other_url) == before


def test_empty_urls_are_written_back_by_any_task(stack: Settings, inv: Inv, tmp_path: Path) -> None:
    env = _copy_env(stack, tmp_path, DATABASE_URL="", REDIS_URL="")
    result = inv("status", env=env)
    _ok(result)
    assert "Wrote DATABASE_URL and REDIS_URL into" in result.stderr
    written = envfile.parse_values(Path(env["STACK_ENV_FILE"]).read_text(encoding="utf-8"))
    assert written["DATABASE_URL"] == stack.database_url.reveal()
    assert written["REDIS_URL"] == stack.redis_url.reveal()


def test_env_prints_the_applications_environment(stack: Settings, inv: Inv) -> None:
    ensure_up(stack)
    shown = inv("env", "--format", "json", "--show-secrets")
    _ok(shown)
    values = json.loads(shown.stdout)
    with psycopg.connect(values["DATABASE_URL"], connect_timeout=10) as conn:
        assert conn.execute("SELECT count(*) > 0 FROM users").fetchone() == (True,)
    client = redis.Redis.from_url(values["REDIS_URL"], socket_timeout=10)
    try:
        assert client.ping()
    finally:
        client.close()
    assert values["ADMINER_URL"] == stack.adminer_url
    for fmt in ("json", "dotenv", "shell"):
        masked = inv("env", "--format", fmt)
        _ok(masked)
        for secret in (stack.postgres_password.reveal(), stack.redis_password.reveal()):
            assert secret not in masked.stdout + masked.stderr
    bad = inv("env", "--format", "yaml")
    assert bad.returncode == 2 and "use dotenv, shell or json" in bad.stderr


def test_the_banner_names_settings_the_environment_changes(
    stack: Settings, inv: Inv, tmp_path: Path
) -> None:
    result = inv("health", env={"BACKUP_DIR": str(tmp_path)})
    _ok(result)
    banner = [line for line in result.stdout.splitlines() if "From the environment" in line]
    assert len(banner) == 1, result.stdout
    assert f"BACKUP_DIR={tmp_path} (file: " in banner[0]
    quiet = inv("health")
    assert "From the environment" not in quiet.stdout


def test_an_env_file_readable_by_others_is_warned_about(
    stack: Settings, inv: Inv, tmp_path: Path
) -> None:
    env = _copy_env(stack, tmp_path)
    Path(env["STACK_ENV_FILE"]).chmod(0o644)
    result = inv("health", env=env)
    assert "is readable by other users (mode 0644): run `chmod 600 " in result.stderr


@pytest.mark.destructive
def test_passwords_changed_in_the_env_file_are_applied_by_up_core(
    running: Settings, inv: Inv
) -> None:
    """The first password lives in the data (PostgreSQL) or the config (Redis): after both
    are changed in .env, `inv up-core` makes them work, and the old ones no longer do."""
    old = {
        "POSTGRES_PASSWORD": running.postgres_password.reveal(),
        "REDIS_PASSWORD": running.redis_password.reveal(),
    }
    new = {key: f"Changed-{uuid.uuid4().hex}" for key in old}
    urls = {"DATABASE_URL": running.database_url.reveal(), "REDIS_URL": running.redis_url.reveal()}
    try:
        envfile.update(running.env_file, {**new, "DATABASE_URL": "", "REDIS_URL": ""})
        began = time.monotonic()
        result = inv("up-core")
        _ok(result)
        assert time.monotonic() - began < 60
        for service in ("postgres", "redis"):
            assert f"{service}: password changed to the one in the env file" in result.stdout
        values = envfile.parse_values(running.env_file.read_text(encoding="utf-8"))
        with psycopg.connect(values["DATABASE_URL"], connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(urls["DATABASE_URL"], connect_timeout=10).close()
        client = redis.Redis.from_url(values["REDIS_URL"], socket_timeout=10)
        assert client.ping()
        client.close()
        stale = redis.Redis.from_url(urls["REDIS_URL"], socket_timeout=10)
        with pytest.raises(redis.AuthenticationError):
            stale.ping()
        stale.close()
        _ok(inv("health"))
    finally:  # the suite's stack gets its own passwords back, applied the same way
        envfile.update(running.env_file, {**old, **urls})
        restored = inv("up-core")
        assert restored.returncode == 0, restored.stdout + restored.stderr
    with connect(running) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_an_admin_password_changed_in_the_env_file_is_applied_by_up_core(
    running: Settings, inv: Inv
) -> None:
    """Only POSTGRES_ADMIN_PASSWORD changed: the application's login still works, so only
    the admin's check finds it, and `inv up-core` applies it."""
    old = running.postgres_admin_password.reveal()
    new = f"Changed-Admin-{uuid.uuid4().hex}"

    def admin_login(password: str) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=running.connect_host,
            port=running.postgres_port,
            user=running.postgres_admin_user,
            password=password,
            dbname="postgres",
            connect_timeout=10,
        )

    try:
        envfile.update(running.env_file, {"POSTGRES_ADMIN_PASSWORD": new})
        result = inv("up-core")
        _ok(result)
        assert "the admin's password changed to the one in the env file" in result.stdout
        with admin_login(new) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            admin_login(old).close()
        again = inv("up-core")
        _ok(again)
        assert "password changed" not in again.stdout, again.stdout
    finally:
        envfile.update(running.env_file, {"POSTGRES_ADMIN_PASSWORD": old})
        restored = inv("up-core")
        assert restored.returncode == 0, restored.stdout + restored.stderr
    with admin_login(old) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
