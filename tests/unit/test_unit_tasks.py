"""tasks.py: the StackError wrapper, every task's help, and the `inv` command line."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from invoke.exceptions import Exit
from invoke.tasks import Task

import tasks
from scripts.errors import StackError
from scripts.settings import ROOT
from tests.unit.unit_support import inv_command_problem, write_env

EXPECTED_TASKS = {
    "init",
    "setup",
    "up-core",
    "up",
    "down",
    "clean",
    "reset",
    "health",
    "status",
    "logs",
    "validate",
    "open",
    "env",
    "db.shell",
    "db.backup",
    "db.backups",
    "db.prune",
    "db.restore",
    "db.migrate",
    "db.migration",
    "db.seed",
    "db.diagram",
    "db.snapshot",
    "db.snapshots",
    "db.rollback",
    "db.reset",
    "db.branch",
    "redis.cli",
    "redis.backup",
}


def all_tasks() -> dict[str, Task[Any]]:
    return {name: tasks.ns[name] for name in tasks.ns.task_names}


# --- user_errors ----------------------------------------------------------------------------


def test_user_errors_turns_a_stack_error_into_exit_with_its_code() -> None:
    @tasks.user_errors
    def failing() -> None:
        raise StackError("Port 5432 is taken: set POSTGRES_PORT.", exit_code=3)

    with pytest.raises(Exit) as caught:
        failing()
    assert caught.value.message == "✘ Port 5432 is taken: set POSTGRES_PORT."
    assert caught.value.code == 3
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__  # `from None`: no traceback chain


def test_user_errors_default_exit_code_is_1() -> None:
    @tasks.user_errors
    def failing() -> None:
        raise StackError("boom")

    with pytest.raises(Exit) as caught:
        failing()
    assert caught.value.code == 1


def test_user_errors_leaves_other_exceptions_and_results_alone() -> None:
    @tasks.user_errors
    def buggy(value: int) -> int:
        if value:
            raise KeyError("a bug: keep the traceback")
        return 42

    assert buggy(0) == 42
    with pytest.raises(KeyError):
        buggy(1)


def test_user_errors_keeps_name_docstring_and_signature() -> None:
    def body(c: object, yes: bool = False) -> None:
        """Help text."""

    wrapped = tasks.user_errors(body)
    assert wrapped.__name__ == "body"
    assert wrapped.__doc__ == "Help text."
    assert list(inspect.signature(wrapped).parameters) == ["c", "yes"]


# --- the collection -----------------------------------------------------------------------


def test_the_collection_has_the_documented_tasks() -> None:
    assert set(all_tasks()) == EXPECTED_TASKS


@pytest.mark.parametrize("name", sorted(EXPECTED_TASKS))
def test_every_task_has_a_docstring(name: str) -> None:
    task = tasks.ns[name]
    assert (task.__doc__ or "").strip(), f"`inv {name}` has no help text"


@pytest.mark.parametrize("name", sorted(EXPECTED_TASKS))
def test_every_task_parameter_has_help(name: str) -> None:
    task = tasks.ns[name]
    parameters = list(task.argspec(task.body).parameters)  # without the context
    assert not [p for p in parameters if p not in task.help], (
        f"`inv {name}` options without help: {[p for p in parameters if p not in task.help]}"
    )
    assert not [h for h in task.help if h not in parameters], f"help for no option in {name}"
    assert all(text.strip() for text in task.help.values())


def test_every_task_is_wrapped_by_user_errors() -> None:
    unwrapped = [
        name for name, task in all_tasks().items() if not hasattr(task.body, "__wrapped__")
    ]
    assert unwrapped == []


# --- the command line -----------------------------------------------------------------------


def inv(*args: str, env_file: Path) -> subprocess.CompletedProcess[str]:
    """`inv ARGS` in the checkout with STACK_ENV_FILE set to the test's own file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STACK_", "COMPOSE_"))}
    env["STACK_ENV_FILE"] = str(env_file)
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_inv_list_shows_every_task(tmp_path: Path) -> None:
    result = inv("--list", env_file=tmp_path / "missing.env")
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.splitlines()[1:] if line.startswith("  ")}
    assert listed >= EXPECTED_TASKS, result.stdout


def test_an_unknown_service_is_one_line_and_a_usage_error(tmp_path: Path) -> None:
    result = inv("logs", "--services", "postgres,mysql", env_file=tmp_path / "missing.env")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "✘ No service named mysql: choose from postgres, redis, adminer."
    )


def test_a_missing_env_file_says_run_inv_init(tmp_path: Path) -> None:
    result = inv("status", env_file=tmp_path / "missing.env")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "missing.env" in result.stderr
    assert "run `inv init`" in result.stderr


def test_reset_without_a_terminal_asks_for_yes_and_deletes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "redis_data").mkdir(parents=True)
    (state / "redis_data" / "dump.rdb").write_text("data")
    env_file = write_env(tmp_path / "stack.env", {"STACK_STATE_DIR": str(state)})
    result = inv("reset", env_file=env_file)
    assert result.returncode == 1
    assert "✘ reset deletes all data: run `inv reset --yes` to confirm." in result.stderr
    assert (state / "redis_data" / "dump.rdb").read_text() == "data"


def test_every_inv_command_the_project_tells_users_to_run_exists() -> None:
    # Messages, the env template and the compose file send users to `inv NAME --flag ...`:
    # each such command must parse (f-string fields are filled with a service name, with
    # a number where an option takes one, or with a task name where a task is the field).
    sources = [
        ROOT / "tasks.py",
        ROOT / ".env.example",
        ROOT / "docker-compose.yml",
        *sorted((ROOT / "scripts").rglob("*.py")),
    ]
    problems = []
    for path in sources:
        for command in re.findall(r"`inv ([^`]+)`", path.read_text(encoding="utf-8")):
            if command.startswith("-"):
                continue  # `inv --list`: invoke's own options
            problem = inv_command_problem(re.sub(r"\{[^}]*\}", "postgres", command))
            for filler in ("1", "status"):
                if problem and "{" in command:
                    problem = inv_command_problem(re.sub(r"\{[^}]*\}", filler, command))
            if problem:
                problems.append(f"{path.relative_to(ROOT)}: `inv {command}`: {problem}")
    assert problems == []
