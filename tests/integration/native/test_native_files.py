"""The native backend's files and processes: private, unprivileged, and never lost track of.

Each test runs a stack of its own from a clone of the checkout, the way a user starts one:
a kill during the first start, a kill during `inv reset`, a clone deleted without a reset.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from scripts.backends.native.layout import RELOCATED_ROOT
from scripts.infra import crashpoints
from tests.integration.helpers import Checkout
from tests.support.net import free_ports


@pytest.fixture
def clone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Checkout]:
    checkout = Checkout.clone(tmp_path_factory.mktemp("native") / "ai-marketplace")
    checkout.env_file.write_bytes((checkout.root / ".env.example").read_bytes())
    checkout.env_file.chmod(0o600)
    postgres_port, redis_port, adminer_port = free_ports(3)
    checkout.edit_env(
        STACK_BACKEND="native",
        POSTGRES_PORT=str(postgres_port),
        REDIS_PORT=str(redis_port),
        ADMINER_PORT=str(adminer_port),
    )
    try:
        yield checkout
    finally:
        if checkout.env_file.exists():
            checkout.inv("reset", "--yes", "--no-backup")


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result


def _readable_by_others(root: Path) -> list[str]:
    """What `find ROOT -perm /077` prints."""
    found = subprocess.run(
        ["find", str(root), "-perm", "/077"], capture_output=True, text=True, check=True
    )
    return found.stdout.split()


def test_nothing_under_the_state_dir_is_readable_by_others(clone: Checkout) -> None:
    state = clone.root / ".stack"
    for task in (("init", "--yes"), ("up",), ("db.backup",), ("redis.backup",)):
        _ok(clone.inv(*task))
        assert _readable_by_others(state) == [], task
    backups = [p for p in (clone.root / "backups").iterdir() if p.name != ".gitkeep"]
    assert backups and all(not p.stat().st_mode & 0o077 for p in backups)


@pytest.mark.skipif(os.geteuid() != 0, reason="servers drop privileges only when root starts them")
def test_every_server_runs_unprivileged_with_private_data(clone: Checkout) -> None:
    _ok(clone.inv("init", "--yes"))
    _ok(clone.inv("up"))
    (home,) = _homes(clone)
    run = clone.root / ".stack" / "run"
    pids = {
        "postgres": (home / "postgres_data" / "postmaster.pid").read_text().split()[0],
        "redis": (run / "redis.pid").read_text().strip(),
        "adminer": (run / "adminer.pid").read_text().strip(),
    }
    account = pwd.getpwnam("postgres").pw_uid
    for service, pid in pids.items():
        assert psutil.Process(int(pid)).uids().real == account, service
    assert home.parent == RELOCATED_ROOT
    assert _readable_by_others(home) == []


def test_no_password_is_ever_in_a_file_under_tmp_during_a_first_start(clone: Checkout) -> None:
    """initdb reads the admin's password from a file: it lives in the server's private home,
    never in /tmp, for the whole first start (polled while it runs)."""
    run = uuid.uuid4().hex  # this run's own: earlier runs' clones may still lie in /tmp
    passwords = [f"Watched-{name}-{run}".encode() for name in ("App", "Admin", "Redis")]
    clone.edit_env(  # set before init, so the watcher knows what to look for
        POSTGRES_PASSWORD=passwords[0].decode(),
        POSTGRES_ADMIN_PASSWORD=passwords[1].decode(),
        REDIS_PASSWORD=passwords[2].decode(),
    )
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for path in Path("/tmp").rglob("*"):
                if path.is_relative_to(clone.root):
                    continue  # the checkout's own .env: the user's file, where passwords live
                try:
                    if path.is_file() and path.stat().st_size < 4096:
                        data = path.read_bytes()
                        seen.extend(str(path) for p in passwords if p in data)
                except OSError:
                    continue
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        _ok(clone.inv("init", "--yes"))
    finally:
        done.set()
        watcher.join()
    assert seen == []


def test_a_first_start_killed_half_way_is_started_over(clone: Checkout) -> None:
    """kill -9 of `inv up-core` while its first start's server runs: that server goes on in
    the `.initialising` data dir; the next start stops it and starts over, saying so."""
    clone.edit_env(  # as `inv init` would have: no placeholders left
        POSTGRES_PASSWORD="Killed-Start-Pw-1",
        POSTGRES_ADMIN_PASSWORD="Killed-Admin-Pw-2",
        REDIS_PASSWORD="Killed-Redis-Pw-3",
    )
    killed = subprocess.run(
        [sys.executable, "-m", "invoke", "up-core"],
        cwd=clone.root,
        env={**clone.environ(), crashpoints.VARIABLE: "postgres.first-start.running"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    (home,) = _homes(clone)
    initialising = home / "postgres_data.initialising"
    orphan = int((initialising / "postmaster.pid").read_text().split()[0])
    assert psutil.pid_exists(orphan)

    result = _ok(clone.inv("up-core"))
    assert f"Stopped the server of an interrupted first start (pid {orphan})" in result.stdout
    assert not initialising.exists()
    assert not (home / ".init-secrets").exists()
    assert _ok(clone.inv("health")).returncode == 0


def _homes(clone: Checkout) -> list[Path]:
    state = clone.root / ".stack"
    homes = [h for h in RELOCATED_ROOT.glob("*") if _owned_by(h, state)]
    return homes or [state]


def _owned_by(home: Path, state: Path) -> bool:
    try:
        return (home / "checkout").read_text().strip() == str(state)
    except OSError:
        return False


def test_a_reset_killed_half_way_leaves_a_stack_that_starts(clone: Checkout) -> None:
    """kill -9 of `inv reset` while it deletes: the data dir was renamed first, so the next
    start finds no half-deleted one, finishes the deletion and starts afresh."""
    _ok(clone.inv("init", "--yes"))
    killed = subprocess.run(
        [sys.executable, "-m", "invoke", "reset", "--yes", "--no-backup"],
        cwd=clone.root,
        env={**clone.environ(), crashpoints.VARIABLE: "reset.data.set-aside"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL
    (home,) = _homes(clone)
    assert list(home.glob("*.deleting"))
    _ok(clone.inv("up-core"))
    assert not list(home.glob("*.deleting"))
    _ok(clone.inv("health"))


@pytest.mark.skipif(os.geteuid() != 0, reason="data leaves the checkout only when root runs it")
def test_the_data_of_a_deleted_checkout_is_listed_and_cleaned(
    clone: Checkout, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _ok(clone.inv("init", "--yes"))
    _ok(clone.inv("down"))
    (home,) = _homes(clone)
    assert home.parent == RELOCATED_ROOT
    shutil.rmtree(clone.root)  # deleted without `inv reset`
    other = Checkout.clone(tmp_path_factory.mktemp("other") / "ai-marketplace")
    other.env_file.write_bytes((other.root / ".env.example").read_bytes())
    other.env_file.chmod(0o600)
    other.edit_env(STACK_BACKEND="native")
    status = _ok(other.inv("status"))
    assert str(home) in status.stdout and "inv clean --orphans" in status.stdout
    assert str(home) in other.inv("validate", "--offline").stdout
    asked = other.inv("clean", "--orphans")  # no terminal to ask on: refuses, deletes nothing
    assert asked.returncode == 1 and home.exists()
    _ok(other.inv("clean", "--orphans", "--yes"))
    assert not home.exists()
