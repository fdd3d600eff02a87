"""Running and timing commands: every step is a real subprocess that must exit 0.

A failing command aborts the benchmark (BenchError) with the command, its exit code and output.
"""

from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from scripts.infra.procs import RunAs

ROOT = Path(__file__).resolve().parents[2]
STARTED = time.monotonic()
TIMEOUT = 4 * 3600.0  # one command: generous, a 1 GB restore on a slow disk included


class BenchError(Exception):
    """Something the benchmark needs failed: the message names the command and its output."""


def log(message: str) -> None:
    """A progress line, with the time since the benchmark started."""
    print(f"[bench {time.monotonic() - STARTED:7.1f} s] {message}", flush=True)


def _tail(text: str, lines: int = 15) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return "\n".join(f"    {line}" for line in kept)


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path = ROOT,
    run_as: RunAs | None = None,
    input_text: str | None = None,
    check: bool = True,
    timeout: float = TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, capturing its output; with `check`, exit 0 or BenchError."""
    try:
        result = subprocess.run(
            list(argv),
            input=input_text,
            stdin=None if input_text is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            user=None if run_as is None else run_as.uid,
            group=None if run_as is None else run_as.gid,
            extra_groups=None if run_as is None else [],
        )
    except FileNotFoundError:
        raise BenchError(f"`{argv[0]}` was not found: install it and run again.") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"`{shlex.join(argv)}` did not finish within {timeout:.0f} s.") from None
    if check and result.returncode != 0:
        raise BenchError(
            f"`{shlex.join(argv)}` exited with {result.returncode}:\n"
            f"{_tail(result.stdout + result.stderr) or '    (no output)'}"
        )
    return result


def run_pipe(
    first: Sequence[str], second: Sequence[str], *, env: Mapping[str, str], cwd: Path = ROOT
) -> None:
    """`first | second`, both must exit 0 (no shell involved)."""
    with subprocess.Popen(
        list(first), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=dict(env)
    ) as producer:
        assert producer.stdout is not None
        consumer = subprocess.run(
            list(second),
            stdin=producer.stdout,
            capture_output=True,
            text=True,
            check=False,
            cwd=cwd,
            env=dict(env),
            timeout=TIMEOUT,
        )
        producer.stdout.close()
        producer_err = producer.stderr.read().decode() if producer.stderr else ""
        producer.wait()
    for argv, code, output in (
        (first, producer.returncode, producer_err),
        (second, consumer.returncode, consumer.stdout + consumer.stderr),
    ):
        if code != 0:
            raise BenchError(
                f"`{shlex.join(first)} | {shlex.join(second)}`: `{argv[0]}` exited with {code}:\n"
                f"{_tail(output) or '    (no output)'}"
            )


def measure(action: Callable[[], object]) -> float:
    """Wall-clock seconds of `action`, by time.perf_counter()."""
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


@dataclass(frozen=True)
class Series:
    """The samples of one side of a figure, in seconds."""

    samples: tuple[float, ...]

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    def as_dict(self) -> dict[str, object]:
        return {
            "min": round(self.min, 4),
            "median": round(self.median, 4),
            "max": round(self.max, 4),
            "samples": [round(s, 4) for s in self.samples],
        }


def python_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for Python child processes, as in a user's shell: Python may write
    bytecode as usual (this machine's PYTHONDONTWRITEBYTECODE=1 is dropped)."""
    env = dict(os.environ if base is None else base)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPYCACHEPREFIX", None)
    return env


PYTHON = sys.executable
