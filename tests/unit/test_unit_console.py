"""scripts/console.py: sizes, paths, marks and questions as the user sees them."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from scripts.console import Cell, Marked, confirm, display_path, human_size, say, table


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (None, "-"),
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (5 * 1024**2, "5.0 MiB"),
        (3 * 1024**3 + 512 * 1024**2, "3.5 GiB"),
        (5 * 1024**4, "5120.0 GiB"),
    ],
)
def test_human_size(size: int | None, shown: str) -> None:
    assert human_size(size) == shown


def test_display_path_is_relative_below_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert display_path(tmp_path / "work" / "sub" / "stack.env") == "sub/stack.env"
    assert display_path(tmp_path / "elsewhere.env") == str(tmp_path / "elsewhere.env")


class Terminal(io.StringIO):
    """Typed answers on a stdin that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_confirm_without_a_terminal_is_none_and_reads_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    piped = io.StringIO("yes\n")  # e.g. `yes | inv reset` must not count as an answer
    monkeypatch.setattr("sys.stdin", piped)
    assert confirm("Delete everything?") is None
    assert piped.read() == "yes\n"
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("typed", "answer"),
    [("y\n", True), ("YES\n", True), (" yes \n", True), ("n\n", False), ("\n", False), ("", None)],
)
def test_confirm_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    typed: str,
    answer: bool | None,
) -> None:
    monkeypatch.setattr("sys.stdin", Terminal(typed))
    assert confirm("Delete everything?") is answer
    assert "Delete everything? [y/N]" in capsys.readouterr().out


def test_say_without_a_terminal_prints_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    say("ok", "postgres: ready")
    say("fail", "redis: WRONGPASS")
    assert capsys.readouterr().out == "✔ postgres: ready\n✘ redis: WRONGPASS\n"


# --- tables -----------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    """Output that says it is a terminal, so the table is drawn with colour."""

    def isatty(self) -> bool:
        return True


def _columns(line: str) -> list[int]:
    """Where the vertical borders are (the header's ┃ and the rows' │)."""
    return [i for i, char in enumerate(line) if char in "┃│"]


@pytest.mark.parametrize("colour", [True, False])
def test_a_table_with_marks_keeps_its_columns_in_colour(
    monkeypatch: pytest.MonkeyPatch, colour: bool
) -> None:
    """The status table as a terminal shows it: a coloured mark takes one column, so every
    row's borders sit under the header's (issue: pre-coloured cells shifted by 9)."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    out = _Terminal() if colour else io.StringIO()
    rows: list[list[Cell]] = [
        ["postgres", "running", "127.0.0.1:5432", Marked("ok", "healthy"), "7.8 MiB"],
        ["redis", "running", "127.0.0.1:6379", Marked("fail", "refused [auth]"), "1.0 KiB"],
        ["adminer", "stopped", "127.0.0.1:8080", "-", "-"],
    ]
    table(
        "native backend", ["Service", "State", "Address", "Health", "Data"], rows, out=out, width=90
    )
    drawn = out.getvalue()
    assert ("\x1b[" in drawn) is colour, drawn
    plain = re.sub(r"\x1b\[[0-9;]*m", "", drawn).splitlines()
    header = next(line for line in plain if "Service" in line)
    body = [line for line in plain if line.startswith("│")]
    assert len(body) == 3, plain
    for line in body:
        assert len(line) == len(header), plain
        assert _columns(line) == _columns(header), "\n".join(plain)
    assert "✔ healthy" in plain[plain.index(body[0])]
    assert "refused [auth]" in drawn, "cell text is not read as rich markup"
