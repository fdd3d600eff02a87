"""Findings of an adversarial run, each run again the same way, on either backend: a login
aimed at Redis through Adminer, a hung Adminer, passwords SASLprep changes, an env file with
a byte-order mark or that is a directory, every connection slot taken.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import sql
from psycopg.conninfo import make_conninfo

from scripts import envfile
from scripts.settings import Settings
from tests.integration.helpers import Inv, ensure_up


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result


def _one_sentence(result: subprocess.CompletedProcess[str], *names: str) -> str:
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "Traceback" not in out, out
    errors = [line for line in result.stderr.splitlines() if line.startswith("✘")]
    assert len(errors) == 1, result.stderr
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]


def _copy_env(stack: Settings, tmp_path: Path, text: str | None = None) -> dict[str, str]:
    copy = tmp_path / "stack.env"
    copy.write_text(text if text is not None else stack.env_file.read_text(encoding="utf-8"))
    copy.chmod(0o600)
    return {"STACK_ENV_FILE": str(copy)}


@pytest.fixture
def adminer(stack: Settings, inv: Inv) -> Iterator[str]:
    """Adminer running (the tools profile), stopped again afterwards."""
    _ok(inv("up"))
    yield stack.adminer_url
    _ok(inv("down"))
    ensure_up(stack)


def _get(url: str, timeout: float = 10) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our Adminer
        return int(response.status)


def test_a_login_aimed_at_redis_neither_reaches_it_nor_hangs_adminer(
    stack: Settings, adminer: str
) -> None:
    client = redis.Redis.from_url(stack.redis_url.reveal(), socket_timeout=10)
    before = int(client.info("stats")["total_connections_received"])
    form = urllib.parse.urlencode(
        {
            "auth[driver]": "pgsql",
            "auth[server]": f"{stack.connect_host}:{stack.redis_port}",
            "auth[username]": "someone",
            "auth[password]": "anything",
            "auth[db]": "",
        }
    ).encode()
    began = time.monotonic()
    request = urllib.request.Request(adminer, data=form, method="POST")  # noqa: S310
    with contextlib.suppress(urllib.error.HTTPError):  # a refused login is an answer too
        urllib.request.urlopen(request, timeout=20).close()  # noqa: S310
    assert time.monotonic() - began < 10, "the login hung"
    assert _get(adminer) == 200  # and the next request is served
    after = int(client.info("stats")["total_connections_received"])  # on the same connection
    client.close()
    assert after == before, "Adminer connected to Redis"


@pytest.mark.destructive
def test_up_restarts_an_adminer_that_does_not_answer(
    stack: Settings, inv: Inv, adminer: str
) -> None:
    _hang_adminer(stack)
    with pytest.raises(OSError):
        _get(adminer, timeout=2)
    result = _ok(inv("up"))
    assert "adminer: did not answer" in result.stdout and "restarted" in result.stdout
    assert _get(adminer) == 200


def _hang_adminer(stack: Settings) -> None:
    if stack.backend == "compose":
        from scripts.backends.compose import ComposeBackend

        container = ComposeBackend(stack).container("adminer")
        subprocess.run(["docker", "pause", container], check=True, capture_output=True)
        return
    pid = int((stack.state_dir / "run" / "adminer.pid").read_text())
    os.killpg(pid, signal.SIGSTOP)  # the server and its workers: nothing answers


@pytest.mark.destructive
@pytest.mark.parametrize(
    "password",
    ["\ufb01le\u00bd\uff21BC-1", "no\u00a0break\u00a0space"],
    ids=["ligature-fraction-fullwidth", "no-break-space"],
)
def test_a_password_saslprep_changes_logs_in_as_psql_does(
    stack: Settings, inv: Inv, tmp_path: Path, password: str
) -> None:
    """The server computes the stored key of the SASLprepped password; the tasks' own SCRAM
    client must prepare it the same way, or `inv health` fails where psql gets in."""
    ensure_up(stack)
    admin = make_conninfo(**stack.pg_conninfo("postgres", admin=True))
    role = sql.Identifier(stack.postgres_user)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(role, sql.Literal(password)))
    try:
        env = _copy_env(stack, tmp_path)
        envfile.update(
            Path(env["STACK_ENV_FILE"]),
            {"POSTGRES_PASSWORD": password, "DATABASE_URL": ""},
        )
        _ok(inv("health", env=env))
        with psycopg.connect(make_conninfo(**{**stack.pg_conninfo(), "password": password})):
            pass  # and libpq agrees
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    role, sql.Literal(stack.postgres_password.reveal())
                )
            )


def test_an_env_file_with_a_byte_order_mark_keeps_its_first_line(
    stack: Settings, inv: Inv, tmp_path: Path
) -> None:
    lines = [
        line
        for line in stack.env_file.read_text(encoding="utf-8").splitlines()
        if not line.startswith("STACK_BACKEND=")
    ]
    text = "\ufeff" + f"STACK_BACKEND={stack.backend}\n" + "\n".join(lines) + "\n"
    result = _ok(inv("status", "--json", env=_copy_env(stack, tmp_path, text)))
    assert json.loads(result.stdout)["backend"] == stack.backend
    assert "byte-order mark" in result.stderr


def test_an_env_file_that_is_a_directory_is_one_sentence(inv: Inv, tmp_path: Path) -> None:
    (tmp_path / "stack.env").mkdir()
    _one_sentence(
        inv("status", env={"STACK_ENV_FILE": str(tmp_path / "stack.env")}), "is a directory"
    )


def test_every_connection_slot_taken_is_named_with_its_fix(
    stack: Settings, inv: Inv, tmp_path: Path
) -> None:
    ensure_up(stack)
    conninfo = make_conninfo(**stack.pg_conninfo())
    held: list[psycopg.Connection[tuple[object, ...]]] = []
    try:
        while len(held) < 300:
            try:
                held.append(psycopg.connect(conninfo, autocommit=True, connect_timeout=10))
            except psycopg.OperationalError as exc:
                assert "too many clients" in str(exc) or "remaining connection slots" in str(exc)
                break
        health = inv("health")
        assert health.returncode == 1
        assert "connection slot" in health.stdout + health.stderr
        assert "inv up-core" not in health.stderr  # starting it again would not help
        backup = inv("db.backup", env={"BACKUP_DIR": str(tmp_path)})
        _one_sentence(backup, "close some")
    finally:
        for conn in held:
            conn.close()
