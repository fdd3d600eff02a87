"""scripts/infra/procs.py: real child processes, pid files, logs and directory access."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.infra.procs import RunAs, alive, family, read_pid, stop, tail, working_in
from scripts.infra.run import spawn
from scripts.infra.wait import concurrently

# A child that says it is ready (after installing its signal handlers), then sleeps.
SLEEPER = "import time; print('ready', flush=True); time.sleep(60)"
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)


def wait_for_line(log: Path, line: str) -> None:
    """Wait (up to 30 s) until the child wrote `line`: proof it runs, not a timing check."""
    deadline = time.monotonic() + 30
    while line not in log.read_text():
        assert time.monotonic() < deadline, f"the child never wrote {line!r} to {log}"
        time.sleep(0.01)


@pytest.fixture
def spawned(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    log = tmp_path / "child.log"
    proc = spawn([sys.executable, "-c", SLEEPER], log)
    try:
        wait_for_line(log, "ready")
        yield proc, log
    finally:
        if proc.poll() is None and alive(proc.pid):
            proc.kill()
        proc.wait()


def test_spawn_runs_detached_with_output_in_the_log(
    spawned: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, log = spawned
    assert alive(proc.pid)
    assert log.read_text() == "ready\n"
    assert os.getsid(proc.pid) == proc.pid  # its own session: Ctrl-C here cannot reach it
    assert Path(f"/proc/{proc.pid}/cwd").readlink() == Path("/")


def test_spawn_appends_to_an_existing_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("earlier run\n")
    proc = spawn([sys.executable, "-c", "print('later run')"], log)
    assert proc.wait() == 0
    assert log.read_text() == "earlier run\nlater run\n"


def test_spawn_passes_the_given_environment(tmp_path: Path) -> None:
    log = tmp_path / "env.log"
    code = "import os; print(os.environ.get('PROBE_VALUE'), os.environ.get('HOME'))"
    proc = spawn([sys.executable, "-c", code], log, env={"PROBE_VALUE": "x1"})
    assert proc.wait() == 0
    assert log.read_text() == "x1 None\n"


def test_stop_ends_a_process_with_the_first_signal(
    spawned: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, _ = spawned
    assert stop(proc.pid, signal.SIGTERM, 30, signal.SIGKILL) is True
    assert not alive(proc.pid)


def test_stop_forces_a_process_that_ignores_the_first_signal(tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    proc = spawn([sys.executable, "-c", STUBBORN], log)
    try:
        wait_for_line(log, "ready")
        assert stop(proc.pid, signal.SIGTERM, 0.2, signal.SIGKILL) is False
        assert not alive(proc.pid)
    finally:
        if alive(proc.pid):
            proc.kill()


def test_stop_of_a_process_that_is_gone_is_true() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert stop(proc.pid, signal.SIGTERM, 1, signal.SIGKILL) is True


def test_a_zombie_is_not_alive() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        stat = Path(f"/proc/{proc.pid}/stat")
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":  # exited, not reaped yet
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not alive(proc.pid)
    finally:
        proc.wait()
    assert not alive(proc.pid)


def test_this_process_is_alive() -> None:
    assert alive(os.getpid())


# --- pid files ------------------------------------------------------------------------------


def test_read_pid_of_a_missing_file_is_none(tmp_path: Path) -> None:
    assert read_pid(tmp_path / "missing.pid") is None


def test_read_pid_reads_the_first_line(tmp_path: Path) -> None:
    pid_file = tmp_path / "postmaster.pid"
    pid_file.write_text("4242\n/var/lib/postgresql/data\n1700000000\n5432\n")  # postmaster.pid
    assert read_pid(pid_file) == 4242
    pid_file.write_text(" 77 \n")
    assert read_pid(pid_file) == 77


@pytest.mark.parametrize(
    "content", [b"", b"\n", b"garbage\n", b"-5\n", b"12abc\n", b"\n4242\n", b"\xff\xfe\x00\x01junk"]
)
def test_read_pid_of_garbage_is_none(tmp_path: Path, content: bytes) -> None:
    pid_file = tmp_path / "redis.pid"
    pid_file.write_bytes(content)
    assert read_pid(pid_file) is None


def test_read_pid_of_an_unreadable_path_is_none(tmp_path: Path) -> None:
    assert read_pid(tmp_path) is None  # a directory where the pid file should be


# --- logs -----------------------------------------------------------------------------------


def test_tail_returns_the_last_non_empty_lines(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {i}\n\n   \n" for i in range(1, 21)))
    assert tail(log) == [f"line {i}" for i in range(16, 21)]
    assert tail(log, 2) == ["line 19", "line 20"]
    assert tail(log, 100) == [f"line {i}" for i in range(1, 21)]


def test_tail_of_a_large_log_reads_its_end(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    log.write_text("".join(f"{'x' * 70} {i}\n" for i in range(10_000)))
    assert tail(log, 3) == [f"{'x' * 70} {i}" for i in (9997, 9998, 9999)]


def test_tail_of_a_missing_log_is_empty(tmp_path: Path) -> None:
    assert tail(tmp_path / "missing.log") == []


def test_tail_survives_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_bytes(b"ok\nbad \xff byte\n")
    assert tail(log) == ["ok", "bad \ufffd byte"]


# --- working_in -----------------------------------------------------------------------------


def test_working_in_finds_a_process_by_its_directory(tmp_path: Path) -> None:
    # spawn() always uses cwd="/", so this child is started with Popen to work in tmp_path.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=tmp_path)
    try:
        assert proc.pid in working_in(tmp_path)
        assert proc.pid not in working_in(tmp_path / "..")
    finally:
        proc.kill()
        proc.wait()
    assert proc.pid not in working_in(tmp_path)


def test_working_in_an_idle_directory_is_empty(tmp_path: Path) -> None:
    assert working_in(tmp_path) == []


# --- family -----------------------------------------------------------------------------------


def test_family_holds_the_workers_a_server_started(tmp_path: Path) -> None:
    """A server whose workers share its socket (php -S with PHP_CLI_SERVER_WORKERS) is found by
    the pid of any of them: the parent's family holds its grandchildren too."""
    log = tmp_path / "tree.log"
    starts_a_worker = (
        "import subprocess, sys, time; "
        f"w = subprocess.Popen([sys.executable, '-c', {SLEEPER!r}], stdout=sys.stdout); "
        "print('worker', w.pid, flush=True); time.sleep(60)"
    )
    parent = spawn([sys.executable, "-c", starts_a_worker], log)
    try:
        wait_for_line(log, "ready")
        worker = int(next(x for x in log.read_text().splitlines() if x.startswith("worker"))[7:])
        assert family(parent.pid) == {parent.pid, worker}
        assert family(worker) == {worker}, "a worker's family is not its parent's"
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
    assert family(parent.pid) == {parent.pid}, "a process that is gone is only itself"


