"""Facts of the compose backend: containers, named volumes, the network, pg tools in the container.

Runs against the isolated compose stack of `nox -s integration -- --backend compose`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from scripts.backends.compose import ComposeBackend
from scripts.settings import Settings
from tests.integration.helpers import (
    ROOT,
    Checkout,
    Inv,
    connect,
    core_healthy,
    listening_addresses,
)
from tests.support.net import free_ports


def _docker(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _containers(stack: Settings) -> dict[str, str]:
    """Running containers of this project: name -> status."""
    out = _docker(
        "ps",
        "--filter",
        f"label=com.docker.compose.project={stack.project}",
        "--format",
        "{{.Names}}\t{{.Status}}",
    )
    return dict(line.split("\t", 1) for line in out.splitlines() if line.strip())


def _volumes(stack: Settings) -> set[str]:
    out = _docker(
        "volume", "ls", "--quiet", "--filter", f"label=com.docker.compose.project={stack.project}"
    )
    return set(out.split())


def _networks(stack: Settings) -> set[str]:
    out = _docker(
        "network", "ls", "--format", "{{.Name}}", "--filter", f"name={stack.project}_network"
    )
    return set(out.split())


def test_core_containers_run_healthy_with_the_expected_names(running: Settings) -> None:
    names = {f"{running.project}_db", f"{running.project}_redis"}
    assert set(_containers(running)) >= names
    # Docker's own healthchecks agree with our probes, after one of their intervals.
    deadline = time.monotonic() + 30
    while not all("(healthy)" in _containers(running).get(n, "") for n in names):
        assert time.monotonic() < deadline, _containers(running)
        time.sleep(0.5)


def test_named_volumes_survive_down_and_go_with_reset(running: Settings, inv: Inv) -> None:
    expected = {f"{running.project}_postgres_data", f"{running.project}_redis_data"}
    assert _volumes(running) >= expected
    assert inv("down").returncode == 0
    assert not _containers(running), "inv down left containers running"
    assert _volumes(running) >= expected, "inv down must keep the volumes"

    assert inv("reset", "--yes", "--no-backup").returncode == 0
    assert not _volumes(running) & expected, "inv reset must remove the volumes"
    assert not _networks(running), "inv reset must remove the network"
    result = inv("init")
    assert result.returncode == 0, result.stdout + result.stderr


def test_down_stops_adminer_too_and_removes_the_network(running: Settings, inv: Inv) -> None:
    result = inv("up")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{running.project}_adminer" in _containers(running)

    assert inv("down").returncode == 0
    assert not _containers(running), _containers(running)
    assert not _networks(running)
    assert not listening_addresses(running.adminer_port)


def test_logs_show_the_container_log(running: Settings, inv: Inv) -> None:
    result = inv("logs", "-s", "postgres", "--tail", "200")
    assert result.returncode == 0, result.stderr
    assert "database system is ready to accept connections" in result.stdout
    assert all(line.startswith("postgres | ") for line in result.stdout.splitlines() if line)


def test_pg_and_redis_clients_need_nothing_on_the_host(
    running: Settings, inv: Inv, tmp_path: Path
) -> None:
    """PATH holds only the docker CLI: no psql, pg_dump or redis-cli on the host."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = shutil.which("docker")
    assert docker is not None
    (bin_dir / "docker").symlink_to(docker)
    env = {"PATH": str(bin_dir)}
    assert shutil.which("psql", path=str(bin_dir)) is None

    result = inv("db.shell", "-c", "SELECT count(*) AS seeded FROM users", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "seeded" in result.stdout
    pong = inv("redis.cli", "-c", "PING", env=env)
    assert pong.returncode == 0, pong.stderr
    assert "PONG" in pong.stdout


def test_a_stopped_postgres_container_makes_health_fail(running: Settings, inv: Inv) -> None:
    _docker("stop", ComposeBackend(running).container("postgres"))
    result = inv("health")
    assert result.returncode == 1
    assert "✘ postgres" in result.stdout
    assert "Unhealthy: postgres" in result.stderr
    states = json.loads(inv("status", "--json").stdout)["services"]
    assert next(s for s in states if s["service"] == "postgres")["running"] is False


def test_the_seed_matches_the_native_backend(running: Settings) -> None:
    """The image runs the same init scripts: same tables, same seed ids."""
    with connect(running) as conn:
        rows = conn.execute("SELECT username FROM users ORDER BY username").fetchall()
    assert [r[0] for r in rows][:3] == ["admin", "alice_dev", "bob_dev"]
    assert core_healthy(running)


def test_auto_picks_compose_when_the_engine_answers(inv: Inv, tmp_path: Path) -> None:
    env_file = tmp_path / "auto.env"
    result = inv(
        "setup",
        env={"STACK_ENV_FILE": str(env_file), "STACK_BACKEND": "auto"},
    )
    assert "auto chose compose" in result.stdout, result.stdout + result.stderr
    missing_engine = inv(
        "setup",
        env={
            "STACK_ENV_FILE": str(env_file),
            "STACK_BACKEND": "auto",
            "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock",
        },
    )
    assert "auto chose native" in missing_engine.stdout, missing_engine.stdout


def _compose_clone(parent: Path, project: str) -> Checkout:
    checkout = Checkout.clone(parent / "ai-marketplace")
    checkout.env_file.write_bytes((checkout.root / ".env.example").read_bytes())
    checkout.env_file.chmod(0o600)
    postgres_port, redis_port, adminer_port = free_ports(3)
    checkout.edit_env(
        STACK_BACKEND="compose",
        COMPOSE_PROJECT_NAME=project,
        POSTGRES_PORT=str(postgres_port),
        REDIS_PORT=str(redis_port),
        ADMINER_PORT=str(adminer_port),
    )
    return checkout


def test_a_second_checkout_with_the_same_project_name_changes_nothing(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Two clones (or git worktrees) both default to one COMPOSE_PROJECT_NAME: the second
    refuses within 2 s, naming the first; the first's data stays."""
    project = f"aim_twins_{uuid.uuid4().hex[:8]}"
    first = _compose_clone(tmp_path_factory.mktemp("first"), project)
    second = _compose_clone(tmp_path_factory.mktemp("second"), project)
    try:
        result = first.inv("init", "--yes")
        assert result.returncode == 0, result.stdout + result.stderr
        url = first.env_values()["DATABASE_URL"]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE precious (note text)")
            conn.execute("INSERT INTO precious VALUES ('the first checkout''s')")
        for task in (("up-core",), ("down",), ("reset", "--yes"), ("init", "--yes")):
            began = time.monotonic()
            refused = second.inv(*task)
            seconds = time.monotonic() - began
            assert refused.returncode == 1, (task, refused.stdout + refused.stderr)
            message = refused.stderr.strip().splitlines()[-1]
            assert str(first.root) in message and "COMPOSE_PROJECT_NAME" in message, message
            assert seconds < 2 + _interpreter_start(), (task, seconds)
        status = second.inv("status", "--json")
        assert status.returncode == 0, status.stderr
        assert any(str(first.root) in p for p in json.loads(status.stdout)["problems"])
        validate = second.inv("validate", "--offline", "--json")
        owner = [c for c in json.loads(validate.stdout)["checks"] if c["name"] == "compose project"]
        assert owner and owner[0]["status"] == "fail" and str(first.root) in owner[0]["finding"]
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT note FROM precious").fetchall() == [
                ("the first checkout's",)
            ]
        assert core_healthy(_load(first))
    finally:
        first.inv("reset", "--yes", "--no-backup")
        second.inv("reset", "--yes", "--no-backup")


def _interpreter_start() -> float:
    """What `inv --list` costs on this machine: the refusal's own time is measured beyond it."""
    began = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "invoke", "--list"], cwd=ROOT, capture_output=True, check=False
    )
    return time.monotonic() - began


