"""PostgreSQL 15 from the host's binaries: initdb and the init scripts once, then pg_ctl.

Runs as the servers' account when root starts the stack. Its data dir, private socket and
first-start secrets live in the server home (layout.py); its log is opened by the tasks.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.backends.native.layout import Layout
from scripts.console import display_path
from scripts.errors import StackError
from scripts.infra import crashpoints, procs, run, wait

if TYPE_CHECKING:
    from scripts.settings import Settings

INIT_SCRIPTS = "docker/init-scripts"
PG_HBA = """\
# Written by the stack at every start; edits are overwritten.
# TCP: password (SCRAM) authentication for every connection.
# The private Unix socket (a 0700 directory of the server's account): peer authentication
# of the account that runs the tasks, as pg_ident.conf maps it. It is how the tasks reach
# the server without a password, e.g. to apply a password changed in the env file.
# TYPE  DATABASE  USER  ADDRESS  METHOD
local   all       all            peer map=stack
host    all       all   all      scram-sha-256
"""
PG_IDENT = """\
# Written by the stack at every start; edits are overwritten.
# MAPNAME  SYSTEM-USERNAME  PG-USERNAME
stack      {os_user}  {admin}
stack      {os_user}  {app}
"""


class Postgres:
    def __init__(self, settings: Settings, layout: Layout) -> None:
        self.settings = settings
        self.layout = layout

    @property
    def data(self) -> Path:
        return self.layout.pg_data

    @property
    def initialising(self) -> Path:
        return self.data.with_name(self.data.name + ".initialising")

    def bindir(self) -> Path:
        from scripts.infra import prerequisites

        bindir = prerequisites.postgres_bindir()
        if bindir is None:
            raise StackError(
                f"PostgreSQL {prerequisites.PG_MAJOR} server binaries were not found: "
                "run `inv setup` to install them."
            )
        return bindir

    def pid(self) -> int | None:
        """The postmaster's pid when our server runs, else None."""
        pid = procs.read_pid(self.data / "postmaster.pid")
        if pid is None or not procs.alive(pid):
            return None
        if not procs.command_name(pid).startswith(("postgres", "postmaster")):
            return None  # a stale pid file whose number now belongs to another program
        return pid

    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    # --- start and stop ---------------------------------------------------------------------

    def start(self, *, wait: bool = False) -> tuple[int, run.Process | None]:
        """Initialise on the first start, then start; returns the log's size just before the
        real start (what the server logs from there on is this start's) and, unless `wait`,
        pg_ctl still running: its exit status is the caller's to look at."""
        if not self.initialised():
            self._initialise()
        self._clear_stale_lock()
        self._write_auth_files(self.data)
        self.layout.private_dir(self.layout.socket_dir)
        log = self.layout.log("postgres")
        offset = log.stat().st_size if log.exists() else 0
        return offset, self._pg_ctl_start(self.data, self.settings.bind_address, wait=wait)

    def _pg_ctl_start(self, data: Path, listen: str, *, wait: bool = False) -> run.Process | None:
        """pg_ctl start. With `wait`, returns once the server accepts connections. Without,
        returns pg_ctl itself, not waited for: it takes 35 ms to hand the server over, in
        which Redis starts too, and our probes wait for the server anyway. Its output, and
        the server's, go to our log (opened here)."""
        options = shlex.join(
            [
                "-p",
                str(self.settings.postgres_port),
                "-c",
                f"listen_addresses={listen}",
                "-c",
                f"unix_socket_directories={self.layout.socket_dir}",
                "-c",
                "unix_socket_permissions=0700",
                "-c",
                "log_timezone=UTC",  # `inv logs` orders the services' lines by their times
            ]
        )  # pg_ctl hands -o to a shell: quoted for one
        argv = [str(self.bindir() / "pg_ctl"), "start", "-D", str(data), "-o", options, "-s"]
        argv += ["-w", "-t", "60"] if wait else ["-W"]
        log = self.layout.log("postgres")
        proc = run.spawn(argv, log, run_as=self.layout.run_as)
        if not wait:
            return proc
        if proc.wait(timeout=90) != 0:
            last = run.last_line("\n".join(procs.tail(log)))
            raise StackError(f"PostgreSQL did not start: {last}. See {display_path(log)}.")
        return None

    def stop(self, *, mode: str = "fast") -> bool:
        """pg_ctl stop (fast: open transactions roll back, a checkpoint, exit); True when a
        server ran."""
        if self.pid() is None:
            return False
        self._pg_ctl_stop(self.data, mode)
        return True

    def _pg_ctl_stop(self, data: Path, mode: str) -> None:
        """pg_ctl sends the signal (-W: without waiting); the wait is ours, because pg_ctl -w
        looks for the pid file every 100 ms, which was 0.107 s of every 0.11 s `inv down`
        spent on PostgreSQL, against 0.03 s when polled every 10 ms."""
        pid = procs.read_pid(data / "postmaster.pid")
        argv = [str(self.bindir() / "pg_ctl"), "stop", "-D", str(data), "-m", mode, "-W", "-s"]
        run.run(argv, run_as=self.layout.run_as)
        if pid is None or not procs.command_name(pid).startswith(("postgres", "postmaster")):
            return  # no server, or a stale pid file whose number another program has now
        if not procs.wait_gone(pid, 60):
            procs.stop(pid, signal.SIGQUIT, 10, signal.SIGKILL)  # not down in 60 s: immediate

    def _clear_stale_lock(self) -> None:
        """After a crash or SIGKILL: wait for the old server's processes, drop its lock files.

        Its children notice the postmaster's death and exit within moments; until then they
        hold shared memory, and starting beside them would be refused (or worse). Once no
        process works in the data dir, postmaster.pid is stale even if its pid is a zombie
        or was reused by another program, either of which would make PostgreSQL refuse; so
        is the lock file of its private socket.
        """
        lock = self.data / "postmaster.pid"
        socket_lock = self.layout.socket_dir / f".s.PGSQL.{self.settings.postgres_port}.lock"
        if not lock.exists() and not socket_lock.exists():
            return
        if wait.until(lambda: not procs.working_in(self.data) or None, timeout=10) is None:
            pids = " ".join(map(str, procs.working_in(self.data)))
            raise StackError(
                f"Processes {pids} of an earlier PostgreSQL still use "
                f"{display_path(self.data)}: stop them (kill {pids}) and run the command again."
            )
        lock.unlink(missing_ok=True)
        socket_lock.unlink(missing_ok=True)

    def _write_auth_files(self, data: Path) -> None:
        """pg_hba.conf and pg_ident.conf, at every start: the account running the tasks (this
        process's) maps to both roles on the private socket."""
        os_user = pwd.getpwuid(os.geteuid()).pw_name
        ident = PG_IDENT.format(
            os_user=_ident_name(os_user),
            admin=_ident_name(self.settings.postgres_admin_user),
            app=_ident_name(self.settings.postgres_user),
        )
        for name, text in (("pg_hba.conf", PG_HBA), ("pg_ident.conf", ident)):
            _write_private(data / name, text, self.layout)

    # --- the first start ----------------------------------------------------------------------

    def _initialise(self) -> None:
        """initdb, then the init scripts on a server only the private socket reaches; then the
        data dir gets its final name. A failed script leaves nothing half-initialised behind
        and the next start tries again; so does a first start killed half-way, whose server
        is stopped here."""
        work = self.initialising
        self._abandon_interrupted(work)
        if self.data.exists():
            raise StackError(
                f"{display_path(self.data)} exists but holds no database (an interrupted "
                "deletion?): remove it (`inv reset --yes --no-backup`) and start again."
            )
        work.mkdir(mode=0o700)  # in the server home, which Layout.prepare made
        if self.layout.run_as is not None:
            self.layout.run_as.chown(work)
        secrets = self.layout.private_dir(self.layout.secrets)
        try:
            pwfile = secrets / "pw"
            _write_private(
                pwfile, self.settings.postgres_admin_password.reveal() + "\n", self.layout
            )
            self._initdb(work, pwfile)
        finally:
            shutil.rmtree(secrets, ignore_errors=True)
        self._write_auth_files(work)
        self.layout.private_dir(self.layout.socket_dir)
        try:
            self._pg_ctl_start(work, "", wait=True)
            crashpoints.reached("postgres.first-start.running")
            self._run_init_scripts()
            self._pg_ctl_stop(work, "fast")
        except BaseException:
            self._pg_ctl_stop(work, "immediate")
            shutil.rmtree(work, ignore_errors=True)
            raise
        work.rename(self.data)

    def _abandon_interrupted(self, work: Path) -> None:
        shutil.rmtree(self.layout.secrets, ignore_errors=True)  # a killed start's password file
        if not work.exists():
            return
        if (pid := procs.read_pid(work / "postmaster.pid")) and procs.alive(pid):
            self._pg_ctl_stop(work, "immediate")
            procs.wait_gone(pid, 10)
            from scripts.console import say

            say(
                "info",
                f"Stopped the server of an interrupted first start (pid {pid}); starting over.",
            )
        shutil.rmtree(work, ignore_errors=True)

    def _initdb(self, work: Path, pwfile: Path) -> None:
        from scripts.infra import prerequisites

        s = self.settings
        result = run.run(
            [
                str(self.bindir() / "initdb"),
                "-D",
                str(work),
                "-U",
                s.postgres_admin_user,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                f"--locale={prerequisites.server_locale()}",
                "--no-instructions",
            ],
            run_as=self.layout.run_as,
        )
        if result.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            raise StackError(
                f"initdb failed: {run.last_line(result.stderr)}. See "
                f"{display_path(self.layout.log('postgres'))} and check that the disk has space."
            )

    def _run_init_scripts(self) -> None:
        s = self.settings
        bindir = self.bindir()
        # As the postgres image runs them: POSTGRES_USER is the superuser (peer-authenticated
        # on the private socket), the application's role comes as POSTGRES_APP_*.
        env = {
            **pg_free_environ(),
            "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
            "PGHOST": str(self.layout.socket_dir),
            "PGPORT": str(s.postgres_port),
            "PGUSER": s.postgres_admin_user,
            "PGDATABASE": "postgres",
            "POSTGRES_USER": s.postgres_admin_user,
            "POSTGRES_DB": s.postgres_base_db,
            "POSTGRES_APP_USER": s.postgres_user,
            "POSTGRES_APP_PASSWORD": s.postgres_password.reveal(),
        }
        psql = [str(bindir / "psql"), "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "--no-password"]
        if s.postgres_base_db != "postgres":
            create = run.run(
                [*psql, "-q", "-v", f"db={s.postgres_base_db}"],
                env=env,
                input_text='CREATE DATABASE :"db";\n',  # psql quotes the name (stdin only)
            )
            if create.returncode != 0:
                raise StackError(
                    f"Could not create database {s.postgres_base_db!r}: {create.stderr}"
                )
        env["PGDATABASE"] = s.postgres_base_db
        log = self.layout.log("postgres")
        scripts_dir = s.root / INIT_SCRIPTS
        for script in sorted(scripts_dir.iterdir()):
            if script.name.endswith(".sql"):
                argv, stdin = [*psql, "-f", str(script)], None
            elif script.name.endswith(".sql.gz"):
                import gzip

                argv, stdin = psql, gzip.decompress(script.read_bytes()).decode()
            elif script.name.endswith(".sh"):
                argv, stdin = ["bash", str(script)], None
            else:
                continue
            result = run.run(argv, env=env, input_text=stdin)
            with os.fdopen(run.open_log(log), "a") as out:
                out.write(f"init script {script.name}:\n{result.stdout}{result.stderr}")
            if result.returncode != 0:
                raise StackError(
                    f"Init script {script.relative_to(s.root)} failed: "
                    f"{_psql_error(result.stderr)}. Nothing was kept; fix the script and "
                    "run the command again."
                )

    # --- passwords and clients ---------------------------------------------------------------

    def apply_passwords(self) -> str:
        """Both roles' passwords from the env file, over the private socket, as the admin (or,
        on a stack from before the admin role, as the application's role, then its superuser)."""
        import psycopg

        from scripts.infra.database import describe, password_sql

        s = self.settings
        socket = self.layout.socket_dir / f".s.PGSQL.{s.postgres_port}"
        if not socket.exists():  # started before the stack had its private socket
            self.stop()
            self.start(wait=True)
        failure: Exception | None = None
        for user in (s.postgres_admin_user, s.postgres_user):
            try:
                with psycopg.connect(
                    host=str(self.layout.socket_dir),
                    port=s.postgres_port,
                    user=user,
                    dbname="postgres",
                    autocommit=True,
                    connect_timeout=10,
                ) as conn:
                    conn.execute(password_sql(s).encode())
                    return "over the server's private socket"
            except psycopg.Error as exc:
                failure = exc
        raise StackError(
            f"PostgreSQL refuses the passwords in {display_path(s.env_file)}, and applying them "
            f"over the server's socket failed ({describe(failure) if failure else 'no role'}): "
            f"put the old passwords back, or see {display_path(self.layout.log('postgres'))}."
        )

    def pg_command(
        self, tool: str, args: Sequence[str], login: tuple[str, str] | None = None
    ) -> tuple[list[str], dict[str, str]]:
        s = self.settings
        user, password = login or (s.postgres_user, s.postgres_password.reveal())
        argv = [str(self.bindir() / tool), "-h", s.connect_host, "-p", str(s.postgres_port)]
        argv += ["-U", user, *args]
        return argv, {**pg_free_environ(), "PGPASSWORD": password}


def pg_free_environ() -> dict[str, str]:
    """This process's environment without libpq's PG* variables: a PGHOSTADDR, PGSERVICE or
    PGDATABASE of the user's must not send a pg tool of the stack anywhere else."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


def _write_private(path: Path, text: str, layout: Layout) -> None:
    """A file readable by the servers' account alone (created 0600, then given to it)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    if layout.run_as is not None:
        layout.run_as.chown(path)


def _ident_name(name: str) -> str:
    """A name as pg_ident.conf writes it (double quotes keep spaces and capitals)."""
    return name if re.fullmatch(r"[a-z0-9_]+", name) else '"' + name.replace('"', '""') + '"'


def _psql_error(stderr: str) -> str:
    """psql's first error, as 'ERROR: ... (line N)', without the context lines around it."""
    for line in stderr.splitlines():
        match = re.match(
            r"^(?:psql:[^:]*:(?P<line>\d+): )?(?P<level>ERROR|FATAL):\s+(?P<text>.*)", line
        )
        if match:
            where = f" (line {match['line']})" if match["line"] else ""
            return f"{match['level']}: {match['text']}{where}"
    return run.last_line(stderr)
