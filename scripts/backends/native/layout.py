"""Where the native backend keeps things, and who may read them.

The state dir (`.stack`) is the checkout's and private to the account running the tasks
(0700, files 0600): logs, pid files, the lock, the restore journal. The servers' own files
(data dirs, their socket, Adminer's pages) live in the server home: the state dir itself,
or, when root starts the stack and the servers run as an unprivileged account that cannot
enter the root-owned state dir, a directory of that account under /var/lib. A server home
records which state dir it belongs to, so one whose checkout was deleted is found
(`inv status`, `inv validate`) and removed (`inv clean --orphans`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from scripts.console import display_path
from scripts.errors import StackError
from scripts.infra import crashpoints
from scripts.infra.procs import RunAs

RELOCATED_ROOT = Path("/var/lib/ai-marketplace-stack")
OWNER_FILE = "checkout"  # in a relocated server home: the state dir it belongs to
# A Unix socket's path must fit in sockaddr_un (107 bytes on Linux, 103 on macOS).
SOCKET_PATH_MAX = 100


@dataclass(frozen=True)
class Layout:
    state: Path  # the checkout's state dir
    project: str
    postgres_port: int
    run_as: RunAs | None  # the servers' account when root runs the tasks, else None

    # --- the state dir (the tasks' account) -----------------------------------------------

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def run(self) -> Path:
        return self.state / "run"

    def log(self, service: str) -> Path:
        return self.logs / f"{service}.log"

    def pid_file(self, service: str) -> Path:
        return self.run / f"{service}.pid"

    # --- the server home (the servers' account) ---------------------------------------------

    @property
    def home(self) -> Path:
        if self.run_as is None:
            return self.state
        digest = hashlib.sha256(str(self.state).encode()).hexdigest()[:10]
        return RELOCATED_ROOT / f"{self.project}-{digest}"

    @property
    def pg_data(self) -> Path:
        """The data dir: in the server home, or where an older version left it in the state
        dir (`migrate` moves it once nothing runs there)."""
        legacy = self.state / "postgres_data"
        if legacy.is_dir() and not legacy.is_symlink():
            return legacy
        return self.home / "postgres_data"

    @property
    def redis_data(self) -> Path:
        legacy = self.state / "redis_data"
        if legacy.is_dir() and not legacy.is_symlink():
            return legacy
        return self.home / "redis_data"

    @property
    def adminer(self) -> Path:
        return self.home / "adminer"

    @property
    def secrets(self) -> Path:
        """Where the first start keeps initdb's password file: private to the server's
        account, removed when it ends, and at the next start after a crash."""
        return self.home / ".init-secrets"

    @property
    def socket_dir(self) -> Path:
        """The private directory of PostgreSQL's Unix socket (peer authentication), in the
        server home, or, where that path is too long for a socket, a directory named after
        it in /tmp (a socket holds no secret; the directory is checked to be the server
        account's)."""
        near = self.home / "pg_socket"
        if len(str(near / f".s.PGSQL.{self.postgres_port}")) <= SOCKET_PATH_MAX:
            return near
        digest = hashlib.sha256(str(near).encode()).hexdigest()[:16]
        return Path("/tmp") / f"aim-pg-{digest}"  # noqa: S108 - checked by private_dir

    # --- making it so ----------------------------------------------------------------------

    def prepare(self) -> None:
        """Create what a start needs, each private to its account, and record whose home a
        relocated server home is. Nothing in the state dir links to it: a link's mode bits
        are 0777, and the state dir holds nothing others may read; `inv status` names it."""
        for directory in (self.state, self.logs, self.run):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o700)
        if self.run_as is not None:
            RELOCATED_ROOT.mkdir(parents=True, exist_ok=True)
            RELOCATED_ROOT.chmod(0o711)  # the accounts may pass through, not list
            self.private_dir(self.home)
            owner = self.home / OWNER_FILE
            owner.write_text(f"{self.state}\n")
            owner.chmod(0o600)
        self.private_dir(self.redis_data)
        for name in ("postgres_data", "redis_data"):  # links older versions made
            if (self.state / name).is_symlink():
                (self.state / name).unlink()

    def private_dir(self, path: Path) -> Path:
        """Create (or check) a directory only the servers' account may use: mode 0700, its
        owner, not a symlink. One that someone else made first (in /tmp) is refused."""
        owner = os.geteuid() if self.run_as is None else self.run_as.uid
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        st = path.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (owner, os.geteuid()):
            raise StackError(
                f"{path} belongs to someone else (uid {st.st_uid}) or is no directory: remove "
                "it and start again."
            )
        if st.st_uid != owner and self.run_as is not None:
            self.run_as.chown(path)
        path.chmod(0o700)
        return path

    def migrate(self) -> list[str]:
        """Move data an older version kept in a root-owned state dir into the server home
        (the servers' account could not enter a private state dir). Only call it with
        nothing running."""
        moved: list[str] = []
        if self.run_as is None:
            return moved
        for name in ("postgres_data", "redis_data"):
            legacy = self.state / name
            if legacy.is_dir() and not legacy.is_symlink():
                self.private_dir(self.home)
                target = self.home / name
                if target.exists():
                    raise StackError(
                        f"Both {display_path(legacy)} and {target} exist: keep the one you "
                        "need, remove the other, and start again."
                    )
                shutil.move(str(legacy), str(target))
                self.run_as.chown_tree(target)  # Redis ran as root before: its files were
                moved.append(f"{display_path(legacy)} -> {target}")
        return moved

    def destroy_data(self) -> list[str]:
        """Delete the data dirs and the server home. Each is renamed first, so a deletion
        killed half-way leaves a `.deleting` name that the next run finishes, never a
        half-deleted data dir under the live name."""
        removed = []
        for path in (self.pg_data, self.redis_data):
            if path.exists():
                doomed = path.with_name(f"{path.name}.deleting")
                shutil.rmtree(doomed, ignore_errors=True)
                path.rename(doomed)
                crashpoints.reached("reset.data.set-aside")
                shutil.rmtree(doomed)
                removed.append(display_path(path))
        for name in ("postgres_data", "redis_data"):
            link = self.state / name
            if link.is_symlink():
                link.unlink()
        if self.run_as is not None and self.home.is_dir():
            shutil.rmtree(self.home)
            removed.append(str(self.home))
        return removed

    def finish_deletions(self) -> None:
        """Remove what a killed `inv reset` was deleting."""
        for path in (self.pg_data, self.redis_data):
            shutil.rmtree(path.with_name(f"{path.name}.deleting"), ignore_errors=True)


@dataclass(frozen=True)
class Orphan:
    home: Path
    checkout: str  # the state dir it belonged to
    size: int


def orphans() -> list[Orphan]:
    """Relocated server homes whose state dir is gone: their checkout was deleted without
    `inv reset`, and nothing else will ever remove them."""
    found: list[Orphan] = []
    if not RELOCATED_ROOT.is_dir():
        return found
    for home in sorted(RELOCATED_ROOT.iterdir()):
        owner_file = home / OWNER_FILE
        try:
            state = owner_file.read_text().strip()
        except OSError:
            continue  # not one of ours (the benchmark's scratch dirs, say), or being made
        if not Path(state).exists():
            found.append(Orphan(home, state, disk_usage(home)))
    return found


def disk_usage(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512  # noqa: PTH118
    return total


def orphans_problem() -> str | None:
    """One sentence naming the data dirs whose checkout is gone, or None."""
    from scripts.console import human_size

    found = orphans()
    if not found:
        return None
    listed = ", ".join(f"{o.home} ({human_size(o.size)}, of {o.checkout})" for o in found)
    return (
        f"Data of deleted checkouts, kept by nothing: {listed}: `inv clean --orphans` removes them."
    )