# --- RunAs.can_enter --------------------------------------------------------------------------


@pytest.fixture
def nobody() -> RunAs:
    entry = pwd.getpwnam("nobody")
    return RunAs("nobody", entry.pw_uid, entry.pw_gid)


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A directory every account can traverse, directly under /tmp.

    pytest's tmp_path lives under a 0700 directory of this user, which `nobody` cannot
    enter (see the next test), so the positive cases need a tree outside it; removed after.
    """
    with tempfile.TemporaryDirectory(prefix="aim-unit-", dir="/tmp") as name:
        root = Path(name)
        root.chmod(0o711)
        yield root


def test_nobody_cannot_enter_pytests_private_tmp_path(nobody: RunAs, tmp_path: Path) -> None:
    # The case pg_data relocation exists for: a state dir inside a 0700 directory.
    private = [p for p in (tmp_path, *tmp_path.parents) if p.stat().st_mode & 0o001 == 0]
    assert private, "expected pytest's basetemp to be private (0700)"
    assert not nobody.can_enter(tmp_path)


def test_can_enter_follows_the_execute_bits_of_every_parent(nobody: RunAs, open_root: Path) -> None:
    outer = open_root / "outer"
    inner = outer / "inner"
    inner.mkdir(parents=True)
    inner.chmod(0o755)
    outer.chmod(0o700)
    assert outer.stat().st_uid != nobody.uid
    assert not nobody.can_enter(inner)
    assert not nobody.can_enter(outer)
    outer.chmod(0o711)
    assert nobody.can_enter(inner)
    assert nobody.can_enter(outer)
    inner.chmod(0o700)
    assert not nobody.can_enter(inner)
    assert nobody.can_enter(outer)


def test_can_enter_checks_the_parents_of_a_relative_path_too(
    nobody: RunAs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkout inside a private directory, its paths given relative to the checkout.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    checkout.chmod(0o755)
    monkeypatch.chdir(checkout)
    assert not nobody.can_enter(Path(".nox/bench/tmp"))


def test_can_enter_uses_owner_then_group_bits(nobody: RunAs, open_root: Path) -> None:
    owned = open_root / "owned"
    owned.mkdir()
    os.chown(owned, nobody.uid, nobody.gid)
    owned.chmod(0o700)
    assert nobody.can_enter(owned)  # its own directory
    owned.chmod(0o077)
    assert not nobody.can_enter(owned)  # the owner bits apply to the owner, not the others

    grouped = open_root / "grouped"
    grouped.mkdir()
    os.chown(grouped, 0, nobody.gid)
    grouped.chmod(0o710)
    assert nobody.can_enter(grouped)
    grouped.chmod(0o701)
    assert not nobody.can_enter(grouped)  # a group member gets the group bits only


def test_can_enter_skips_directories_not_created_yet(nobody: RunAs, open_root: Path) -> None:
    assert nobody.can_enter(open_root / "later" / "postgres_data")
    (open_root / "later").mkdir(mode=0o700)
    (open_root / "later").chmod(0o700)
    assert not nobody.can_enter(open_root / "later" / "postgres_data")


# --- concurrently (the servers stop side by side) -----------------------------------------------


def test_concurrently_runs_the_calls_side_by_side() -> None:
    """Each call waits for the other at a barrier: run one after the other, both would fail."""
    barrier = threading.Barrier(2, timeout=10)

    def meet(name: str) -> str:
        barrier.wait()
        return f"{name} stopped"

    results = concurrently({"redis": lambda: meet("redis"), "postgres": lambda: meet("postgres")})
    assert results == {"redis": "redis stopped", "postgres": "postgres stopped"}
    assert list(results) == ["redis", "postgres"]


def test_concurrently_raises_only_after_every_call_ended() -> None:
    finished = threading.Event()

    def slow() -> str:
        time.sleep(0.2)
        finished.set()
        return "done"

    def broken() -> str:
        raise OSError("no such server")

    with pytest.raises(OSError, match="no such server"):
        concurrently({"broken": broken, "slow": slow})
    assert finished.is_set(), "an error must not leave a call running behind it"
