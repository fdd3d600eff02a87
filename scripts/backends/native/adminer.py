"""Adminer with PHP's built-in server: docker/adminer/index.php (logins reach this stack's
PostgreSQL only) beside adminer.php, served by several workers, with a bounded login.

Runs as the servers' account when root starts the stack, from a copy of both files in the
server home (that account may not read the checkout or root's cache).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from typing import TYPE_CHECKING

from scripts.backends.native.layout import Layout
from scripts.files import write_atomic
from scripts.infra import prerequisites, procs, run
from scripts.urls import url_host

if TYPE_CHECKING:
    from scripts.settings import Settings

INDEX = "docker/adminer/index.php"
WORKERS = 4  # requests served at once: one slow page no longer holds up every other
LOGIN_TIMEOUT = 5  # seconds a login may take to reach PostgreSQL (libpq's connect_timeout)


class Adminer:
    def __init__(self, settings: Settings, layout: Layout) -> None:
        self.settings = settings
        self.layout = layout

    def pid(self) -> int | None:
        pid = procs.read_pid(self.layout.pid_file("adminer"))
        if pid is None or not procs.alive(pid):
            return None
        if not procs.command_name(pid).startswith("php"):
            return None
        return pid

    def start(self) -> run.Process:
        s = self.settings
        page = prerequisites.fetch_adminer()  # checks the recorded sha256 (fetches on mismatch)
        docroot = self.layout.private_dir(self.layout.adminer)
        sessions = self.layout.private_dir(docroot / "php")  # its sessions, login counter
        for source, name in ((page, "adminer.php"), (s.root / INDEX, "index.php")):
            shutil.copyfile(source, docroot / name)
            (docroot / name).chmod(0o600)
            if self.layout.run_as is not None:
                self.layout.run_as.chown(docroot / name)
        env = {
            **os.environ,
            "ADMINER_DEFAULT_SERVER": f"{url_host(s.connect_host)}:{s.postgres_port}",
            "PHP_CLI_SERVER_WORKERS": str(WORKERS),
            "PGCONNECT_TIMEOUT": str(LOGIN_TIMEOUT),
        }
        php = shutil.which("php") or "php"
        proc = run.spawn(
            [
                php,
                "-d",
                f"sys_temp_dir={sessions}",
                "-d",
                f"session.save_path={sessions}",
                "-S",
                f"{url_host(s.bind_address)}:{s.adminer_port}",
                "-t",
                str(docroot),
            ],
            self.layout.log("adminer"),
            run_as=self.layout.run_as,
            env=env,
        )
        write_atomic(self.layout.pid_file("adminer"), f"{proc.pid}\n", durable=False)
        return proc

    def stop(self) -> bool:
        """php -S and its workers, which share its listening socket: all of them gone."""
        import psutil

        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                master = psutil.Process(pid)
                group = [master, *master.children(recursive=True)]
                # SIGCONT too: a stopped (hung) server would otherwise keep SIGTERM pending.
                for proc in group:
                    for sig in (signal.SIGTERM, signal.SIGCONT):
                        with contextlib.suppress(psutil.NoSuchProcess):
                            proc.send_signal(sig)
                _, alive = psutil.wait_procs(group, timeout=10)
                for proc in alive:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        proc.kill()
                psutil.wait_procs(alive, timeout=5)
        self.layout.pid_file("adminer").unlink(missing_ok=True)
        return pid is not None
