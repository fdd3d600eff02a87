"""scripts/ops/preflight.py and scripts/ops/appenv.py: what a task checks first, and `inv env`."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import psycopg
import pytest

from scripts import envfile
from scripts.errors import StackError
from scripts.ops import appenv, preflight
from scripts.settings import load
from tests.unit.unit_support import write_env


def settings_with(tmp_path: Path, values: dict[str, str | None], **environ: str):  # type: ignore[no-untyped-def]
    path = write_env(tmp_path / "stack.env", values)
    path.chmod(0o600)
    return load({"STACK_ENV_FILE": str(path), **environ})


def test_unset_urls_are_written_into_the_env_file_derived_and_encoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_with(
        tmp_path,
        {
            "POSTGRES_PASSWORD": "'p@ss:w/rd'",
            "DATABASE_URL": "",
            "REDIS_URL": "redis://default:change-me@127.0.0.1:6379/0",
        },
    )
    monkeypatch.setenv("STACK_ENV_FILE", str(settings.env_file))
    after = preflight.write_unset_urls(settings)
    written = envfile.parse_values(settings.env_file.read_text(encoding="utf-8"))
    assert written["DATABASE_URL"] == (
        "postgresql://marketplace:p%40ss%3Aw%2Frd@127.0.0.1:15432/ai_marketplace"
    )
    assert written["REDIS_URL"] == "redis://default:redis-Secret-2@127.0.0.1:16379/0"
    assert after.file_values["DATABASE_URL"] == written["DATABASE_URL"]
    err = capsys.readouterr().err
    assert "Wrote DATABASE_URL and REDIS_URL into" in err
    assert "p@ss" not in err and "redis-Secret-2" not in err


def test_a_disagreeing_url_refuses_a_changing_task_naming_each_part(tmp_path: Path) -> None:
    settings = settings_with(
        tmp_path, {"DATABASE_URL": "postgresql://marketplace:other@127.0.0.1:5432/ai_marketplace"}
    )
    with pytest.raises(StackError) as caught:
        preflight.check_urls(settings, refuse=True)
    message = caught.value.message
    assert message.startswith("DATABASE_URL in ")
    assert "in its port (the stack's: 15432), password:" in message
    assert "Nothing was changed." in message
    assert "other" not in message.replace("another", "")


def test_a_disagreeing_url_only_warns_a_reading_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_with(tmp_path, {"REDIS_URL": "redis://default:x@127.0.0.1:6379/0"})
    preflight.check_urls(settings, refuse=False)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "REDIS_URL in " in err and "port (the stack's: 16379)" in err


def test_placeholder_passwords_refuse_changing_tasks(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, {"POSTGRES_PASSWORD": "change-me"})
    message = preflight.placeholder_message(settings, ["POSTGRES_PASSWORD"])
    assert "POSTGRES_PASSWORD in " in message and "run `inv init` to generate passwords" in message


def test_a_world_readable_env_file_is_named_with_the_fix(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, {})
    assert preflight.private_mode_problem(settings) is None
    settings.env_file.chmod(0o644)
    problem = preflight.private_mode_problem(settings)
    assert problem is not None
    assert "readable by other users (mode 0644)" in problem and "chmod 600" in problem


def test_settings_from_the_environment_are_named_and_secrets_are_not_shown(
    tmp_path: Path,
) -> None:
    environ = {
        "COMPOSE_PROJECT_NAME": "elsewhere",
        "POSTGRES_PASSWORD": "From-Env-77",
        "POSTGRES_PORT": "15432",  # the same as the file: not named
        "REDIS_URL": "redis://default:Url-Secret-78@127.0.0.1:16379/0",
    }
    settings = settings_with(tmp_path, {}, **environ)
    line = preflight.environment_overrides(settings, environ)
    assert "COMPOSE_PROJECT_NAME=elsewhere (file: aim_unit)" in line
    assert "POSTGRES_PASSWORD (differs)" in line
    assert "REDIS_URL=redis://default:****@127.0.0.1:16379/0" in line
    assert "POSTGRES_PORT" not in line
    assert "From-Env-77" not in line and "Url-Secret-78" not in line


def test_no_environment_no_overrides(tmp_path: Path) -> None:
    assert preflight.environment_overrides(settings_with(tmp_path, {}), {}) == ""


# --- inv env --------------------------------------------------------------------------------


def test_env_masks_passwords_unless_asked(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, {})
    masked = appenv.render(appenv.environment(settings, show_secrets=False), "dotenv")
    assert "pg-Secret-1" not in masked and "redis-Secret-2" not in masked
    values = envfile.parse_values(masked, {})
    assert values["DATABASE_URL"] == "postgresql://marketplace:****@127.0.0.1:15432/ai_marketplace"
    assert values["POSTGRES_PASSWORD"] == values["PGPASSWORD"] == "****"
    shown = appenv.environment(settings, show_secrets=True)
    assert shown["POSTGRES_PASSWORD"] == "pg-Secret-1"
    assert shown["PGPASSWORD"] == "pg-Secret-1"
    assert shown["REDIS_URL"] == "redis://default:redis-Secret-2@127.0.0.1:16379/0"


def test_env_formats_parse_back(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, {"POSTGRES_PASSWORD": "'it is $x'"})
    values = appenv.environment(settings, show_secrets=True)
    as_json = json.loads(appenv.render(values, "json"))
    assert as_json == values
    dotenv_text = appenv.render(values, "dotenv")
    assert envfile.parse_values(dotenv_text, {}) == values
    for line in appenv.render(values, "shell").splitlines():
        word, assignment = shlex.split(line)
        key, _, value = assignment.partition("=")
        assert (word, value) == ("export", values[key])
    url = psycopg.conninfo.conninfo_to_dict(values["DATABASE_URL"])
    assert url["password"] == "it is $x" and url["port"] == "15432"


def test_env_refuses_an_unknown_format_as_a_usage_error() -> None:
    with pytest.raises(StackError) as caught:
        appenv.render({}, "yaml")
    assert caught.value.exit_code == 2
    assert "use dotenv, shell or json" in caught.value.message
