"""Local server processes: the account they run as, found by pid file, stopped with a deadline.

It never shells out to `kill`, and asks psutil whether a process runs, what it is and where
it works, so the same code runs on Linux and macOS. Starting one is scripts.infra.run's.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
from dataclasses import dataclass
from pathlib import Path

from scripts.infra import wait


@dataclass(frozen=True)
class RunAs:
    """The unprivileged account a server runs as when this process is root."""

    name: str
    uid: int
    gid: int

    @classmethod
    def for_server(cls) -> RunAs | None:
        """None when not root: servers then run as the current user."""
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "nobody"):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            return cls(name, entry.pw_uid, entry.pw_gid)
        from scripts.errors import StackError

        raise StackError(
            "PostgreSQL refuses to run as root and this machine has neither a postgres nor a "
            "nobody account: create one (`useradd --system postgres`) or run as another user."
        )

    def chown(self, path: Path) -> None:
        os.chown(path, self.uid, self.gid)

    def chown_tree(self, path: Path) -> None:
        """`path` and everything below it (not following links)."""
        os.chown(path, self.uid, self.gid, follow_symlinks=False)
        for root, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                os.chown(Path(root) / name, self.uid, self.gid, follow_symlinks=False)

    def can_enter(self, path: Path) -> bool:
        """Whether this account may traverse every directory down to `path` (mode bits only)."""
        groups = set(os.getgrouplist(self.name, self.gid))
        path = path.absolute()  # a relative path's parents stop at ".", short of the private ones
        for directory in [path, *path.parents]:
            try:
                st = directory.stat()
            except FileNotFoundError:
                continue  # created later, by us, with a mode it can use
            if st.st_uid == self.uid:
                bit = 0o100
            elif st.st_gid in groups:
                bit = 0o010
            else:
                bit = 0o001
            if not st.st_mode & bit:
                return False
        return True


def alive(pid: int) -> bool:
    """True when `pid` runs and is not a zombie waiting to be reaped."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def command_name(pid: int) -> str:
    import psutil

    try:
        return str(psutil.Process(pid).name())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


def started_at(pid: int) -> float | None:
    """When `pid` started (seconds since the epoch), None when it is gone: with the pid, it
    tells a process from a later one that was given the same pid."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def family(pid: int) -> set[int]:
    """`pid` and every process it started, however deep. A server whose workers share its
    listening socket (PHP's) is found by any of them: psutil names one holder per socket."""
    import psutil

    try:
        return {pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))}
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return {pid}


def working_dir(pid: int) -> str | None:
    """Where a process works (its current directory), when we may know."""
    import psutil

    try:
        return str(psutil.Process(pid).cwd())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def working_in(directory: Path) -> list[int]:
    """Live processes whose working directory is `directory` (a PostgreSQL server's are)."""
    import psutil

    target = str(directory.resolve())
    found = []
    for proc in psutil.process_iter(["cwd", "status"]):
        cwd, status = proc.info["cwd"], proc.info["status"]
        if cwd == target and status != psutil.STATUS_ZOMBIE:
            found.append(proc.pid)
    return found


def read_pid(path: Path) -> int | None:
    """The pid on the first line of a pid file, or None when absent or unreadable."""
    try:
        first = path.read_bytes().split(b"\n", 1)[0].strip().decode("ascii")
    except (OSError, UnicodeDecodeError):
        return None
    return int(first) if first.isdigit() else None


def stop(pid: int, sig: signal.Signals, timeout: float, force: signal.Signals) -> bool:
    """Send `sig`, wait up to `timeout` for the process to end, then send `force`.

    Returns True when it ended after the first signal.
    """
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    if wait_gone(pid, timeout):
        return True
    try:
        os.kill(pid, force)
    except ProcessLookupError:
        return True
    wait_gone(pid, 5.0)
    return False


def wait_gone(pid: int, timeout: float) -> bool:
    """Whether the process ended within `timeout` seconds (reaping it when it is our child)."""

    def gone() -> bool | None:
        _reap(pid)
        return True if not alive(pid) else None

    return wait.until(gone, timeout=timeout, interval=0.01) is not None


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def tail(path: Path, lines: int = 5) -> list[str]:
    """The last lines of a log file (cheap for large files)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 8192))
            data = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line for line in data.splitlines() if line.strip()][-lines:]
