"""The one way this project runs another program: an argument list (never a shell string), an
environment, a timeout, and the program's last line of output in what a failure says.

Short commands: `run`. Servers that outlive the task: `spawn`. Tools whose output streams
through here (pg_dump, pg_restore, psql, docker compose logs): `start`, which ends them with
this process. A client on this terminal: `interactive`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.errors import StackError

if TYPE_CHECKING:
    from scripts.infra.procs import RunAs

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT
Process = subprocess.Popen[bytes]
NOT_FOUND = 127  # a program that is not there, as a shell says it
TIMED_OUT = 124  # a program that took too long, as timeout(1) says it


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def last_line(self, default: str = "no output") -> str:
        """What a failed program said last (its error, usually): stderr's, else stdout's."""
        return last_line(self.stderr, "") or last_line(self.stdout, default)


class CommandError(StackError):
    """A program failed; the message names it and its last line of output."""

    def __init__(self, result: Result, what: str = "") -> None:
        name = what or Path(result.argv[0]).name
        super().__init__(f"{name} failed: {result.last_line(f'exit code {result.returncode}')}.")
        self.result = result


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    timeout: float | None = None,
    cwd: str | Path | None = None,
    run_as: RunAs | None = None,
    capture: bool = True,
    check: bool = False,
    stdin: int | None = None,
) -> Result:
    """Run a command to its end. A program that is missing or too slow gives a Result like a
    shell's (127, 124), not an exception; `check` turns any failure into a CommandError."""
    argv = tuple(argv)
    try:
        done = subprocess.run(
            argv,
            input=input_text,
            capture_output=capture,
            text=True,
            check=False,
            timeout=timeout,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=None if input_text is not None else stdin,  # None: this terminal's
            user=None if run_as is None else run_as.uid,
            group=None if run_as is None else run_as.gid,
            extra_groups=None if run_as is None else [],
        )
        result = Result(argv, done.returncode, done.stdout or "", done.stderr or "")
    except FileNotFoundError as exc:
        result = Result(argv, NOT_FOUND, "", f"{argv[0]}: {exc.strerror}")
    except subprocess.TimeoutExpired:
        result = Result(argv, TIMED_OUT, "", f"{argv[0]}: no answer within {timeout:.0f} s")
    if check and not result.ok:
        raise CommandError(result)
    return result


def pipe(argv: Sequence[str], data: bytes, *, timeout: float | None = None) -> bytes:
    """Feed `data` to a filter (Graphviz's dot, say) and return what it writes: bytes both
    ways. A failure is a CommandError with its last line."""
    argv = tuple(argv)
    try:
        done = subprocess.run(argv, input=data, capture_output=True, check=False, timeout=timeout)
    except FileNotFoundError as exc:
        raise CommandError(Result(argv, NOT_FOUND, "", f"{argv[0]}: {exc.strerror}")) from None
    except subprocess.TimeoutExpired:
        raise CommandError(Result(argv, TIMED_OUT, "", "no answer in time")) from None
    if done.returncode != 0:
        stderr = done.stderr.decode("utf-8", "replace")
        raise CommandError(Result(argv, done.returncode, "", stderr))
    return done.stdout


def spawn(
    argv: Sequence[str],
    log: Path,
    *,
    run_as: RunAs | None = None,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
) -> Process:
    """Start a long-running server detached from this terminal, output appended to `log`
    (opened here: the server's account needs no access to it). `input_text` is written to
    its stdin, which is then closed (a configuration that must not touch the disk)."""
    out = open_log(log)
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL if input_text is None else subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in this terminal must not reach the servers
            cwd="/",
            env=dict(env) if env is not None else None,
            umask=0o077,  # what a server creates (Redis's AOF, PHP's sessions) is its alone
            user=None if run_as is None else run_as.uid,
            group=None if run_as is None else run_as.gid,
            extra_groups=None if run_as is None else [],
        )
    finally:
        os.close(out)
    if input_text is not None:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(input_text.encode())
        proc.stdin.close()
    return proc


def start(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin: int | None = None,
    stdout: int | None = PIPE,
    stderr: int | None = PIPE,
) -> Process:
    """Start a tool whose output this process reads as it comes. It ends when this process
    does, even by SIGKILL, so no pg_dump or pg_restore goes on writing for nobody."""
    try:
        return subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            preexec_fn=_die_with_parent(),  # noqa: PLW1509 - only prctl, with nothing to import
        )
    except FileNotFoundError:
        raise StackError(f"{argv[0]} was not found: run `inv setup` to install it.") from None


def interactive(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run a client in this terminal; Ctrl-C belongs to it, not to us."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return run(argv, env=env, capture=False).returncode
    finally:
        signal.signal(signal.SIGINT, previous)


def open_log(log: Path) -> int:
    """A log file opened for appending, readable by this account alone (0600)."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def last_line(text: str, default: str = "no output") -> str:
    """The last non-empty line of a command's output (its error, usually)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else default


def _die_with_parent() -> Callable[[], None] | None:
    """For a child process: end it (SIGTERM) when this process dies. Linux's
    prctl(PR_SET_PDEATHSIG); elsewhere nothing (None). Made here, in the parent, so the
    child only calls it: nothing to import or load between fork and exec."""
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # libc's, in this process already
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the line above
            os.kill(os.getpid(), signal.SIGTERM)

    return arm
