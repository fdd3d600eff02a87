"""Names of branches and snapshots: what is refused, how git branch names map, how the command
line reads `inv db.snapshot [NAME]` (invoke itself has no optional positional argument)."""

from __future__ import annotations

import copy
import shlex

import pytest

from scripts import names
from scripts.cli import fill_optional_positionals
from scripts.ops.gitfollow import branch_for


@pytest.mark.parametrize("name", ["main", "before-tags", "a", "v2_schema", "x" * 30])
def test_good_names_pass(name: str) -> None:
    assert names.problem("snapshot", name) is None


@pytest.mark.parametrize(
    "name", ["", "Before", "a__b", "-a", "a-", "feature/x", "a b", "x" * 31, "ä", "a--b"]
)
def test_bad_names_get_one_sentence(name: str) -> None:
    problem = names.problem("branch", name)
    assert problem is not None
    assert "\n" not in problem and problem.endswith(".") and "branch name" in problem


def test_kinds_of_database_never_meet() -> None:
    base = "ai_marketplace"
    branch = names.branch_database(base, "snapshot")
    snapshot = names.snapshot_database(base, "x")
    partial = names.partial_database(base, "20261202")
    assert len({branch, snapshot, partial, base}) == 4
    assert names.branch_of(base, branch) == "snapshot"
    assert names.branch_of(base, snapshot) is None  # "snapshot__x" is no branch name
    assert names.branch_of(base, partial) is None
    assert names.snapshot_of(base, branch) is None
    assert names.snapshot_of(base, snapshot) == "x"
    assert names.branch_of(base, base) == names.MAIN


def test_a_name_too_long_for_postgres_is_refused_with_the_room_left() -> None:
    base = "a" * 40
    problem = names.too_long(base, "x" * 20, names.snapshot_database(base, "x" * 20))
    assert problem is not None and "at most 11 characters" in problem


@pytest.mark.parametrize(
    ("git", "expected"),
    [("feature-x", "feature-x"), ("topic", "topic")],
)
def test_plain_git_branch_names_are_kept(git: str, expected: str) -> None:
    assert branch_for(git, {}) == expected


def test_git_branches_that_would_share_a_name_do_not() -> None:
    pairs: dict[str, str] = {"master": "main"}
    one = branch_for("feature/x", pairs)
    pairs["feature/x"] = one
    two = branch_for("feature-x", pairs)
    pairs["feature-x"] = two
    three = branch_for("Feature/X", pairs)
    assert len({one, two, three}) == 3
    assert branch_for("main", pairs) != names.MAIN  # main is POSTGRES_DB: only its pair gets it
    assert all(names.problem("branch", n) is None for n in (one, two, three))
    long = branch_for("feature/" + "y" * 80, pairs)
    assert names.problem("branch", long) is None


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ("db.snapshot", {"name": ""}),
        ("db.snapshot before", {"name": "before"}),
        ("db.snapshot --with-redis before", {"name": "before", "with_redis": True}),
        ("db.snapshot before --with-redis", {"name": "before", "with_redis": True}),
        ("db.snapshot --delete old", {"name": "", "delete": "old"}),
        ("db.snapshot --with-redis", {"name": "", "with_redis": True}),
        ("db.branch --switch main", {"name": "", "switch": "main"}),
        ("db.branch feature", {"name": "feature"}),
        ("db.branch", {"name": ""}),
    ],
)
def test_an_optional_name_may_be_left_out(argv: str, expected: dict[str, object]) -> None:
    from invoke.parser import Parser

    import tasks

    parser = Parser(contexts=copy.deepcopy(tasks.ns).to_contexts())
    parsed = parser.parse_argv(fill_optional_positionals(shlex.split(argv), tasks.ns))
    assert len(parsed) == 1
    kwargs = parsed[0].as_kwargs
    assert {k: kwargs[k] for k in expected} == expected


def test_a_name_that_is_also_a_task_is_the_name() -> None:
    """As invoke reads a required positional argument: `inv db.snapshot init` names the
    snapshot (which is then refused as the stack's own), it does not run `inv init`."""
    from invoke.parser import Parser

    import tasks

    parser = Parser(contexts=copy.deepcopy(tasks.ns).to_contexts())
    parsed = parser.parse_argv(fill_optional_positionals(["db.snapshot", "init"], tasks.ns))
    assert [c.name for c in parsed] == ["db.snapshot"]
    assert parsed[0].as_kwargs["name"] == "init"
    parsed = parser.parse_argv(fill_optional_positionals(["db.snapshot", "--", "x"], tasks.ns))
    assert parsed[0].as_kwargs["name"] == ""
