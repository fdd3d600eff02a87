"""The native backend: PostgreSQL 15, redis-server and php -S as local processes of this project.

One class per server (postgres.py, redis.py, adminer.py), the places they use (layout.py),
and this facade, which gives them the Backend protocol. The same init scripts as the postgres
image run once, on first initialisation, against a server only a private socket reaches.
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.backends.base import CORE, SERVICES, ServiceState
from scripts.backends.native.layout import RELOCATED_ROOT, Layout, disk_usage
from scripts.backends.native.postgres import INIT_SCRIPTS, Postgres
from scripts.backends.native.redis import REDIS_CONF, Redis
from scripts.console import display_path
from scripts.errors import StackError
from scripts.infra import procs, run
from scripts.infra.procs import RunAs
from scripts.infra.wait import concurrently

if TYPE_CHECKING:
    from scripts.backends.native.adminer import Adminer
    from scripts.backends.native.logfiles import LogFile
    from scripts.settings import Settings

__all__ = ["INIT_SCRIPTS", "REDIS_CONF", "RELOCATED_ROOT", "NativeBackend"]
# pg_ctl start returns at once. A postmaster with no pid file has exited when its log says
# so since the start; one silent this long has not started at all.
_POSTMASTER_SILENCE = 15.0
_POSTMASTER_ENDED = ("FATAL:", "PANIC:", "database system is shut down")
# The start of a line in PostgreSQL's log as the stack configures it: time, zone, [pid].
_PG_LINE = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] ")


class NativeBackend:
    name = "native"
    local_files = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.layout = Layout(
            settings.state_dir, settings.project, settings.postgres_port, RunAs.for_server()
        )
        self.postgres = Postgres(settings, self.layout)
        self.redis = Redis(settings, self.layout)
        self._spawned: dict[str, run.Process] = {}
        self._started_at: dict[str, float] = {}
        self._log_offset = 0  # postgres's log size when this command started it

    @functools.cached_property
    def adminer(self) -> Adminer:
        """Imported when a task needs it (`inv health` and `inv down` of the core do not)."""
        from scripts.backends.native.adminer import Adminer

        return Adminer(self.settings, self.layout)

    @property
    def pg_data(self) -> Path:
        return self.layout.pg_data

    def where(self) -> str:
        where = f"state dir {display_path(self.settings.state_dir)}"
        if self.layout.home != self.settings.state_dir:
            where += f", data in {self.layout.home}"
        return where

    def log_file(self, service: str) -> Path:
        return self.layout.log(service)

    def _server(self, service: str) -> Postgres | Redis | Adminer:
        servers: dict[str, Postgres | Redis | Adminer] = {
            "postgres": self.postgres,
            "redis": self.redis,
            "adminer": self.adminer,
        }
        return servers[service]

    def _pid(self, service: str) -> int | None:
        return self._server(service).pid()

    # --- state ------------------------------------------------------------------------------

    def states(self, *, sizes: bool = True) -> dict[str, ServiceState]:
        result = {}
        for service in SERVICES:
            pid = self._pid(service)
            data = {"postgres": self.layout.pg_data, "redis": self.layout.redis_data}.get(service)
            size = disk_usage(data) if sizes and data is not None and data.exists() else None
            if pid is not None:
                state = ServiceState(service, True, "running", f"pid {pid}", size, pid)
            elif service == "postgres" and not self.postgres.initialised():
                state = ServiceState(service, False, "not created", "", size)
            else:
                state = ServiceState(service, False, "stopped", "", size)
            result[service] = state
        return result

    def has_database(self) -> bool:
        return self.postgres.initialised()

    # --- start and stop ---------------------------------------------------------------------

    def start(self, services: Sequence[str]) -> list[str]:
        wanted = [s for s in SERVICES if s in services and self._pid(s) is None]
        if not wanted:
            return []
        from scripts.infra import net

        self._check_tools(wanted)
        net.ensure_free(self.settings, wanted)
        if self._pid("postgres") is None and self._pid("redis") is None:
            for moved in self.layout.migrate():
                from scripts.console import say

                say("info", f"Moved {moved}: the servers' account could not reach it.")
        self.layout.finish_deletions()
        self.layout.prepare()
        started: list[str] = []
        try:
            for service in wanted:
                self._started_at[service] = time.monotonic()
                if service == "postgres":
                    self._log_offset, pg_ctl = self.postgres.start()
                    if pg_ctl is not None:
                        self._spawned[service] = pg_ctl
                    self._started_at[service] = time.monotonic()  # after any first start
                elif service == "redis":
                    self._spawned[service] = self.redis.start()
                else:
                    self._spawned[service] = self.adminer.start()
                started.append(service)
        except BaseException:
            self.stop(started)
            raise
        return started

    def _check_tools(self, services: Sequence[str]) -> None:
        """Only that the programs exist: cheap enough for every start (versions are checked
        by `inv setup` and `inv validate`)."""
        import shutil

        from scripts.infra import prerequisites

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

    def exit_reason(self, service: str) -> str | None:
        if service == "postgres":
            if "postgres" not in self._started_at or self._pid("postgres") is not None:
                return None
            pg_ctl = self._spawned.get("postgres")
            if pg_ctl is not None and pg_ctl.poll() is None:
                return None  # still handing the server over
            since = time.monotonic() - self._started_at["postgres"]
            news = ""
            with contextlib.suppress(OSError), self.log_file("postgres").open("rb") as log:
                log.seek(self._log_offset)
                news = log.read().decode("utf-8", "replace")
            refused = pg_ctl is not None and pg_ctl.returncode != 0  # e.g. a bad data dir
            ended = refused or any(sign in news for sign in _POSTMASTER_ENDED)
            if not ended and since < _POSTMASTER_SILENCE:
                return None
        else:
            proc = self._spawned.get(service)
            if proc is None or proc.poll() is None:
                return None
        log_path = self.log_file(service)
        last = procs.tail(log_path, 3)
        detail = (_postgres_cause(last) if service == "postgres" else last[-1]) if last else ""
        return f"{service} exited: {detail or 'it stopped'} (see {display_path(log_path)})"

    def stop(self, services: Sequence[str] = SERVICES) -> list[str]:
        """Stop the servers side by side: none depends on another while it shuts down, and
        Redis's save then overlaps PostgreSQL's checkpoint."""
        chosen = [s for s in reversed(SERVICES) if s in services]  # adminer, redis, postgres
        ran = concurrently({service: self._server(service).stop for service in chosen})
        return [service for service in chosen if ran[service]]

    def clean(self) -> list[str]:
        self.stop()
        removed = []
        candidates = [
            self.layout.logs,
            self.layout.run,
            self.layout.adminer,
            self.postgres.initialising,
            self.settings.state_dir / "redis.conf",  # written by older versions
        ]
        pid_file = self.layout.pg_data / "postmaster.pid"
        if pid_file.exists():
            candidates.append(pid_file)
        candidates.append(self.layout.socket_dir)
        for path in candidates:
            if path.is_dir() and not path.is_symlink():
                import shutil

                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            else:
                continue
            removed.append(display_path(path))
        return removed

    def destroy(self) -> list[str]:
        self.stop()
        removed = self.layout.destroy_data()
        return removed + self.clean()

    # --- passwords, ownership ------------------------------------------------------------------

    def apply_password(self, service: str) -> str:
        """Make a running service take the password in the env file; say how it was done.

        PostgreSQL keeps the password it was first given in its data: it is changed over the
        private socket, where the server knows this account without a password. Redis reads
        it at every start: a restart does."""
        if service == "redis":
            self.redis.stop()
            self._spawned["redis"] = self.redis.start()
            return "restarted"
        return self.postgres.apply_passwords()

    def ownership_problem(self) -> str | None:
        return None  # the state dir is this checkout's own

    def notes(self) -> list[str]:
        return []

    def check_owner(self) -> None:
        """A core port that answers while this checkout's server is stopped is someone else's
        (another checkout with a copied .env, say): the tasks would act on its data. Refuse
        before a changing task does; free when this checkout's servers run (no port look)."""
        from scripts.infra import net

        if stopped := [s for s in CORE if self._pid(s) is None]:
            net.ensure_free(self.settings, stopped, nothing="changed")

    # --- clients ----------------------------------------------------------------------------

    def log_source(self, service: str, *, follow: bool) -> LogFile:
        from scripts.backends.native.logfiles import LogFile

        return LogFile(self.log_file(service), service)

    def pg_command(
        self, tool: str, args: Sequence[str], login: tuple[str, str] | None = None
    ) -> tuple[list[str], dict[str, str]]:
        return self.postgres.pg_command(tool, args, login)

    @contextlib.contextmanager
    def pg_input(self, local: Path) -> Iterator[str]:
        yield str(local)  # the tools run on this machine

    @contextlib.contextmanager
    def pg_output_dir(self, local: Path) -> Iterator[str]:
        yield str(local)

    def copy_service_file(self, service: str, relative: str, target: Path) -> None:
        import shutil

        data = {"postgres": self.layout.pg_data, "redis": self.layout.redis_data}[service]
        shutil.copyfile(data / relative, target)

    def psql(self, sql: str | None, extra: Sequence[str] = ()) -> int:
        args = ["-d", self.settings.postgres_db, *extra]
        if sql is not None:
            args += ["-v", "ON_ERROR_STOP=1", "-c", sql]
        return run.interactive(*self.pg_command("psql", args))

    def redis_cli(self, args: Sequence[str]) -> int:
        return run.interactive(*self.redis.cli(args))


def _postgres_cause(lines: Sequence[str]) -> str:
    """The postmaster's last words: its final line, and the one before when the same process
    wrote it just before a FATAL (the FATAL names the file, the line before the setting)."""
    final = lines[-1]
    end = _PG_LINE.match(final)
    before = _PG_LINE.match(lines[-2]) if len(lines) > 1 else None
    if end is None or before is None or before.group(1) != end.group(1) or "FATAL:" not in final:
        return final
    return " ".join(f"{lines[-2][before.end() :]}; {final[end.end() :]}".split())
