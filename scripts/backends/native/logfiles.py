"""The native servers' log files read as a log: the last lines, then what is appended, each
line with the time the server wrote on it.

Each server writes its own time format: PostgreSQL `2026-12-02 06:27:33.930 UTC` (the stack
starts it with log_timezone=UTC), Redis `25331:M 02 Dec 2026 06:27:33.930`, PHP's built-in
server `[30638] [Wed Dec  2 06:27:33 2026]` (both in local time; PHP to the second). A line
without a time (pg_ctl's own output) belongs with the line before it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable
from pathlib import Path

from scripts.backends.base import LogLine

_CHUNK = 64 * 1024
_POSTGRES = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) (UTC|GMT) ")
_REDIS = re.compile(r"^\d+:[A-Z] (\d\d \w{3} \d{4} \d\d:\d\d:\d\d(?:\.\d+)?) ")
_PHP = re.compile(r"^(?:\[\d+\] )?\[(\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4})\]")


def _postgres(line: str) -> float | None:
    found = _POSTGRES.match(line)
    if not found:
        return None
    when = dt.datetime.fromisoformat(found[1]).replace(tzinfo=dt.UTC)
    return when.timestamp()


def _local(pattern: re.Pattern[str], layout: str) -> Callable[[str], float | None]:
    def parse(line: str) -> float | None:
        found = pattern.match(line)
        if not found:
            return None
        try:
            return dt.datetime.strptime(found[1], layout).timestamp()  # naive: local time
        except ValueError:
            return None

    return parse


TIMES: dict[str, Callable[[str], float | None]] = {
    "postgres": _postgres,
    "redis": _local(_REDIS, "%d %b %Y %H:%M:%S.%f"),
    "adminer": _local(_PHP, "%a %b %d %H:%M:%S %Y"),
}


class LogFile:
    """A log file that servers append to (and `inv clean` may truncate or delete)."""

    def __init__(self, path: Path, service: str) -> None:
        self.path = path
        self.time = TIMES[service]
        self.offset = 0

    def past(self, tail: int) -> list[LogLine]:
        try:
            with self.path.open("rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                start, data = size, b""
                while tail and start > 0 and data.count(b"\n") <= tail:
                    start = max(0, start - _CHUNK)
                    handle.seek(start)
                    data = handle.read(size - start)
        except OSError:
            return []
        complete = data[: data.rfind(b"\n") + 1]  # a line being written is new()'s
        self.offset = start + len(complete) if tail else size
        lines = [line for line in complete.decode("utf-8", "replace").splitlines() if line.strip()]
        return self._timed(lines[-tail:] if tail else [])

    def new(self) -> list[LogLine]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            self.offset = 0
            return []
        if size < self.offset:
            self.offset = 0  # truncated or replaced
        if size == self.offset:
            return []
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read(size - self.offset)
        complete, _, _ = chunk.rpartition(b"\n")
        if not complete:
            return []
        self.offset += len(complete) + 1
        return self._timed(complete.decode("utf-8", "replace").split("\n"))

    def close(self) -> None:
        pass

    def _timed(self, lines: list[str]) -> list[LogLine]:
        return [LogLine(self.time(line), line) for line in lines]
