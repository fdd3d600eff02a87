"""scripts/backends: choosing a backend, compose command lines and output, native state."""

from __future__ import annotations

import json
import os
import pwd
import re
import socket
import socketserver
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.backends import get_backend
from scripts.backends.base import (
    SERVICES,
    ServiceState,
    check_services,
    resolve_backend_name,
)
from scripts.backends.compose import (
    ComposeBackend,
    compose_argv,
    profile_args,
)
from scripts.backends.native import RELOCATED_ROOT, NativeBackend
from scripts.backends.native.layout import Layout
from scripts.errors import StackError
from scripts.infra.compose_plugin import compose_version
from scripts.infra.docker import engine_version
from scripts.infra.net import ensure_free
from scripts.infra.procs import RunAs, alive
from scripts.settings import ROOT, Settings
from tests.unit.unit_support import (
    generated_settings,
    http_handler,
    inv_command_problem,
    serve_tcp,
    serve_unix,
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return generated_settings(tmp_path)


# --- choosing a backend ---------------------------------------------------------------------


def test_check_services_names_every_unknown_service() -> None:
    with pytest.raises(StackError) as caught:
        check_services(["postgres", "mysql", "mongo"])
    assert caught.value.message == (
        "No service named mysql, mongo: choose from postgres, redis, adminer."
    )


def test_check_services_defaults_to_all_and_keeps_the_order_given() -> None:
    assert check_services([]) == ["postgres", "redis", "adminer"]
    assert check_services(["redis", "postgres"]) == ["redis", "postgres"]


def test_get_backend_by_name(settings: Settings) -> None:
    native = get_backend(settings, "native")
    assert isinstance(native, NativeBackend)
    assert native.name == "native"
    compose = get_backend(settings, "compose")
    assert isinstance(compose, ComposeBackend)
    assert compose.name == "compose"
    assert compose.where() == "project aim_unit"
    with pytest.raises(StackError, match="'podman' is not a backend"):
        get_backend(settings, "podman")


def test_get_backend_uses_the_configured_backend(tmp_path: Path) -> None:
    settings = generated_settings(tmp_path, backend="compose")
    assert isinstance(get_backend(settings), ComposeBackend)


def test_auto_chooses_native_when_no_engine_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/missing.sock")
    settings = generated_settings(tmp_path, backend="auto")
    assert settings.backend == "auto"
    assert resolve_backend_name(settings) == "native"
    assert isinstance(get_backend(settings), NativeBackend)


def test_a_configured_backend_is_used_without_asking_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/missing.sock")
    assert resolve_backend_name(generated_settings(tmp_path, backend="compose")) == "compose"


# --- the Docker engine ------------------------------------------------------------------------
# A fake answers the engine's version endpoint on a Unix socket or TCP port: these tests are
# about how the SDK's answers and errors become the probe's; real engines, local and remote,
# are the compose suite's (tests/integration/compose).


def engine(requests: list[str], status: int = 200) -> type[socketserver.StreamRequestHandler]:
    body = json.dumps({"Version": "28.0.0", "ApiVersion": "1.48"}).encode()

    def respond(request_line: str) -> tuple[int, str, bytes]:
        if request_line.split()[1].endswith("/version"):
            return status, "OK" if status == 200 else "Server Error", body
        return 404, "Not Found", b""

    return http_handler(respond, requests)


def test_engine_version_none_for_a_missing_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/missing.sock")
    assert engine_version() is None


def test_engine_version_the_version_on_a_unix_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests: list[str] = []
    with serve_unix(tmp_path / "d.sock", engine(requests)) as path:
        monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
        assert engine_version() == "28.0.0"
    # The client asks for the engine's API version, then the probe for its version.
    assert requests == ["GET /version HTTP/1.1"] * 2


def test_engine_version_the_version_on_tcp(monkeypatch: pytest.MonkeyPatch) -> None:
    with serve_tcp(engine([])) as port:
        monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{port}")
        assert engine_version() == "28.0.0"


def test_engine_version_none_when_the_api_says_no(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve_unix(tmp_path / "d.sock", engine([], status=500)) as path:
        monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
        assert engine_version() is None


def test_engine_version_none_for_a_socket_that_is_not_an_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))  # exists, nobody accepts
        monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
        assert engine_version() is None


def test_an_ssh_engine_without_an_ssh_client_is_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "ssh://user@build-host")
    monkeypatch.setenv("PATH", str(tmp_path))  # no ssh here
    with pytest.raises(StackError, match=r"DOCKER_HOST=ssh://user@build-host needs the ssh client"):
        engine_version()


