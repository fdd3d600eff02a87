"""scripts/ops/logs.py and the backends' log readers: `inv logs` in the order lines were
written, whatever each server's time format, followed as files grow."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from scripts.backends.base import LogLine
from scripts.backends.compose_logs import _timed
from scripts.backends.native.logfiles import LogFile
from scripts.ops.logs import merge

# Each server's own lines, as they appear in its log file (local times: this process's zone).
POSTGRES = [
    "2026-12-02 06:27:33.930 UTC [25252] LOG:  database system is ready to accept connections",
    "2026-12-02 06:27:35.065 UTC [25331] FATAL:  the database system is starting up",
    '2026-12-02 06:27:36.065 UTC [25331] FATAL:  password authentication failed for user "x"',
    "waiting for server to shut down.... done",
]
REDIS = ["25331:M 02 Dec 2026 {t} * Ready to accept connections"]
PHP = ["[30638] [Wed Dec  2 {t} 2026] 127.0.0.1:50032 Accepted"]


def _local(hms: str) -> str:
    """The local wall-clock time of 2026-12-02 `hms` UTC, as Redis and PHP write it."""
    moment = dt.datetime.fromisoformat(f"2026-12-02 {hms}+00:00").astimezone()
    return moment.strftime("%H:%M:%S.%f")[:-3] if "." in hms else moment.strftime("%H:%M:%S")


def test_merge_orders_lines_by_their_time_and_keeps_untimed_lines_with_theirs() -> None:
    lines = {
        "postgres": [LogLine(10.0, "pg a"), LogLine(None, "pg a detail"), LogLine(30.0, "pg c")],
        "redis": [LogLine(20.0, "redis b"), LogLine(30.0, "redis c")],
    }
    assert merge(lines) == [
        ("postgres", "pg a"),
        ("postgres", "pg a detail"),
        ("redis", "redis b"),
        ("postgres", "pg c"),  # the same time: the order services were given
        ("redis", "redis c"),
    ]


def test_merge_hides_the_starting_up_noise_of_readiness_probes() -> None:
    lines = {"postgres": [LogLine(1.0, "FATAL:  the database system is starting up")]}
    assert merge(lines) == []


def test_each_native_log_format_gives_its_time(tmp_path: Path) -> None:
    files = {
        "postgres": POSTGRES,
        "redis": [line.format(t=_local("06:27:34.500")) for line in REDIS],
        "adminer": [line.format(t=_local("06:27:35")) for line in PHP],
    }
    found = {}
    for service, lines in files.items():
        path = tmp_path / f"{service}.log"
        path.write_text("\n".join(lines) + "\n")
        found[service] = LogFile(path, service).past(100)
    utc = dt.datetime(2026, 12, 2, 6, 27, tzinfo=dt.UTC).timestamp()
    assert [line.at for line in found["postgres"]] == [
        utc + 33.93,
        utc + 35.065,
        utc + 36.065,
        None,
    ]
    assert found["redis"][0].at == utc + 34.5
    assert found["adminer"][0].at == utc + 35
    order = [text.split()[-1] for _, text in merge(found)]
    assert order == ["connections", "connections", "Accepted", '"x"', "done"]


def test_a_followed_log_file_gives_only_complete_new_lines(tmp_path: Path) -> None:
    path = tmp_path / "postgres.log"
    path.write_text(POSTGRES[0] + "\n" + POSTGRES[1] + "\n")
    log = LogFile(path, "postgres")
    assert [line.text for line in log.past(1)] == [POSTGRES[1]]
    assert log.new() == []
    with path.open("a") as handle:
        handle.write(POSTGRES[2] + "\nhalf a li")
    assert [line.text for line in log.new()] == [POSTGRES[2]]
    with path.open("a") as handle:
        handle.write("ne\n")
    assert [line.text for line in log.new()] == ["half a line"]
    path.write_text("")  # truncated (inv clean): start again from the top
    assert log.new() == []
    path.write_text(POSTGRES[0] + "\n")
    assert [line.text for line in log.new()] == [POSTGRES[0]]


def test_the_last_lines_of_a_large_log(tmp_path: Path) -> None:
    path = tmp_path / "redis.log"
    stamp = _local("06:27:34.500")
    path.write_text("".join(f"1:M 02 Dec 2026 {stamp} * line {n}\n" for n in range(20000)))
    lines = LogFile(path, "redis").past(150)
    assert len(lines) == 150
    assert lines[0].text.endswith("line 19850") and lines[-1].text.endswith("line 19999")
    assert LogFile(path, "redis").past(0) == []


def test_compose_timestamps_to_the_microsecond() -> None:
    line = _timed("2026-12-02T06:27:33.123456789Z ready to accept connections")
    utc = dt.datetime(2026, 12, 2, 6, 27, 33, 123456, tzinfo=dt.UTC).timestamp()
    assert line == LogLine(utc, "ready to accept connections")
    assert _timed("no time here").at is None
    offset = _timed("2026-12-02T08:27:33+02:00 x")
    assert offset.at == dt.datetime(2026, 12, 2, 6, 27, 33, tzinfo=dt.UTC).timestamp()
