"""Progress of long work, as it is printed into a pipe or a CI log (scripts/console.py), and
as it is read from PostgreSQL's progress views (scripts/ops/progress.py: the views' rows are
given here as the server returns them)."""

from __future__ import annotations

from typing import Any

import pytest

from scripts.console import Amount, describe_amount, progress
from scripts.ops.progress import CopyWatch


def test_a_progress_line_has_rows_percent_bytes_table_and_time_left() -> None:
    line = describe_amount("pg_dump", Amount(1_000_000, 4_000_000, 310 * 1024**2, "users"), 10)
    assert line == "pg_dump: 1,000,000 of 4,000,000 rows (25%), 310.0 MiB, users, about 30 s left"
    unknown = describe_amount("pg_restore", Amount(5000, None, None, ""), 3)
    assert unknown == "pg_restore: 5,000 rows"
    long = describe_amount("generating", Amount(10, 1000, None, "reviews"), 60)
    assert long.endswith("about 1 h 39 min left")


def test_piped_progress_prints_a_line_every_few_seconds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = [100.0]
    monkeypatch.setattr("scripts.console.time.monotonic", lambda: clock[0])
    monkeypatch.setenv("STACK_PROGRESS_SECONDS", "5")
    with progress("pg_dump") as report:
        for second in range(12):
            clock[0] = 100.0 + second
            report(Amount(second * 100, 1200, second * 1024, "users"))
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "pg_dump: 500 of 1,200 rows (41%), 5.0 KiB, users, about 7 s left",
        "pg_dump: 1,000 of 1,200 rows (83%), 10.0 KiB, users, about 2 s left",
    ]


def test_the_interval_is_the_users_to_choose(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STACK_PROGRESS_SECONDS", "0")
    with progress("pg_restore") as report:
        report(Amount(1, 2))
        report(Amount(2, 2))
    assert len(capsys.readouterr().out.splitlines()) == 2
    monkeypatch.setenv("STACK_PROGRESS_SECONDS", "soon")  # not a number: the default
    with progress("pg_restore") as report:
        report(Amount(1, 2))
    assert capsys.readouterr().out == ""


class _Views:
    """What pg_stat_progress_copy / _create_index hold at each poll, in turn."""

    def __init__(self, polls: list[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]) -> None:
        self.polls = polls
        self.at = -1

    def query(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        if "pg_stat_progress_copy" in sql:
            self.at += 1
            return self.polls[self.at][0]
        return self.polls[self.at][1]


def test_rows_count_against_the_totals_as_copies_come_and_go() -> None:
    seen: list[Amount] = []
    watch = CopyWatch(
        {"public.users": 1000, "reviews": 3000}, seen.append, command="COPY FROM", indexes=True
    )
    views = _Views(
        [
            ([("users", 400, 40_000)], []),
            ([("users", 900, 90_000)], []),
            ([("reviews", 1000, 50_000)], []),  # users ended: it counts in full
            ([], [("reviews", "building index: scanning table")]),
        ]
    )
    for _ in range(4):
        watch.poll(views.query, "scratch")
    watch.finish()
    assert [(a.done, a.total) for a in seen] == [
        (400, 4000),
        (900, 4000),
        (2000, 4000),
        (4000, 4000),
        (4000, 4000),
    ]
    assert [a.what for a in seen] == [
        "users",
        "users",
        "reviews",
        "index on reviews (building index: scanning table)",
        "done",
    ]
    assert seen[2].size == 140_000


def test_more_rows_than_estimated_raise_the_total() -> None:
    seen: list[Amount] = []
    watch = CopyWatch({"users": 10}, seen.append, command="COPY TO", indexes=False)
    watch.poll(_Views([([("users", 25, 100)], [])]).query, "db")
    assert (seen[-1].done, seen[-1].total) == (25, 25)
