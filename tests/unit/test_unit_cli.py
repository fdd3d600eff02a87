"""scripts/cli.py: the `inv` command line as users type it, mistakes included.

Each case runs the real `inv` (python -m invoke) in the checkout with an env file that does
not exist: a usage error is found before any stack is looked at, so none is needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.cli import USAGE, remainder
from tests.unit.test_unit_tasks import EXPECTED_TASKS, inv
from tests.unit.unit_support import write_env

# (command line, the one line of stderr expected): the typos and wrong values of real use.
USAGE_ERRORS = [
    (
        ["db.backp"],
        "✘ No task named 'db.backp': did you mean `inv db.backup`? (`inv --list` lists them).",
    ),
    (
        ["up-core", "statsu"],
        "✘ No task named 'statsu': did you mean `inv status`? (`inv --list` lists them).",
    ),
    (["frobnicate"], "✘ No task named 'frobnicate': `inv --list` lists the tasks."),
    (
        ["db.backup", "--formt", "sql"],
        "✘ `inv db.backup` has no option --formt: did you mean --format? "
        "(`inv --help db.backup` lists them).",
    ),
    (
        ["db.restore", "--lates", "--yes"],
        "✘ `inv db.restore` has no option --lates: did you mean --latest? "
        "(`inv --help db.restore` lists them).",
    ),
    (
        ["--lsit"],
        "✘ inv has no option --lsit: did you mean --list? (`inv --help` lists them).",
    ),
    (["status", "foo"], "✘ `inv status` takes no argument 'foo': see `inv --help status`."),
    (
        ["db.seed", "--scale", "abc"],
        "✘ --scale takes a whole number, not 'abc' (`inv --help db.seed`).",
    ),
    (["logs", "--tail", "x"], "✘ --tail takes a whole number, not 'x' (`inv --help logs`)."),
    (["logs", "--tail"], "✘ --tail needs a value: see `inv --help logs`."),
    (
        ["--help", "db.bakup"],
        "✘ No task named 'db.bakup': did you mean `inv db.backup`? (`inv --list` lists them).",
    ),
    (
        ["db.restore"],
        "✘ `inv db.restore` needs FILE: a backup's name in BACKUP_DIR (as `inv db.backups` "
        "lists it, with or without its extension), a backup's path, or --latest for the newest "
        "backup.",
    ),
    (
        ["db.restore", "some.dump", "--latest"],
        "✘ `inv db.restore` takes --latest instead of a file name, not beside one: give one of "
        "them.",
    ),
    (["db.prune"], "✘ Say how many backups to keep, e.g. `inv db.prune --keep 5`."),
    (
        ["logs", "-s", "postgress"],
        "✘ No service named postgress: did you mean postgres? choose from postgres, redis, "
        "adminer.",
    ),
    (["env", "--format", "yaml"], "✘ --format 'yaml' is not a format: use dotenv, shell or json."),
]


@pytest.mark.parametrize(
    ("args", "expected"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS]
)
def test_a_usage_error_is_one_sentence_with_the_fix_and_exit_2(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    result = inv(*args, env_file=tmp_path / "missing.env")
    assert result.returncode == USAGE == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == expected
    assert result.stdout == ""


def test_a_failure_that_is_no_usage_error_still_exits_1(tmp_path: Path) -> None:
    result = inv("status", env_file=tmp_path / "missing.env")
    assert result.returncode == 1, result.stdout + result.stderr


def test_a_bare_inv_lists_the_tasks(tmp_path: Path) -> None:
    result = inv(env_file=tmp_path / "missing.env")
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")}
    assert listed >= EXPECTED_TASKS, result.stdout
    assert "--complete" not in result.stdout, "invoke's own options are not the answer"


def test_remainder_keeps_each_argument_as_typed() -> None:
    argv = ["db.shell", "--", "-tA", "-c", "select count(*) from ai_agents"]
    assert remainder(argv) == ["-tA", "-c", "select count(*) from ai_agents"]
    assert remainder(["db.shell", "-c", "select 1"]) == []
    assert remainder(["redis.cli", "--", "--", "x"]) == ["--", "x"], "only the first -- splits"


# --- Tab ----------------------------------------------------------------------------------------


@pytest.fixture
def with_backups(tmp_path: Path) -> Path:
    backups = tmp_path / "backups"
    backups.mkdir()
    for name in ("before-mig.dump", "nightly.sql.gz"):
        (backups / name).write_bytes(b"PGDMP" if name.endswith(".dump") else b"\x1f\x8b")
    return write_env(tmp_path / "stack.env", {"BACKUP_DIR": str(backups)})


@pytest.mark.parametrize(
    ("typed", "offered"),
    [
        ("inv db.restore", ["before-mig.dump", "nightly.sql.gz", "--latest"]),
        ("inv db.restore bef", ["before-mig.dump", "nightly.sql.gz", "--latest"]),
        ("inv db.restore --ye", None),  # an option being typed: invoke's own completion
        ("inv logs -s", ["postgres", "redis", "adminer"]),
        ("inv logs --services re", ["postgres", "redis", "adminer"]),
        ("inv db.backup --format", ["custom", "sql", "directory"]),
        ("inv env --format", ["dotenv", "shell", "json"]),
    ],
)
def test_tab_offers_backup_names_services_and_formats(
    with_backups: Path, typed: str, offered: list[str] | None
) -> None:
    """What the shell's completion function (`inv --print-completion-script bash`) gets
    offered; the shell then keeps what starts with the word being typed."""
    result = inv("--complete", "--", *typed.split(), env_file=with_backups)
    assert result.returncode == 0, result.stderr
    words = result.stdout.split()
    if offered is None:
        assert "--yes" in words and "--into" in words
    else:
        assert sorted(words) == sorted(offered)


def test_tab_with_a_broken_env_file_offers_no_backups_and_no_traceback(tmp_path: Path) -> None:
    result = inv("--complete", "--", "inv", "db.restore", env_file=tmp_path / "missing.env")
    assert result.returncode == 0
    assert result.stdout.split() == ["--latest"]
    assert result.stderr == ""


def test_tab_still_offers_tasks(tmp_path: Path) -> None:
    result = inv("--complete", "--", "inv", "db.", env_file=tmp_path / "missing.env")
    assert {"db.backup", "db.restore", "db.migration", "logs"} <= set(result.stdout.split())
