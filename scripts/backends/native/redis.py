"""redis-server from the host: the shared docker/redis/redis.conf plus this stack's bind
address, port, data dir and password, handed over on stdin, never written to a file.

Runs as the servers' account when root starts the stack; its data dir is private to it.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.backends.native.layout import Layout
from scripts.errors import StackError
from scripts.files import write_atomic
from scripts.infra import procs, run

if TYPE_CHECKING:
    from scripts.settings import Settings

REDIS_CONF = "docker/redis/redis.conf"


class Redis:
    def __init__(self, settings: Settings, layout: Layout) -> None:
        self.settings = settings
        self.layout = layout

    def pid(self) -> int | None:
        pid = procs.read_pid(self.layout.pid_file("redis"))
        if pid is None or not procs.alive(pid):
            return None
        if not procs.command_name(pid).startswith("redis-server"):
            return None  # a stale pid file whose number now belongs to another program
        return pid

    def config(self) -> str:
        """The configuration redis-server reads from stdin (`redis-server -`): the shared file's
        text (the servers' account may not read the checkout), then this stack's values."""
        s = self.settings
        shared = (s.root / REDIS_CONF).read_text(encoding="utf-8")
        return "\n".join(
            [
                shared,
                "# This stack's, from the env file:",
                f"bind {s.bind_address}",
                f"port {s.redis_port}",
                f'dir "{self.layout.redis_data}"',
                'logfile ""',
                "daemonize no",
                f"requirepass {_quote(s.redis_password.reveal())}",
                "",
            ]
        )

    def start(self) -> run.Process:
        redis_server = shutil.which("redis-server") or "redis-server"
        proc = run.spawn(
            [redis_server, "-"],
            self.layout.log("redis"),
            run_as=self.layout.run_as,
            input_text=self.config(),
        )
        _write_pid(self.layout.pid_file("redis"), proc.pid)
        return proc

    def stop(self) -> bool:
        """SIGTERM: Redis fsyncs its AOF and saves its RDB, then exits."""
        pid = self.pid()
        if pid is not None:
            procs.stop(pid, signal.SIGTERM, 30, signal.SIGKILL)
        self.layout.pid_file("redis").unlink(missing_ok=True)
        return pid is not None

    def cli(self, args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        s = self.settings
        cli = shutil.which("redis-cli")
        if cli is None:
            raise StackError("redis-cli was not found: run `inv setup` to install it.")
        argv = [cli, "-h", s.connect_host, "-p", str(s.redis_port), *args]
        return argv, {**os.environ, "REDISCLI_AUTH": s.redis_password.reveal()}


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _write_pid(path: Path, pid: int) -> None:
    write_atomic(path, f"{pid}\n", durable=False)
