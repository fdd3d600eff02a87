"""The raw baselines: what a developer would run by hand without this project.

The host's PostgreSQL 15 tools, redis-server / redis-cli, and `docker compose` on the same file.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from scripts.backends.native import INIT_SCRIPTS, REDIS_CONF, RELOCATED_ROOT, NativeBackend
from scripts.infra.procs import RunAs
from tests.bench.stacks import (
    BenchStack,
    PgClient,
    RedisClient,
    pg_bindir,
    redis_cli_path,
    wait_ready,
)
from tests.bench.timing import ROOT, BenchError, run, run_pipe
from tests.support.net import free_ports

_ROOT_DIR = Path("/")


def server_account() -> RunAs | None:
    """The postgres account when this process is root (PostgreSQL refuses to run as root)."""
    return RunAs.for_server()


def reachable(path: Path, run_as: RunAs | None) -> Path:
    """`path`, or, where the server account cannot enter one of its parents (a checkout under
    /root, nox's temp dir inside a 0700 one), a place under the stack's own relocation root."""
    if run_as is None or run_as.can_enter(path):
        return path
    return _relocated(path.parent) / path.name


def remove_relocated(work: Path) -> None:
    """Delete what `reachable` moved out of `work` (scratch data dirs, server logs)."""
    shutil.rmtree(_relocated(work), ignore_errors=True)


def _relocated(work: Path) -> Path:
    digest = hashlib.sha256(str(work.absolute()).encode()).hexdigest()[:10]
    return RELOCATED_ROOT / f"bench-{digest}"


def owned_dir(path: Path, run_as: RunAs | None) -> Path:
    """A directory the server account may write into (for pg_ctl's log, data dirs)."""
    path.mkdir(parents=True, exist_ok=True)
    if run_as is not None:
        run_as.chown(path)
    return path


def _pg_options(port: int, listen: str) -> str:
    """The server options the stack passes too: its port and address, no Unix socket."""
    return f"-p {port} -c listen_addresses={listen} -c unix_socket_directories=''"


def _spawn_redis(config: str, log: Path, run_as: RunAs | None) -> subprocess.Popen[bytes]:
    """`redis-server -` with the configuration on stdin, as the stack starts it (its data dir
    is the server account's alone, so the server runs as that account too)."""
    redis_server = shutil.which("redis-server") or "redis-server"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [redis_server, "-"],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=_ROOT_DIR,
            umask=0o077,
            user=None if run_as is None else run_as.uid,
            group=None if run_as is None else run_as.gid,
            extra_groups=None if run_as is None else [],
        )
    assert proc.stdin is not None
    proc.stdin.write(config.encode())
    proc.stdin.close()
    return proc


def _reap(proc: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    if proc is None:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class RawNativeServers:
    """pg_ctl and redis-server on a native stack's own data dir and Redis config."""

    def __init__(self, stack: BenchStack, logs: Path) -> None:
        self.stack = stack
        self.run_as = server_account()
        self.bindir = pg_bindir()
        self.logs = owned_dir(reachable(logs, self.run_as), self.run_as)
        self.redis_proc: subprocess.Popen[bytes] | None = None

    @property
    def pg_data(self) -> Path:
        return NativeBackend(self.stack.settings).pg_data

    @property
    def redis_config(self) -> str:
        """The stack's own Redis configuration (it is never written to a file)."""
        return NativeBackend(self.stack.settings).redis.config()

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bindir / "pg_ctl"), "-D", str(self.pg_data), *args]
        return run(argv, run_as=self.run_as, cwd=_ROOT_DIR, check=check)

    def start(self) -> None:
        """`pg_ctl -w start` + `redis-server -` (config on stdin), then poll psql and redis-cli
        until ready."""
        s = self.stack.settings
        options = _pg_options(s.postgres_port, s.bind_address)
        log = str(self.logs / "postgres.log")
        self.pg_ctl("-w", "-t", "120", "-l", log, "-o", options, "start")
        self.redis_proc = _spawn_redis(self.redis_config, self.logs / "redis.log", self.run_as)
        wait_ready(self.stack.pg, self.stack.redis)

    def stop(self) -> None:
        """`pg_ctl stop -m fast` + redis-cli SHUTDOWN (which saves, as SIGTERM does)."""
        self.pg_ctl("-m", "fast", "-w", "-t", "120", "stop")
        self.stack.redis.call("SHUTDOWN")
        _reap(self.redis_proc)
        self.redis_proc = None

    def stop_quietly(self) -> None:
        """Clean-up after a baseline start: whatever runs of it stops, errors ignored."""
        if (self.pg_data / "postmaster.pid").exists():
            self.pg_ctl("-m", "fast", "-w", "-t", "120", "stop", check=False)
        if self.redis_proc is not None and self.redis_proc.poll() is None:
            self.stack.redis.call("SHUTDOWN", check=False)
            _reap(self.redis_proc)
        self.redis_proc = None


