"""A compose service's log as `docker compose logs --timestamps` gives it: the last lines,
then (followed) what comes after them, each with the time Docker recorded for it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import re
import threading
from typing import TYPE_CHECKING

from scripts.backends.base import LogLine
from scripts.backends.compose import compose_argv
from scripts.infra import run

if TYPE_CHECKING:
    from scripts.settings import Settings


class ComposeLog:
    """A service's log through `docker compose logs --timestamps`: the last lines from one
    call, then (following) a second one with --follow, read by a thread into a queue."""

    def __init__(self, settings: Settings, service: str, *, follow: bool) -> None:
        self.settings = settings
        self.service = service
        self.follow = follow
        self.lines: queue.SimpleQueue[LogLine] = queue.SimpleQueue()
        self.proc: run.Process | None = None
        self.seen: set[tuple[float | None, str]] = set()

    def _argv(self, *args: str) -> list[str]:
        logs = ["--profile", "*", "logs", "--no-log-prefix", "--timestamps", *args]
        return compose_argv(self.settings, *logs, self.service)

    def past(self, tail: int) -> list[LogLine]:
        env = self.settings.subprocess_env()
        since = dt.datetime.now(dt.UTC)
        lines = []
        if tail:
            result = run.run(self._argv("--tail", str(tail)), env=env, timeout=60)
            lines = [_timed(line) for line in result.stdout.splitlines() if line.strip()]
        if self.follow:
            # From the time the past lines were asked for, so that nothing written meanwhile
            # is lost; what both calls return is dropped again in new().
            self.seen = {(line.at, line.text) for line in lines}
            start = since.isoformat(timespec="microseconds").replace("+00:00", "Z")
            argv = self._argv("--since", start, "--follow")
            self.proc = run.start(argv, env=env, stderr=run.STDOUT)
            threading.Thread(target=self._read, daemon=True).start()
        return lines

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(_timed(raw.decode("utf-8", "replace").rstrip("\n")))

    def new(self) -> list[LogLine]:
        found = []
        with contextlib.suppress(queue.Empty):
            while True:
                line = self.lines.get_nowait()
                if (line.at, line.text) not in self.seen:
                    found.append(line)
        return found

    def close(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()


def _timed(line: str) -> LogLine:
    """A line of `docker compose logs --timestamps`: RFC 3339 time (nanoseconds), a space,
    the text."""
    stamp, _, text = line.partition(" ")
    found = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", stamp)
    if not found:
        return LogLine(None, line)
    fraction = (found[2] or "0")[:6].ljust(6, "0")
    when = dt.datetime.fromisoformat(f"{found[1]}.{fraction}{found[3].replace('Z', '+00:00')}")
    return LogLine(when.timestamp(), text)