def _load(checkout: Checkout) -> Settings:
    from scripts.settings import load

    return load({"STACK_ENV_FILE": str(checkout.env_file)})


def test_a_failed_start_removes_what_it_created(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A container-name conflict stops `docker compose up` half-way: what it had created
    (the other service's container, the network, the volumes) goes again, and it says so."""
    project = f"aim_conflict_{uuid.uuid4().hex[:8]}"
    clone = _compose_clone(tmp_path_factory.mktemp("conflict"), project)
    squatter = f"{project}_redis"
    _docker("create", "--name", squatter, "redis:7")
    try:
        failed = clone.inv("init", "--yes")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        message = failed.stderr.strip().splitlines()[-1]
        assert "Removed what it had created" in message, message
        label = f"label=com.docker.compose.project={project}"
        assert _docker("ps", "--all", "--quiet", "--filter", label).split() == []
        assert _docker("volume", "ls", "--quiet", "--filter", label).split() == []
        assert project + "_network" not in _docker("network", "ls", "--format", "{{.Name}}")
    finally:
        subprocess.run(["docker", "rm", "--force", squatter], capture_output=True, check=False)
        clone.inv("reset", "--yes", "--no-backup")


def test_an_engine_that_does_not_answer_names_inv_setup(running: Settings, inv: Inv) -> None:
    result = inv("status", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert "No Docker engine answers at DOCKER_HOST=unix:///nonexistent/docker.sock" in message, (
        message
    )
    assert "`inv setup`" in message and "Traceback" not in result.stderr