class ThrowawayStack:
    """Cold start with the stock tools: initdb, pg_ctl, createdb, the init scripts with psql,
    redis-server, in a scratch directory on free ports; deleted again afterwards."""

    def __init__(self, stack: BenchStack, scratch: Path) -> None:
        self.stack = stack
        self.run_as = server_account()
        self.bindir = pg_bindir()
        self.scratch = reachable(scratch, self.run_as)
        self.dir: Path | None = None
        self.pg: PgClient | None = None
        self.redis: RedisClient | None = None
        self.redis_proc: subprocess.Popen[bytes] | None = None

    def create(self) -> None:
        s = self.stack.settings
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.dir = work = Path(tempfile.mkdtemp(prefix="cold-", dir=self.scratch))
        if self.run_as is not None:
            self.run_as.chown(work)
        password = s.postgres_password.reveal()
        pwfile = work / "pw"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        if self.run_as is not None:
            self.run_as.chown(pwfile)
        data = work / "pg"
        initdb = [
            str(self.bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            s.postgres_user,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-instructions",
        ]
        run(initdb, run_as=self.run_as, cwd=_ROOT_DIR)
        pwfile.unlink()
        pg_port, redis_port = free_ports(2)
        pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "120"]
        options = _pg_options(pg_port, s.bind_address)
        log = str(work / "postgres.log")
        run([*pg_ctl, "-l", log, "-o", options, "start"], run_as=self.run_as, cwd=_ROOT_DIR)
        self.pg = pg = PgClient(
            self.bindir, s.connect_host, pg_port, s.postgres_user, password, s.postgres_db
        )
        run(pg.argv("createdb", s.postgres_db), env=pg.env())
        for script in sorted((ROOT / INIT_SCRIPTS).glob("*.sql")):
            run(pg.psql_argv("-f", str(script)), env=pg.env())
        redis_dir = owned_dir(work / "redis", self.run_as)
        config = "\n".join(
            [
                (ROOT / REDIS_CONF).read_text(encoding="utf-8"),
                f"bind {s.bind_address}",
                f"port {redis_port}",
                f'dir "{redis_dir}"',
                'logfile ""',
                "daemonize no",
                f'requirepass "{s.redis_password.reveal()}"',
                "",
            ]
        )
        self.redis = redis = RedisClient(
            redis_cli_path(), s.connect_host, redis_port, s.redis_password.reveal()
        )
        self.redis_proc = _spawn_redis(config, work / "redis.log", self.run_as)
        wait_ready(pg, redis)

    def destroy(self) -> None:
        """Stop both servers without saving and delete the scratch directory (not measured)."""
        if self.dir is None:
            return
        data = self.dir / "pg"
        if (data / "postmaster.pid").exists():
            pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
            run(pg_ctl, run_as=self.run_as, cwd=_ROOT_DIR, check=False)
        if self.redis_proc is not None:
            if self.redis_proc.poll() is None and self.redis is not None:
                self.redis.call("SHUTDOWN", "NOSAVE", check=False)
            _reap(self.redis_proc)
            self.redis_proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None


# --- backups and restores ---------------------------------------------------------------------

RAW_BACKUP_NAMES = {"custom": "raw.dump", "sql": "raw.sql.gz", "directory": "raw.dir"}


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def pg_dump(pg: PgClient, fmt: str, target: Path) -> None:
    """Stock pg_dump in the format `inv db.backup --format FMT` writes."""
    flags = {
        "custom": ["-Fc"],
        "sql": ["-Fp", "-Z", "6"],
        "directory": ["-Fd", "-j", "2"],
    }[fmt]
    run(pg.argv("pg_dump", *flags, "-f", str(target), pg.database), env=pg.env())


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def restore_raw(pg: PgClient, fmt: str, source: Path, database: str) -> None:
    """Stock pg_restore -j 2 (custom, directory), or gunzip | psql (sql), into `database`."""
    if fmt == "sql":
        run_pipe(["gunzip", "-c", str(source)], pg.psql_argv(database=database), env=pg.env())
    else:
        run(pg.argv("pg_restore", "-j", "2", "-d", database, str(source)), env=pg.env())


def create_empty(pg: PgClient, database: str) -> None:
    pg.query(f'CREATE DATABASE "{database}" TEMPLATE template0', database="postgres")


def drop(pg: PgClient, database: str) -> None:
    with contextlib.suppress(BenchError):
        pg.query(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)', database="postgres")
