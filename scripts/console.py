"""Terminal output: status marks, tables and questions, colour only on a terminal.

rich is imported only by the functions that draw tables, so quick tasks start fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

MARKS = {"ok": ("✔", "32"), "fail": ("✘", "31"), "warn": ("!", "33"), "info": ("·", "36")}
_STYLES = {"32": "green", "31": "red", "33": "yellow", "36": "cyan"}


@dataclass(frozen=True)
class Marked:
    """A table cell that starts with a status mark: the table colours the mark with its own
    styles, so the colour takes no width (pre-coloured text would count its escape codes)."""

    kind: str
    text: str

    def __str__(self) -> str:
        return f"{MARKS[self.kind][0]} {self.text}"


Cell = str | Marked


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
    rows: Sequence[Sequence[Cell]],
    *,
    whole: Sequence[str] = (),
    out: TextIO | None = None,
    width: int | None = None,
) -> None:
    """Print a table; `whole` names columns never cut (file names to copy and paste).

    Colour comes from rich's styles, only on a terminal (and never with NO_COLOR); into a
    pipe or a CI log the table is wide enough that nothing is cut (rich assumes 80 columns).
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    out = sys.stdout if out is None else out
    colour = _colour(out)
    grid = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        grid.add_column(column, no_wrap=column in whole)
    for row in rows:
        cells: list[str | Text] = []
        for cell in row:
            if isinstance(cell, Marked):
                symbol, code = MARKS[cell.kind]
                cells.append(Text.assemble((symbol, _STYLES[code]), " ", cell.text))
            else:
                cells.append(Text(cell))
        grid.add_row(*cells)
    if width is None and not out.isatty():
        width = 200
    console = Console(
        file=out, force_terminal=colour, no_color=not colour, soft_wrap=True, width=width
    )
    console.print(grid)


@dataclass(frozen=True)
class Amount:
    """How far a long piece of work is: rows done of those expected, bytes, what is at work."""

    done: int  # rows so far
    total: int | None  # rows expected, when known
    size: int | None = None  # bytes so far (copied, written)
    what: str = ""  # the table or step at work


Progress = Callable[[Amount], None]
PROGRESS_SECONDS = 5.0  # piped output: a line at most this often (STACK_PROGRESS_SECONDS)


def _every() -> float:
    try:
        return max(0.0, float(os.environ.get("STACK_PROGRESS_SECONDS", PROGRESS_SECONDS)))
    except ValueError:
        return PROGRESS_SECONDS


def describe_amount(label: str, amount: Amount, elapsed: float) -> str:
    """One line: `pg_dump: 1,234,567 of 4,500,000 rows (27%), 310.2 MiB, users, 12 s left`."""
    parts = [
        f"{amount.done:,} of {amount.total:,} rows" if amount.total else f"{amount.done:,} rows"
    ]
    if amount.total:
        parts[0] += f" ({min(100, amount.done * 100 // max(amount.total, 1))}%)"
    if amount.size is not None:
        parts.append(human_size(amount.size))
    if amount.what:
        parts.append(amount.what)
    if amount.total and 0 < amount.done < amount.total and elapsed > 0:
        left = (amount.total - amount.done) / (amount.done / elapsed)
        parts.append(f"about {_duration(left)} left")
    return f"{label}: {', '.join(parts)}"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@contextlib.contextmanager
def progress(label: str) -> Iterator[Progress]:
    """A progress callback: a bar with rows, bytes and the time left on a terminal; piped, a
    line every few seconds (STACK_PROGRESS_SECONDS, default 5)."""
    started = time.monotonic()
    if sys.stdout.isatty():
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[rows]}"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, transient=True) as bar:
            task = bar.add_task(label, total=None, rows="")

            def draw(amount: Amount) -> None:
                rows = (
                    f"{amount.done:,}/{amount.total:,} rows"
                    if amount.total
                    else f"{amount.done:,} rows"
                )
                if amount.size is not None:
                    rows += f", {human_size(amount.size)}"
                bar.update(
                    task,
                    completed=amount.done,
                    total=amount.total,
                    rows=rows,
                    description=f"{label} {amount.what}".rstrip(),
                )

            yield draw
        return
    every, printed = _every(), started

    def line(amount: Amount) -> None:
        nonlocal printed
        now = time.monotonic()
        if now - printed >= every:
            printed = now
            with contextlib.suppress(BrokenPipeError):  # the reader left: keep working
                print(describe_amount(label, amount, now - started), flush=True)

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


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice a mistyped `word` most likely meant, when one is close enough."""
    import difflib

    found = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return found[0] if found else None
