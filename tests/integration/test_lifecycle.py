"""The stack's lifecycle as a developer lives it: up, down, reset, crashes, conflicts, bad input.

Runs against the isolated stack of `nox -s integration`, on either backend.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from scripts.settings import Settings
from tests.integration.helpers import (
    ROOT,
    Inv,
    connect,
    core_healthy,
    ctrl_c_as_in_a_terminal,
    kill_service,
    listening_addresses,
    table_counts,
)

SEED_COUNTS = {"users": 9, "ai_agents": 10, "reviews": 15, "transactions": 10}


def _status(inv: Inv) -> dict[str, dict[str, Any]]:
    result = inv("status", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return {row["service"]: row for row in json.loads(result.stdout)["services"]}


def _add_marker(stack: Settings) -> str:
    """Write one row to PostgreSQL and one key to Redis; return the marker they carry."""
    marker = uuid.uuid4().hex[:12]
    with connect(stack) as conn:
        conn.execute(
            "INSERT INTO users (email, username, password_hash) VALUES (%s, %s, 'x')",
            (f"{marker}@example.com", f"u_{marker}"),
        )
    client = redis.Redis.from_url(stack.redis_url.reveal())
    try:
        client.set(f"marker:{marker}", marker)
    finally:
        client.close()
    return marker


def _has_marker(stack: Settings, marker: str) -> tuple[bool, bool]:
    with connect(stack) as conn:
        row = conn.execute("SELECT count(*) FROM users WHERE username = %s", (f"u_{marker}",))
        in_postgres = row.fetchone() == (1,)
    client = redis.Redis.from_url(stack.redis_url.reveal())
    try:
        in_redis = client.get(f"marker:{marker}") == marker.encode()
    finally:
        client.close()
    return in_postgres, in_redis


def _remove_marker(stack: Settings, marker: str) -> None:
    with connect(stack) as conn:
        conn.execute("DELETE FROM users WHERE username = %s", (f"u_{marker}",))
    client = redis.Redis.from_url(stack.redis_url.reveal())
    try:
        client.delete(f"marker:{marker}")
    finally:
        client.close()


def test_health_passes_on_a_running_stack(running: Settings, inv: Inv) -> None:
    result = inv("health")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "postgres: PostgreSQL 15" in result.stdout
    assert "redis: PING with AUTH answered PONG" in result.stdout
    report = json.loads(inv("health", "--json").stdout)
    assert report["healthy"] is True
    assert report["services"]["postgres"]["healthy"] is True
    assert report["services"]["redis"]["healthy"] is True


def test_database_url_reaches_the_schema_and_seed(running: Settings) -> None:
    with psycopg.connect(running.database_url.reveal()) as conn:
        counts = table_counts(conn)
    assert all(counts[table] >= SEED_COUNTS[table] for table in SEED_COUNTS), counts


def test_redis_url_answers_and_unauthenticated_clients_are_refused(running: Settings) -> None:
    client = redis.Redis.from_url(running.redis_url.reveal(), socket_timeout=5)
    try:
        assert client.ping() is True
    finally:
        client.close()
    anonymous = redis.Redis(host=running.connect_host, port=running.redis_port, socket_timeout=5)
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous.get("anything")
    finally:
        anonymous.close()
    wrong = redis.Redis(
        host=running.connect_host, port=running.redis_port, password="wrong", socket_timeout=5
    )
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            wrong.ping()
    finally:
        wrong.close()


def test_postgres_refuses_a_wrong_or_missing_password(running: Settings) -> None:
    base = {
        "host": running.connect_host,
        "port": running.postgres_port,
        "user": running.postgres_user,
        "dbname": running.postgres_db,
        "connect_timeout": 10,
    }
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**base, password="not-the-password")  # type: ignore[arg-type]
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(**base, password="")  # type: ignore[arg-type]


def test_data_survives_down_and_up(running: Settings, inv: Inv) -> None:
    marker = _add_marker(running)
    try:
        result = inv("down")
        assert result.returncode == 0, result.stdout + result.stderr
        assert not core_healthy(running)
        states = _status(inv)
        assert not states["postgres"]["running"] and not states["redis"]["running"]

        result = inv("up-core")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ready in" in result.stdout
        assert _has_marker(running, marker) == (True, True)
    finally:
        _remove_marker(running, marker)


def test_reset_asks_first_then_returns_to_the_seed_state(running: Settings, inv: Inv) -> None:
    marker = _add_marker(running)

    refused = inv("reset")  # no terminal to answer the question: nothing may be deleted
    assert refused.returncode != 0
    assert "--yes" in refused.stderr
    assert _has_marker(running, marker) == (True, True)

    result = inv("reset", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    states = _status(inv)
    assert not states["postgres"]["running"]
    assert states["postgres"]["state"] == "not created"

    result = inv("init")
    assert result.returncode == 0, result.stdout + result.stderr
    with connect(running) as conn:
        assert table_counts(conn) == SEED_COUNTS
    assert _has_marker(running, marker) == (False, False)


def test_a_stopped_redis_makes_health_fail_naming_redis(running: Settings, inv: Inv) -> None:
    from scripts.backends import get_backend

    get_backend(running).stop(["redis"])

    result = inv("health")
    assert result.returncode == 1
    assert "✘ redis" in result.stdout
    assert "✔ postgres" in result.stdout
    assert "Unhealthy: redis" in result.stderr
    assert "Traceback" not in result.stderr

    report = json.loads(inv("health", "--json").stdout)
    assert report["healthy"] is False
    assert report["services"]["redis"]["healthy"] is False
    assert report["services"]["postgres"]["healthy"] is True

    states = _status(inv)
    assert states["redis"]["running"] is False
    assert states["postgres"]["running"] is True
    assert states["postgres"]["healthy"] is True


def test_a_stopped_postgres_makes_health_fail_naming_postgres(running: Settings, inv: Inv) -> None:
    from scripts.backends import get_backend

    get_backend(running).stop(["postgres"])

    result = inv("health")
    assert result.returncode == 1
    assert "✘ postgres" in result.stdout
    assert "Unhealthy: postgres" in result.stderr


def test_a_taken_port_is_reported_and_nothing_starts(running: Settings, inv: Inv) -> None:
    assert inv("down").returncode == 0
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((running.bind_address, running.redis_port))
        squatter.listen()
        result = inv("up-core")
        assert result.returncode == 1
        assert f"port {running.redis_port}" in result.stderr
        assert "REDIS_PORT" in result.stderr
        assert "Traceback" not in result.stderr
        states = _status(inv)
        assert not states["postgres"]["running"], "postgres was left half-started"
    assert inv("up-core").returncode == 0


def test_the_stack_recovers_after_sigkill(running: Settings, inv: Inv) -> None:
    marker = _add_marker(running)
    try:
        # Redis write()s its append-only file before it answers, so SIGKILL loses nothing
        # acknowledged (only an OS crash could lose the last second before fsync).
        kill_service(running, "postgres")
        kill_service(running, "redis")

        result = inv("up-core")
        assert result.returncode == 0, result.stdout + result.stderr
        assert core_healthy(running)
        assert _has_marker(running, marker) == (True, True)
    finally:
        _remove_marker(running, marker)


def test_two_concurrent_up_core_end_with_one_healthy_stack(running: Settings, inv: Inv) -> None:
    assert inv("down").returncode == 0
    argv = [sys.executable, "-m", "invoke", "up-core"]
    first = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    second = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    outputs = [p.communicate(timeout=300)[0].decode() for p in (first, second)]
    assert first.returncode == 0, outputs[0]
    assert second.returncode == 0, outputs[1]
    assert core_healthy(running)
    started = [o for o in outputs if "(started postgres, redis)" in o]
    assert len(started) == 1, outputs  # the other found the stack already running


def test_a_bad_env_file_is_reported_all_at_once(
    running: Settings, inv: Inv, tmp_path: Path
) -> None:
    broken = {"POSTGRES_PORT": "99999", "REDIS_PASSWORD": "", "BIND_ADDRESS": "localhost"}
    lines = []
    for line in running.env_file.read_text().splitlines():
        key = line.split("=", 1)[0]
        if key == "POSTGRES_USER":
            continue  # missing altogether
        lines.append(f"{key}={broken[key]}" if key in broken else line)
    bad = tmp_path / "bad.env"
    bad.write_text("\n".join(lines) + "\n")

    result = inv("up-core", env={"STACK_ENV_FILE": str(bad)})
    assert result.returncode == 1
    message = result.stderr
    assert "4 problems" in message
    for key in ("POSTGRES_PORT", "REDIS_PASSWORD", "BIND_ADDRESS", "POSTGRES_USER"):
        assert key in message
    assert "Traceback" not in message
    assert running.postgres_password.reveal() not in message
    assert core_healthy(running), "a bad env file must not touch the running stack"

    missing = inv("health", env={"STACK_ENV_FILE": str(tmp_path / "absent.env")})
    assert missing.returncode == 1
    assert "inv init" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_clean_removes_leftovers_and_keeps_data(running: Settings, inv: Inv) -> None:
    marker = _add_marker(running)
    try:
        result = inv("clean")
        assert result.returncode == 0, result.stdout + result.stderr
        assert not core_healthy(running)
        assert inv("up-core").returncode == 0
        assert _has_marker(running, marker)[0] is True
    finally:
        _remove_marker(running, marker)


def test_logs_show_each_service_prefixed(running: Settings, inv: Inv) -> None:
    result = inv("logs", "-s", "postgres", "--tail", "200")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines and all(line.startswith("postgres") for line in lines)
    assert "ready to accept connections" in result.stdout

    both = inv("logs", "--services", "postgres,redis", "--tail", "200")
    assert "Ready to accept connections" in both.stdout  # redis says it this way

    unknown = inv("logs", "-s", "mysql")
    assert unknown.returncode == 2  # a usage error
    assert "mysql" in unknown.stderr and "postgres" in unknown.stderr


def test_logs_follow_merges_the_services_in_the_order_things_happened(
    running: Settings, inv: Inv
) -> None:
    """Alternate events in PostgreSQL (a refused login) and Redis (a BGSAVE) while
    `inv logs --follow` runs: its output has them in that order, and its times never go back."""
    follower = subprocess.Popen(
        [sys.executable, "-m", "invoke", "logs", "--follow", "--tail", "1", "-s", "postgres,redis"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        preexec_fn=ctrl_c_as_in_a_terminal,  # noqa: PLW1509 - no thread runs yet
    )
    assert follower.stdout is not None
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(follower.stdout or []), daemon=True)
    reader.start()
    tag = uuid.uuid4().hex[:8]
    try:
        deadline = time.monotonic() + 60
        while len(seen) < 2:  # the last line of each: the follower reads both logs
            assert follower.poll() is None and time.monotonic() < deadline, "".join(seen)
            time.sleep(0.05)
        client = redis.Redis(
            host=running.connect_host,
            port=running.redis_port,
            password=running.redis_password.reveal(),
            socket_timeout=10,
        )
        for _ in range(2):
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(
                    host=running.connect_host,
                    port=running.postgres_port,
                    user=f"nobody_{tag}",
                    password="x",
                    dbname=running.postgres_db,
                    connect_timeout=10,
                )
            time.sleep(0.2)  # the next event is later, by the servers' clocks too
            client.bgsave()
            time.sleep(0.2)
        while sum("Background saving started" in line for line in seen) < 2:
            assert time.monotonic() < deadline, "".join(seen)
            time.sleep(0.05)
    finally:
        follower.send_signal(signal.SIGINT)
        try:
            follower.wait(timeout=30)
        except subprocess.TimeoutExpired:
            follower.kill()
            follower.wait(timeout=30)
            reader.join(timeout=10)
            pytest.fail(
                "Ctrl-C did not end `inv logs --follow` within 30 s; it printed:\n" + "".join(seen)
            )
        reader.join(timeout=10)
    events = [
        line.split(" | ")[0].strip()
        for line in seen
        if (f"nobody_{tag}" in line and "FATAL" in line) or "Background saving started" in line
    ]
    assert events == ["postgres", "redis", "postgres", "redis"], "".join(seen)
    assert follower.returncode in (0, 130, -signal.SIGINT), "".join(seen)


def test_db_shell_and_redis_cli_run_one_command(running: Settings, inv: Inv) -> None:
    result = inv("db.shell", "-c", "SELECT count(*) AS agents FROM ai_agents")
    assert result.returncode == 0, result.stderr
    assert "agents" in result.stdout
    failing = inv("db.shell", "-c", "SELECT * FROM no_such_table")
    assert failing.returncode != 0
    assert "no_such_table" in failing.stderr + failing.stdout

    pong = inv("redis.cli", "-c", "PING")
    assert pong.returncode == 0, pong.stderr
    assert "PONG" in pong.stdout


def test_arguments_after_a_double_dash_reach_the_client_as_typed(
    running: Settings, inv: Inv
) -> None:
    with connect(running) as conn:
        row = conn.execute("SELECT count(*) FROM ai_agents").fetchone()
    assert row is not None
    counted = inv("db.shell", "--", "-tA", "-c", "select count(*) from ai_agents")
    assert counted.returncode == 0, counted.stdout + counted.stderr
    assert counted.stdout.strip() == str(row[0]), "psql got -tA and the whole query as one"
    assert "extra command-line argument" not in counted.stderr

    key, value = "inv test: key with spaces", "a value 'quoted' and \"double\""
    try:
        stored = inv("redis.cli", "--", "SET", key, value)
        assert stored.returncode == 0 and "OK" in stored.stdout, stored.stdout + stored.stderr
        read = inv("redis.cli", "--", "--raw", "GET", key)
        assert read.stdout.rstrip("\n") == value, read.stdout + read.stderr
    finally:
        inv("redis.cli", "--", "DEL", key)


def test_up_adds_adminer_and_down_stops_everything(running: Settings, inv: Inv) -> None:
    result = inv("up")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(inv("health", "--json").stdout)
    assert report["services"]["adminer"]["healthy"] is True

    assert inv("down").returncode == 0
    for port in (running.postgres_port, running.redis_port, running.adminer_port):
        assert not listening_addresses(port), f"something listens on {port} after `inv down`"

    # The clients on a stopped stack say what every other task says: `inv up-core`.
    for client in (("db.shell", "-c", "select 1"), ("redis.cli", "-c", "ping")):
        stopped = inv(*client)
        assert stopped.returncode == 1, (client, stopped.stdout + stopped.stderr)
        lines = [line for line in stopped.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "`inv up-core`" in lines[0], (client, stopped.stderr)
        assert "is not running" in lines[0], (client, stopped.stderr)


def _converse(argv: list[str], lines: list[bytes], prompt: bytes, timeout: float = 60) -> bytes:
    """Run a command on a pseudo-terminal and type each of `lines` at its `prompt`, the way a
    person does (Enter is \\r, as a keyboard sends it); return everything it printed."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios
    import time

    controller, terminal = pty.openpty()
    # A real terminal has a size: without one psql pages even one row through `less`.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        close_fds=True,
        env={**os.environ, "TERM": "xterm-256color"},  # as a terminal emulator sets it
    )
    os.close(terminal)
    output = b""
    since_typed = b""
    deadline = time.monotonic() + timeout
    pending = list(lines)
    try:
        while time.monotonic() < deadline and process.poll() is None:
            ready, _, _ = select.select([controller], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:
                    break  # the command ended and closed the terminal
                output += chunk
                since_typed += chunk
                if b"\x1b[6n" in chunk:  # "where is the cursor?", as a terminal answers it
                    os.write(controller, b"\x1b[1;1R")
            elif pending and since_typed.rstrip().endswith(prompt.rstrip()):
                os.write(controller, pending.pop(0))
                since_typed = b""
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(controller)
    return output


def test_db_shell_and_redis_cli_are_interactive_on_a_terminal(running: Settings) -> None:
    shell = _converse(
        [sys.executable, "-m", "invoke", "db.shell"],
        [b"SELECT 6 * 7 AS answer;\r", b"\\q\r"],
        b"=>",  # the application's role: no superuser, so psql's prompt is =>, not =#
    )
    assert b"answer" in shell and b"42" in shell, shell.decode(errors="replace")

    cli = _converse(
        [sys.executable, "-m", "invoke", "redis.cli"],
        [b"ECHO interactive-hello\r", b"quit\r"],
        b">",
    )
    assert b'"interactive-hello"' in cli, cli.decode(errors="replace")