@pytest.mark.parametrize(
    ("output", "code", "expected"),
    [
        ("v2.40.3", 0, "2.40.3"),
        ("2.29.1-desktop.1", 0, "2.29.1-desktop.1"),
        ("1.29.2", 0, None),
        ("", 1, None),
        ("unknown command", 0, None),
    ],
)
def test_compose_version_accepts_only_compose_v2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str, code: int, expected: str | None
) -> None:
    # A stand-in `docker` on PATH: the real CLI's answer depends on what this machine has.
    fake = tmp_path / "docker"
    fake.write_text(
        f'#!/bin/sh\n[ "$*" = "compose version --short" ] || exit 9\necho "{output}"\nexit {code}\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert compose_version() == expected


def test_compose_version_without_a_docker_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert compose_version() is None


# --- compose command lines --------------------------------------------------------------------


def test_compose_argv_puts_the_stack_options_before_the_subcommand(settings: Settings) -> None:
    argv = compose_argv(settings, "--profile", "tools", "up", "--detach", "adminer")
    assert argv == [
        "docker",
        "compose",
        "--project-directory",
        str(ROOT),
        "--file",
        str(ROOT / "docker-compose.yml"),
        "--env-file",
        str(settings.env_file),
        "--project-name",
        "aim_unit",
        "--profile",
        "tools",
        "up",
        "--detach",
        "adminer",
    ]
    assert settings.env_file.parent != ROOT  # the test's own env file, not the checkout's


def test_profile_args_add_tools_only_for_adminer() -> None:
    assert profile_args(["postgres", "redis", "adminer"]) == ["--profile", "tools"]
    assert profile_args(["adminer"]) == ["--profile", "tools"]
    assert profile_args(["postgres", "redis"]) == []


def test_container_names_follow_the_project(settings: Settings) -> None:
    backend = ComposeBackend(settings)
    assert [backend.container(s) for s in SERVICES] == [
        "aim_unit_db",
        "aim_unit_redis",
        "aim_unit_adminer",
    ]


# --- the project's containers ---------------------------------------------------------------
# ComposeBackend._containers is replaced by canned rows in the shape of the engine's container
# list (GET /containers/json): only how the backend reads them is under test here.
# _volume_sizes (another engine call) is replaced the same way.


def _row(service: str, name: str, state: str, status: str) -> dict[str, object]:
    labels = {"com.docker.compose.service": service, "com.docker.compose.oneoff": "False"}
    return {"Names": [f"/{name}"], "State": state, "Status": status, "Labels": labels}


ENGINE_ROWS = [
    _row("postgres", "aim_unit_db", "running", "Up 3 minutes (healthy)"),
    _row("redis", "aim_unit_redis", "exited", "Exited (1) 2 minutes ago"),
]


@pytest.fixture
def ps_output(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[list[list[dict[str, object]]]]:
    """Set the rows the engine lists; yields the holder. The engine is the local default
    whatever this machine's docker CLI is set to."""
    rows: list[list[dict[str, object]]] = [[]]
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.setattr(ComposeBackend, "_containers", lambda self: rows[0])
    monkeypatch.setattr(ComposeBackend, "_volume_sizes", lambda self: {"postgres": 4096})
    yield rows


def test_states_read_the_engines_container_list(
    settings: Settings, ps_output: list[list[dict[str, object]]]
) -> None:
    ps_output[0] = ENGINE_ROWS
    states = ComposeBackend(settings).states()
    assert states == {
        "postgres": ServiceState("postgres", True, "running", "aim_unit_db", 4096),
        "redis": ServiceState("redis", False, "exited (1)", "aim_unit_redis", None),
        "adminer": ServiceState("adminer", False, "not created", "", None),
    }


def test_states_with_no_containers(
    settings: Settings, ps_output: list[list[dict[str, object]]]
) -> None:
    ps_output[0] = []
    states = ComposeBackend(settings).states()
    assert [s.state for s in states.values()] == ["not created"] * 3
    assert not any(s.running for s in states.values())


def test_exit_reason_names_the_container_and_a_working_logs_command(
    settings: Settings, ps_output: list[list[dict[str, object]]]
) -> None:
    ps_output[0] = ENGINE_ROWS
    backend = ComposeBackend(settings)
    assert backend.exit_reason("postgres") is None  # running
    assert backend.exit_reason("adminer") is None  # not created yet: may still start
    reason = backend.exit_reason("redis")
    assert reason is not None
    assert reason.startswith("container aim_unit_redis is exited")
    assert "1" in reason  # the exit code
    commands = re.findall(r"`inv ([^`]+)`", reason)
    assert commands, reason
    assert all("redis" in command for command in commands), reason
    assert [inv_command_problem(command) for command in commands] == [None] * len(commands)


# --- the native backend's view of its state dir ---------------------------------------------


def nobody() -> RunAs:
    entry = pwd.getpwnam("nobody")
    return RunAs("nobody", entry.pw_uid, entry.pw_gid)


def _layout(settings: Settings, run_as: RunAs | None) -> Layout:
    return Layout(settings.state_dir, settings.project, settings.postgres_port, run_as)


def test_native_data_lives_in_the_servers_home_when_root_runs_the_stack(tmp_path: Path) -> None:
    """The state dir is private to root (0700): the servers' account could not enter it, so
    their files live in a home of their own, one per state dir."""
    layout = _layout(generated_settings(tmp_path), nobody())
    data = layout.pg_data
    assert data.name == "postgres_data"
    assert data.parent.parent == RELOCATED_ROOT
    assert data.parent.name.startswith("aim_unit-")
    assert layout.pg_data == data  # stable between calls
    assert layout.redis_data.parent == layout.socket_dir.parent == data.parent
    other = tmp_path / "other"
    other.mkdir()
    assert _layout(generated_settings(other), nobody()).pg_data != data  # one per state dir


def test_native_data_stays_in_the_state_dir_when_the_servers_run_as_this_user(
    tmp_path: Path,
) -> None:
    settings = generated_settings(tmp_path)
    layout = _layout(settings, None)
    assert layout.pg_data == settings.state_dir / "postgres_data"
    assert layout.home == settings.state_dir


def test_an_older_data_dir_in_the_state_dir_is_used_where_it_is(tmp_path: Path) -> None:
    """Until `Layout.migrate` moves it (with nothing running), data an older version kept in
    the state dir stays in use: a server running there is never pulled from under it."""
    settings = generated_settings(tmp_path)
    (settings.state_dir / "postgres_data").mkdir(parents=True)
    layout = _layout(settings, nobody())
    assert layout.pg_data == settings.state_dir / "postgres_data"


def test_native_states_of_a_fresh_state_dir(settings: Settings) -> None:
    states = NativeBackend(settings).states()
    assert list(states) == ["postgres", "redis", "adminer"]
    assert states["postgres"] == ServiceState("postgres", False, "not created", "", None)
    assert states["redis"].state == "stopped"
    assert not any(s.running for s in states.values())


def test_native_ignores_a_pid_file_naming_another_program(settings: Settings) -> None:
    # A stale redis.pid whose number now belongs to an unrelated process: that process
    # must be neither reported as redis nor stopped.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run_dir = settings.state_dir / "run"
        run_dir.mkdir(parents=True)
        (run_dir / "redis.pid").write_text(f"{other.pid}\n")
        backend = NativeBackend(settings)
        assert backend.states()["redis"].running is False
        assert backend.stop(["redis"]) == []
        assert alive(other.pid)
        assert not (run_dir / "redis.pid").exists()  # the stale pid file is removed
    finally:
        other.kill()
        other.wait()


def test_a_port_taken_by_another_program_is_refused_before_starting(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        settings = generated_settings(tmp_path, {"REDIS_PORT": str(port)})
        with pytest.raises(StackError) as caught:
            ensure_free(settings, ["redis"])
    message = caught.value.message
    assert message.startswith("Nothing was started: ")
    assert f"port {port} (redis) on 127.0.0.1 is in use by " in message
    assert f"(pid {os.getpid()})" in message
    assert "set REDIS_PORT in " in message
    assert "stack.env" in message


def test_native_stop_of_nothing_running_stops_nothing(settings: Settings) -> None:
    assert NativeBackend(settings).stop() == []


# --- native: what a postmaster that exited said -------------------------------------------------


def test_a_postmaster_that_exited_is_reported_with_the_cause_before_its_fatal() -> None:
    from scripts.backends.native import _postgres_cause

    cause = [
        '2026-12-02 07:58:53.754 UTC [23070] LOG:  invalid value for parameter "shared_buffers"',
        '2026-12-02 07:58:53.754 UTC [23070] FATAL:  configuration file "x.conf" contains errors',
    ]
    assert _postgres_cause(cause) == (
        'LOG: invalid value for parameter "shared_buffers"; '
        'FATAL: configuration file "x.conf" contains errors'
    )
    other_process = ["2026-12-02 07:58:53.700 UTC [23069] LOG:  checkpoint complete", cause[1]]
    assert _postgres_cause(other_process) == cause[1]
    no_fatal = [cause[0], "2026-12-02 07:58:54.000 UTC [23070] LOG:  database system is shut down"]
    assert _postgres_cause(no_fatal) == no_fatal[1]
    own_prefix = ["LOG:  invalid value", "FATAL:  configuration file contains errors"]
    assert _postgres_cause(own_prefix) == own_prefix[1]
