"""The native backend: PostgreSQL 15, redis-server and php -S as local processes of this project.

State lives in the state dir (data dirs, logs, pid files). Runs the same init scripts as the
postgres image, once, on first initialisation, against a socket-only server nobody else sees.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from scripts import ports, prerequisites, processes
from scripts.backends import SERVICES, ServiceState
from scripts.console import display_path as _display
from scripts.errors import StackError
from scripts.processes import RunAs
from scripts.settings import url_host

if TYPE_CHECKING:
    from scripts.settings import Settings

INIT_SCRIPTS = "docker/init-scripts"
REDIS_CONF = "docker/redis/redis.conf"
RELOCATED_ROOT = Path("/var/lib/ai-marketplace-stack")
_PG_HBA = """\
# Written by the stack at every start; edits are overwritten.
# TCP: password (SCRAM) authentication for every connection.
# The private Unix socket (a 0700 directory of the server's account): peer authentication
# of the account that runs the tasks, as pg_ident.conf maps it. It is how the tasks reach
# the server without a password, e.g. to apply a password changed in the env file.
# TYPE  DATABASE  USER  ADDRESS  METHOD
local   all       all            peer map=stack
host    all       all   all      scram-sha-256
"""
_PG_IDENT = """\
# Written by the stack at every start; edits are overwritten.
# MAPNAME  SYSTEM-USERNAME  PG-USERNAME
stack      {os_user}  {role}
"""
# A Unix socket's path must fit in sockaddr_un (107 bytes on Linux, 103 on macOS).
_SOCKET_PATH_MAX = 100
_ADMINER_WRAPPER = """\
<?php
// Written by the stack: Adminer with this stack's PostgreSQL pre-filled on the login form.
function adminer_object() {{
    class StackAdminer extends Adminer {{
        function loginFormField($name, $heading, $value) {{
            if ($name == 'driver' && !isset($_GET['pgsql'])) {{
                $value = str_replace(' selected', '', $value);
                $value = str_replace('value="pgsql"', 'value="pgsql" selected', $value);
            }}
            if ($name == 'server' && SERVER == '') {{
                $value = str_replace('value=""', 'value="{server}"', $value);
            }}
            return parent::loginFormField($name, $heading, $value);
        }}
    }}
    return new StackAdminer;
}}
include {adminer};
"""


class NativeBackend:
    name = "native"
    local_files = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = settings.state_dir
        self.logs_dir = self.state / "logs"
        self.run_dir = self.state / "run"
        self.redis_data = self.state / "redis_data"
        self.run_as = RunAs.for_server()
        self._spawned: dict[str, subprocess.Popen[bytes]] = {}

    # --- where things are -----------------------------------------------------------------

    def where(self) -> str:
        return f"state dir {_display(self.state)}"

    def log_file(self, service: str) -> Path:
        return self.logs_dir / f"{service}.log"

    @property
    def pg_data(self) -> Path:
        """The data directory, or where it will be created.

        When this process is root the server runs as an unprivileged account, which may be
        unable to enter the state dir (a checkout under /root, a 0700 temp dir). The data then
        lives under /var/lib and state_dir/postgres_data is a symlink to it.
        """
        link = self.state / "postgres_data"
        if link.is_symlink():
            return link.resolve()
        if link.exists() or self.run_as is None or self.run_as.can_enter(self.state):
            return link
        digest = hashlib.sha256(str(self.state).encode()).hexdigest()[:10]
        return RELOCATED_ROOT / f"{self.settings.project}-{digest}" / "postgres_data"

    @property
    def socket_dir(self) -> Path:
        """The private directory of the server's Unix socket (see _PG_HBA): beside the data
        dir, or, where that path is too long for a socket, a directory named after it in /tmp
        (a socket holds no secret; the directory is checked to be the server account's)."""
        near = self.pg_data.parent / "pg_socket"
        if len(str(near / f".s.PGSQL.{self.settings.postgres_port}")) <= _SOCKET_PATH_MAX:
            return near
        digest = hashlib.sha256(str(near).encode()).hexdigest()[:16]
        return Path("/tmp") / f"aim-pg-{digest}"  # noqa: S108 - checked by _private_socket_dir

    def _bindir(self) -> Path:
        bindir = prerequisites.postgres_bindir()
        if bindir is None:
            raise StackError(
                f"PostgreSQL {prerequisites.PG_MAJOR} server binaries were not found: "
                "run `inv setup` to install them."
            )
        return bindir

    # --- state ------------------------------------------------------------------------------

    def _pid(self, service: str) -> int | None:
        """The pid of our running server for `service`, or None."""
        if service == "postgres":
            pid = processes.read_pid(self.pg_data / "postmaster.pid")
            expected: tuple[str, ...] = ("postgres", "postmaster")
        else:
            pid = processes.read_pid(self.run_dir / f"{service}.pid")
            expected = ("redis-server",) if service == "redis" else ("php",)
        if pid is None or not processes.alive(pid):
            return None
        if not processes.command_name(pid).startswith(expected):
            return None  # a stale pid file whose number now belongs to another program
        return pid

    def states(self, *, sizes: bool = True) -> dict[str, ServiceState]:
        result = {}
        for service in SERVICES:
            pid = self._pid(service)
            data = {"postgres": self.pg_data, "redis": self.redis_data}.get(service)
            size = _disk_usage(data) if sizes and data is not None and data.exists() else None
            if pid is not None:
                state = ServiceState(service, True, "running", f"pid {pid}", size)
            elif service == "postgres" and not (self.pg_data / "PG_VERSION").exists():
                state = ServiceState(service, False, "not created", "", size)
            else:
                state = ServiceState(service, False, "stopped", "", size)
            result[service] = state
        return result

    # --- start ------------------------------------------------------------------------------

    def start(self, services: Sequence[str]) -> list[str]:
        wanted = [s for s in SERVICES if s in services and self._pid(s) is None]
        if not wanted:
            return []
        self._check_tools(wanted)
        ports.ensure_free(self.settings, wanted)
        for directory in (self.state, self.logs_dir, self.run_dir, self.redis_data):
            directory.mkdir(parents=True, exist_ok=True)
        started: list[str] = []
        try:
            for service in wanted:
                getattr(self, f"_start_{service}")()
                started.append(service)
        except BaseException:
            self.stop(started)
            raise
        return started

    def _check_tools(self, services: Sequence[str]) -> None:
        """Only that the programs exist: cheap enough for every start (versions are checked
        by `inv setup` and `inv validate`)."""
        needed = {
            "postgres": [("PostgreSQL 15 server", prerequisites.postgres_bindir() is not None)],
            "redis": [("redis-server", shutil.which("redis-server") is not None)],
            "adminer": [
                ("php", shutil.which("php") is not None),
                ("adminer.php", prerequisites.adminer_php().is_file()),
            ],
        }
        missing = [name for s in services for name, found in needed[s] if not found]
        if missing:
            raise StackError(
                f"Missing for the native backend: {', '.join(missing)}. Run `inv setup` first."
            )

    def _start_postgres(self) -> None:
        data = self.pg_data
        if not (data / "PG_VERSION").exists():
            self._initialise_postgres(data)
        self._clear_stale_lock(data)
        self._write_auth_files(data)
        sockets = _private_socket_dir(self.socket_dir, self.run_as)
        self._spawned["postgres"] = processes.spawn(
            self._postgres_argv(data, self.settings.bind_address, str(sockets)),
            self.log_file("postgres"),
            run_as=self.run_as,
        )

    def _write_auth_files(self, data: Path) -> None:
        """pg_hba.conf and pg_ident.conf, at every start: the account running the tasks (this
        process's) maps to the stack's role on the private socket."""
        os_user = pwd.getpwuid(os.geteuid()).pw_name
        files = {
            "pg_hba.conf": _PG_HBA,
            "pg_ident.conf": _PG_IDENT.format(
                os_user=_ident_name(os_user), role=_ident_name(self.settings.postgres_user)
            ),
        }
        for name, text in files.items():
            _write_private(data / name, text, self.run_as)

    def _clear_stale_lock(self, data: Path) -> None:
        """After a crash or SIGKILL: wait for the old server's processes, drop its lock file.

        Its children notice the postmaster's death and exit within moments; until then they
        hold shared memory, and starting beside them would be refused (or worse). Once no
        process works in the data dir, postmaster.pid is stale even if its pid is a zombie
        or was reused by another program, either of which would make PostgreSQL refuse; so
        is the lock file of its private socket.
        """
        lock = data / "postmaster.pid"
        socket_lock = self.socket_dir / f".s.PGSQL.{self.settings.postgres_port}.lock"
        if not lock.exists() and not socket_lock.exists():
            return
        deadline = time.monotonic() + 10
        while users := processes.working_in(data):
            if time.monotonic() > deadline:
                raise StackError(
                    f"Processes {', '.join(map(str, users))} of an earlier PostgreSQL still use "
                    f"{_display(data)}: stop them (kill {' '.join(map(str, users))}) and run "
                    "the command again."
                )
            time.sleep(0.05)
        lock.unlink(missing_ok=True)
        socket_lock.unlink(missing_ok=True)

    def _postgres_argv(self, data: Path, listen: str, sockets: str = "") -> list[str]:
        return [
            str(self._bindir() / "postgres"),
            "-D",
            str(data),
            "-p",
            str(self.settings.postgres_port),
            "-c",
            f"listen_addresses={listen}",
            "-c",
            f"unix_socket_directories={sockets}",
        ]

    def _initialise_postgres(self, data: Path) -> None:
        """initdb, then the init scripts on a server only a private socket reaches; then swap in.

        The directory only gets its final name once every script has succeeded, so a failed
        script leaves nothing half-initialised behind and the next start tries again.
        """
        s = self.settings
        bindir = self._bindir()
        work = data.with_name(data.name + ".initialising")
        shutil.rmtree(work, ignore_errors=True)
        work.parent.mkdir(parents=True, exist_ok=True)
        work.mkdir(mode=0o700)
        if self.run_as is not None:
            self.run_as.chown(work)
        log = self.log_file("postgres")
        with _private_dir(self.run_as) as secrets_dir, _private_dir(self.run_as) as sockets:
            pwfile = secrets_dir / "pw"
            _write_private(pwfile, s.postgres_password.reveal() + "\n", self.run_as)
            result = processes.run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(work),
                    "-U",
                    s.postgres_user,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "--no-instructions",
                ],
                run_as=self.run_as,
            )
            pwfile.unlink()
            if result.returncode != 0:
                shutil.rmtree(work, ignore_errors=True)
                raise StackError(
                    f"initdb failed: {processes.last_line(result.stderr)}. See {_display(log)} "
                    "and check that the disk has space."
                )
            self._write_auth_files(work)
            server = processes.spawn(
                self._postgres_argv(work, "", str(sockets)), log, run_as=self.run_as
            )
            try:
                self._run_init_scripts(bindir, sockets, server, log)
            except BaseException:
                processes.stop(server.pid, signal.SIGQUIT, 10, signal.SIGKILL)
                shutil.rmtree(work, ignore_errors=True)
                raise
            processes.stop(server.pid, signal.SIGINT, 60, signal.SIGQUIT)
        work.rename(data)
        link = self.state / "postgres_data"
        if data != link:
            link.unlink(missing_ok=True)
            link.symlink_to(data)

    def _run_init_scripts(
        self, bindir: Path, sockets: Path, server: subprocess.Popen[bytes], log: Path
    ) -> None:
        s = self.settings
        env = {
            **pg_free_environ(),
            "PGHOST": str(sockets),
            "PGPORT": str(s.postgres_port),
            "PGUSER": s.postgres_user,
            "PGPASSWORD": s.postgres_password.reveal(),
            "PGDATABASE": "postgres",
            "POSTGRES_USER": s.postgres_user,
            "POSTGRES_DB": s.postgres_db,
        }
        psql = [str(bindir / "psql"), "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "--no-password"]
        deadline = time.monotonic() + 60
        while processes.run([*psql, "-qAtc", "SELECT 1"], env=env).returncode != 0:
            if server.poll() is not None:
                raise StackError(
                    f"PostgreSQL did not start for its first initialisation: "
                    f"{processes.last_line(chr(10).join(processes.tail(log)))}. "
                    f"See {_display(log)}."
                )
            if time.monotonic() > deadline:
                raise StackError(f"PostgreSQL did not start within 60 s: see {_display(log)}.")
            time.sleep(0.05)
        if s.postgres_db != "postgres":
            create = processes.run(
                [*psql, "-q", "-v", f"db={s.postgres_db}"],
                env=env,
                input_text='CREATE DATABASE :"db";\n',  # psql quotes the name (stdin only)
            )
            if create.returncode != 0:
                raise StackError(f"Could not create database {s.postgres_db!r}: {create.stderr}")
        env["PGDATABASE"] = s.postgres_db
        scripts_dir = s.root / INIT_SCRIPTS
        for script in sorted(scripts_dir.iterdir()):
            if script.name.endswith(".sql"):
                argv = [*psql, "-f", str(script)]
                stdin = None
            elif script.name.endswith(".sql.gz"):
                import gzip

                argv, stdin = psql, gzip.decompress(script.read_bytes()).decode()
            elif script.name.endswith(".sh"):
                argv, stdin = ["bash", str(script)], None
            else:
                continue
            result = processes.run(argv, env=env, input_text=stdin)
            with log.open("a") as out:
                out.write(f"init script {script.name}:\n{result.stdout}{result.stderr}")
            if result.returncode != 0:
                raise StackError(
                    f"Init script {script.relative_to(s.root)} failed: "
                    f"{_psql_error(result.stderr)}. Nothing was kept; fix the script and "
                    "run the command again."
                )

    def _start_redis(self) -> None:
        s = self.settings
        conf = self.state / "redis.conf"
        lines = [
            "# Written by the stack at every start from the env file; do not edit.",
            f'include "{s.root / REDIS_CONF}"',
            f"bind {s.bind_address}",
            f"port {s.redis_port}",
            f'dir "{self.redis_data}"',
            f'pidfile "{self.run_dir / "redis.pid"}"',
            'logfile ""',
            "daemonize no",
            f"requirepass {_redis_quote(s.redis_password.reveal())}",
        ]
        _write_private(conf, "\n".join(lines) + "\n", None)
        (self.run_dir / "redis.pid").unlink(missing_ok=True)
        redis_server = shutil.which("redis-server") or "redis-server"
        self._spawned["redis"] = processes.spawn([redis_server, str(conf)], self.log_file("redis"))

    def _start_adminer(self) -> None:
        s = self.settings
        page = prerequisites.fetch_adminer()  # checks the recorded sha256 (fetches on mismatch)
        wrapper_dir = self.state / "adminer"
        sessions = wrapper_dir / "php"  # this stack's own sessions and login-attempt counter
        sessions.mkdir(parents=True, exist_ok=True, mode=0o700)
        wrapper = wrapper_dir / "index.php"
        server = f"{s.connect_host}:{s.postgres_port}"
        wrapper.write_text(_ADMINER_WRAPPER.format(server=server, adminer=_php_string(page)))
        host = url_host(s.bind_address)
        php = shutil.which("php") or "php"
        proc = processes.spawn(
            [
                php,
                "-d",
                f"sys_temp_dir={sessions}",
                "-d",
                f"session.save_path={sessions}",
                "-S",
                f"{host}:{s.adminer_port}",
                "-t",
                str(wrapper_dir),
                str(wrapper),
            ],
            self.log_file("adminer"),
        )
        (self.run_dir / "adminer.pid").write_text(f"{proc.pid}\n")
        self._spawned["adminer"] = proc

    def exit_reason(self, service: str) -> str | None:
        proc = self._spawned.get(service)
        if proc is None or proc.poll() is None:
            return None
        last = processes.tail(self.log_file(service), 3)
        detail = last[-1] if last else f"exit code {proc.returncode}"
        return f"{service} exited: {detail} (see {_display(self.log_file(service))})"

    def ownership_problem(self) -> str | None:
        return None  # the state dir is this checkout's own

    def check_owner(self) -> None:
        return None

    def apply_password(self, service: str) -> str:
        """Make a running service take the password in the env file; say how it was done.

        PostgreSQL keeps the password it was first given in its data: it is changed over the
        private socket, where the server knows this account without a password. Redis reads
        it from its config file, which every start writes from the env file: a restart does.
        """
        if service == "redis":
            self.stop(["redis"])
            self.start(["redis"])
            return "restarted"
        socket = self.socket_dir / f".s.PGSQL.{self.settings.postgres_port}"
        if not socket.exists():  # started before the stack had its private socket
            self.stop(["postgres"])
            self.start(["postgres"])
        _alter_password(self.settings, str(self.socket_dir), self.log_file("postgres"))
        return "over the server's private socket"

    # --- stop -------------------------------------------------------------------------------

    def stop(self, services: Sequence[str] = SERVICES) -> list[str]:
        stopped = []
        for service in reversed(SERVICES):  # adminer, redis, then postgres
            if service not in services:
                continue
            pid = self._pid(service)
            if pid is None:
                continue
            if service == "postgres":
                # SIGINT = "fast" shutdown: roll back open transactions, checkpoint, exit.
                processes.stop(pid, signal.SIGINT, 60, signal.SIGQUIT)
            else:
                # Redis saves (AOF fsync + RDB) on SIGTERM; php has nothing to save.
                processes.stop(pid, signal.SIGTERM, 30, signal.SIGKILL)
            stopped.append(service)
        for service in ("redis", "adminer"):
            if service in services and self._pid(service) is None:
                (self.run_dir / f"{service}.pid").unlink(missing_ok=True)
        return stopped

    def clean(self) -> list[str]:
        self.stop()
        removed = []
        candidates = [
            self.logs_dir,
            self.run_dir,
            self.state / "adminer",
            self.state / "redis.conf",
            self.pg_data.with_name(self.pg_data.name + ".initialising"),
        ]
        pid_file = self.pg_data / "postmaster.pid"
        if pid_file.exists() and self._pid("postgres") is None:
            candidates.append(pid_file)
        if self._pid("postgres") is None:
            candidates.append(self.socket_dir)
        for path in candidates:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            else:
                continue
            removed.append(_display(path))
        return removed

    def has_database(self) -> bool:
        return (self.pg_data / "PG_VERSION").exists()

    def destroy(self) -> list[str]:
        self.stop()
        removed = []
        data = self.pg_data
        link = self.state / "postgres_data"
        for path in (data, self.redis_data, link):
            if path.is_symlink():
                path.unlink()
            elif path.exists():
                shutil.rmtree(path)
            else:
                continue
            removed.append(_display(path))
        if data != link and data.parent.is_dir() and not any(data.parent.iterdir()):
            data.parent.rmdir()
        removed += self.clean()
        return removed

    # --- clients ----------------------------------------------------------------------------

    def logs(self, services: Sequence[str], follow: bool, tail: int) -> None:
        width = max(len(s) for s in services)
        files = {s: self.log_file(s) for s in services}
        offsets: dict[str, int] = {}
        for service, path in files.items():
            for line in processes.tail(path, tail) if tail else []:
                print(f"{service:<{width}} | {line}")
            offsets[service] = path.stat().st_size if path.exists() else 0
        if not follow:
            return
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                for service, path in files.items():
                    offsets[service] = _print_new(service, width, path, offsets[service])
                time.sleep(0.2)

    def pg_command(self, tool: str, args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        s = self.settings
        argv = [str(self._bindir() / tool), "-h", s.connect_host, "-p", str(s.postgres_port)]
        argv += ["-U", s.postgres_user, *args]
        return argv, {**pg_free_environ(), "PGPASSWORD": s.postgres_password.reveal()}

    @contextlib.contextmanager
    def pg_input(self, local: Path) -> Iterator[str]:
        yield str(local)  # the tools run on this machine

    @contextlib.contextmanager
    def pg_output_dir(self, local: Path) -> Iterator[str]:
        yield str(local)

    def copy_service_file(self, service: str, relative: str, target: Path) -> None:
        data = {"postgres": self.pg_data, "redis": self.redis_data}[service]
        shutil.copyfile(data / relative, target)

    def psql(self, sql: str | None, extra: Sequence[str] = ()) -> int:
        args = ["-d", self.settings.postgres_db, *extra]
        if sql is not None:
            args += ["-v", "ON_ERROR_STOP=1", "-c", sql]
        return _run_interactive(*self.pg_command("psql", args))

    def redis_cli(self, args: Sequence[str]) -> int:
        s = self.settings
        cli = shutil.which("redis-cli")
        if cli is None:
            raise StackError("redis-cli was not found: run `inv setup` to install it.")
        argv = [cli, "-h", s.connect_host, "-p", str(s.redis_port), *args]
        env = {**os.environ, "REDISCLI_AUTH": s.redis_password.reveal()}
        return _run_interactive(argv, env)


def pg_free_environ() -> dict[str, str]:
    """This process's environment without libpq's PG* variables: a PGHOSTADDR, PGSERVICE or
    PGDATABASE of the user's must not send a pg tool of the stack anywhere else."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


def _run_interactive(argv: list[str], env: dict[str, str]) -> int:
    """Run a client in this terminal; Ctrl-C belongs to it, not to us."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.run(argv, env=env, check=False).returncode
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _private_dir(run_as: RunAs | None) -> Iterator[Path]:
    """A short-pathed private temp dir the server account owns (a socket path is <108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="aim-pg-", dir="/tmp"))
    try:
        if run_as is not None:
            run_as.chown(path)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _write_private(path: Path, text: str, run_as: RunAs | None) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    if run_as is not None:
        run_as.chown(path)


def _alter_password(settings: Settings, sockets: str, log: Path) -> None:
    import psycopg
    from psycopg import sql

    from scripts.database import describe
    from scripts.probes import scram_verifier

    role = settings.postgres_user
    try:
        with psycopg.connect(
            host=sockets,
            port=settings.postgres_port,
            user=role,
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(role),
                    sql.Literal(scram_verifier(settings.postgres_password.reveal())),
                )
            )
    except psycopg.Error as exc:
        raise StackError(
            f"PostgreSQL refuses the password in {_display(settings.env_file)}, and applying it "
            f"over the server's socket failed ({describe(exc)}): put the old POSTGRES_PASSWORD "
            f"back, or see {_display(log)}."
        ) from None


def _ident_name(name: str) -> str:
    """A name as pg_ident.conf writes it (double quotes keep spaces and capitals)."""
    return name if re.fullmatch(r"[a-z0-9_]+", name) else '"' + name.replace('"', '""') + '"'


def _private_socket_dir(path: Path, run_as: RunAs | None) -> Path:
    """Create (or check) a directory only the server's account may use: mode 0700, its owner,
    not a symlink. One that someone else made first (in /tmp) is refused."""
    owner = os.geteuid() if run_as is None else run_as.uid
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700, parents=False)
        if run_as is not None:
            run_as.chown(path)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (owner, os.geteuid()):
        raise StackError(
            f"{path} belongs to someone else (uid {st.st_uid}) or is no directory: remove it "
            "and start again."
        )
    if st.st_uid != owner and run_as is not None:
        run_as.chown(path)
    path.chmod(0o700)
    return path


def _redis_quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _php_string(path: Path) -> str:
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _print_new(service: str, width: int, path: Path, offset: int) -> int:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size < offset:
        offset = 0  # truncated or replaced
    if size == offset:
        return offset
    with path.open("rb") as handle:
        handle.seek(offset)
        chunk = handle.read()
    complete, _, _ = chunk.rpartition(b"\n")
    if not complete:
        return offset
    for line in complete.decode("utf-8", "replace").split("\n"):
        print(f"{service:<{width}} | {line}")
    sys.stdout.flush()
    return offset + len(complete) + 1


def _disk_usage(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512  # noqa: PTH118
    return total


def _psql_error(stderr: str) -> str:
    """psql's first error, as 'ERROR: ... (line N)', without the context lines around it."""
    for line in stderr.splitlines():
        match = re.match(
            r"^(?:psql:[^:]*:(?P<line>\d+): )?(?P<level>ERROR|FATAL):\s+(?P<text>.*)", line
        )
        if match:
            where = f" (line {match['line']})" if match["line"] else ""
            return f"{match['level']}: {match['text']}{where}"
    return processes.last_line(stderr)
