"""Terminal output: status marks, tables and questions, colour only on a terminal.

rich is imported only by the functions that draw tables, so quick tasks start fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

MARKS = {"ok": ("✔", "32"), "fail": ("✘", "31"), "warn": ("!", "33"), "info": ("·", "36")}


def _colour(stream: TextIO | None = None) -> bool:
    stream = sys.stdout if stream is None else stream
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def paint(text: str, code: str) -> str:
    return f"\033[{code}m{text}\033[0m" if _colour() else text


def mark(kind: str) -> str:
    symbol, code = MARKS[kind]
    return paint(symbol, code)


def say(kind: str, message: str) -> None:
    print(f"{mark(kind)} {message}", flush=True)


def warn(message: str) -> None:
    """A warning on stderr: the task's own output (JSON, a table) stays clean."""
    symbol, code = MARKS["warn"]
    shown = f"\033[{code}m{symbol}\033[0m" if _colour(sys.stderr) else symbol
    print(f"{shown} {message}", file=sys.stderr, flush=True)


def display_path(path: Path) -> str:
    """A path relative to the current directory when it is below it."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def enumerate_names(names: Sequence[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    return ", ".join(names[:-1]) + (" and " if len(names) > 1 else "") + names[-1]


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    whole: Sequence[str] = (),
) -> None:
    """Print a table; `whole` names columns never cut (file names to copy and paste)."""
    from rich.console import Console
    from rich.table import Table

    grid = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        grid.add_column(column, no_wrap=column in whole)
    for row in rows:
        grid.add_row(*row)
    # Into a pipe or a CI log: wide enough that nothing is cut (rich assumes 80 columns).
    width = None if sys.stdout.isatty() else 200
    Console(no_color=not _colour(), soft_wrap=True, width=width).print(grid)


@contextlib.contextmanager
def progress(label: str) -> Iterator[Callable[[int, int, str], None]]:
    """A progress callback (done, total, what): a bar on a terminal, plain lines otherwise."""
    if sys.stdout.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, transient=True) as bar:
            task = bar.add_task(label, total=None)

            def draw(done: int, total: int, what: str) -> None:
                bar.update(task, completed=done, total=total, description=f"{label} {what}")

            yield draw
        return
    printed = -1

    def line(done: int, total: int, what: str) -> None:
        nonlocal printed
        tenth = done * 10 // max(total, 1)
        if tenth != printed:  # at most about ten lines, however many tables
            printed = tenth
            with contextlib.suppress(BrokenPipeError):  # the reader left: keep working
                print(f"{label}: {done}/{total} ({what})", flush=True)

    yield line


def confirm(question: str) -> bool | None:
    """Ask a yes/no question; None when nobody can answer (stdin is not a terminal)."""
    if not sys.stdin.isatty():
        return None
    try:
        answer = input(f"{question} [y/N] ").strip().lower()
    except EOFError:
        return None
    return answer in ("y", "yes")
