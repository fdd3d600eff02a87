"""One changing command per stack at a time: an exclusive flock on the state dir's .lock.

The use cases take it where they start (scripts.ops); what they call runs under it and
never takes it again. A second command waits, says so, and then sees the first one's result.
`attempt` never waits: it tells whether a command is running now (crash recovery asks it,
since a journal whose command still runs is not a crash's).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from scripts.console import say


def _open(state_dir: Path) -> int:
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return os.open(state_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)


def _taken(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def held(state_dir: Path) -> Iterator[None]:
    fd = _open(state_dir)
    try:
        if not _taken(fd):
            say("info", "Another command is changing this stack; waiting for it…")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the file releases the lock


@contextlib.contextmanager
def attempt(state_dir: Path) -> Iterator[bool]:
    """The lock if nobody holds it (True, held until the block ends), else False at once."""
    fd = _open(state_dir)
    try:
        yield _taken(fd)
    finally:
        os.close(fd)


def busy(state_dir: Path) -> bool:
    """Whether a command holds the lock now (a look, not a wait)."""
    with attempt(state_dir) as free:
        return not free
