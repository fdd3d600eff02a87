"""What must never leak: ports beyond the bind address, passwords in output, ps or logs."""

from __future__ import annotations

from pathlib import Path

from scripts.settings import Settings
from tests.integration.helpers import Inv, listening_addresses


def _secrets(stack: Settings) -> list[str]:
    return [stack.postgres_password.reveal(), stack.redis_password.reveal()]


def test_services_listen_only_on_the_bind_address(running: Settings, inv: Inv) -> None:
    assert inv("up").returncode == 0  # adminer too
    try:
        for port in (running.postgres_port, running.redis_port, running.adminer_port):
            addresses = listening_addresses(port)
            assert addresses == {running.bind_address}, (port, addresses)
    finally:
        assert inv("down").returncode == 0


def test_no_password_in_task_output(running: Settings, inv: Inv) -> None:
    outputs = []
    for args in (
        ("up-core",),
        ("health",),
        ("health", "--json"),
        ("status",),
        ("status", "--json"),
        ("logs", "--tail", "500"),
        ("db.shell", "-c", "SELECT current_user"),
        ("redis.cli", "-c", "PING"),
        ("init",),
    ):
        result = inv(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        outputs.append(result.stdout + result.stderr)
    for secret in _secrets(running):
        assert all(secret not in output for output in outputs)
    assert any("****" in output for output in outputs)  # init shows the URLs masked


def test_no_password_in_any_process_arguments(running: Settings, inv: Inv) -> None:
    assert inv("up").returncode == 0
    try:
        leaks = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                argv = cmdline.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                continue  # the process ended meanwhile
            leaks += [argv for secret in _secrets(running) if secret in argv]
        assert not leaks
    finally:
        assert inv("down").returncode == 0


def test_no_password_in_the_logs(running: Settings, inv: Inv) -> None:
    result = inv("logs", "--tail", "100000")
    assert result.returncode == 0
    assert result.stdout.strip()
    for secret in _secrets(running):
        assert secret not in result.stdout


def test_env_file_is_private(running: Settings) -> None:
    assert running.env_file.stat().st_mode & 0o077 == 0
