"""scripts/settings.py: env-file format, precedence, validation, secrets, writing env files."""

from __future__ import annotations

import stat
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from scripts import envfile
from scripts.envfile import PLACEHOLDER_PASSWORD
from scripts.errors import StackError
from scripts.settings import (
    DEFAULT_ENV_FILE,
    Secret,
    SettingsError,
    create_env_file,
    env_file_path,
    load,
)
from scripts.urls import mask_url, url_disagreements, url_unset
from tests.unit.unit_support import VALID_ENV, generated_settings, write_env

# --- parse_env_text -----------------------------------------------------------------------


def test_comments_blank_lines_and_non_assignments_are_ignored() -> None:
    text = "# a comment\n\n   # indented comment\n# COMMENTED=out\nnot an assignment\nA=1\n"
    assert envfile.parse_values(text) == {"A": "1"}


def test_export_prefix_and_spaces_around_the_equals_sign() -> None:
    assert envfile.parse_values("export A=1\n  B = two  \n") == {"A": "1", "B": "two"}


def test_single_quotes_are_literal() -> None:
    values = envfile.parse_values("B=set\nA='x $B ${B} \\n \" # not a comment'\n")
    assert values["A"] == 'x $B ${B} \\n " # not a comment'


def test_double_quotes_take_escapes_and_keep_spaces_and_hashes() -> None:
    values = envfile.parse_values(r'A="one\ntwo\tthree \"q\" back\\slash \$HOME # kept"' + "\n")
    assert values["A"] == 'one\ntwo\tthree "q" back\\slash $HOME # kept'


def test_trailing_comment_on_an_unquoted_value_is_dropped_but_inner_hash_is_kept() -> None:
    values = envfile.parse_values("A=value # a comment\nB=pass#word\nC=tab\t# comment\n")
    assert values == {"A": "value", "B": "pass#word", "C": "tab"}


def test_trailing_comment_after_a_quoted_value_is_dropped_with_the_quotes() -> None:
    # Docker Compose reads the same env file and gets `s3cret` for both: the tasks must agree,
    # or their probes log in with a password the containers never got.
    values = envfile.parse_values("A='s3cret' # mine\nB=\"s3cret\" # mine\n")
    assert values == {"A": "s3cret", "B": "s3cret"}


def test_interpolation_of_earlier_keys_and_the_process_environment() -> None:
    text = "USER_NAME=alice\nA=${USER_NAME}-x\nB=$USER_NAME/y\nC=${FROM_ENV}\nD=${NOWHERE}\n"
    values = envfile.parse_values(text, {"FROM_ENV": "env-value"})
    assert values["A"] == "alice-x"
    assert values["B"] == "alice/y"
    assert values["C"] == "env-value"
    assert values["D"] == ""


def test_the_process_environment_wins_over_earlier_keys_in_interpolation() -> None:
    # As in Docker Compose: the lookup (process environment) is consulted first.
    values = envfile.parse_values("PORT=1\nURL=x:${PORT}\n", {"PORT": "2"})
    assert values["URL"] == "x:2"


def test_colon_dash_default_applies_when_unset_or_empty() -> None:
    text = "EMPTY=\nSET=value\nA=${UNSET:-dflt}\nB=${EMPTY:-dflt}\nC=${SET:-dflt}\n"
    values = envfile.parse_values(text)
    assert (values["A"], values["B"], values["C"]) == ("dflt", "dflt", "value")


def test_dash_default_applies_only_when_unset() -> None:
    text = "EMPTY=\nSET=value\nA=${UNSET-dflt}\nB=${EMPTY-dflt}\nC=${SET-dflt}\n"
    values = envfile.parse_values(text)
    assert (values["A"], values["B"], values["C"]) == ("dflt", "", "value")


def test_double_dollar_is_a_literal_dollar_sign() -> None:
    values = envfile.parse_values('HOME_X=h\nA=pa$$word\nB=$$HOME_X\nC="$$x"\n', {"x": "nope"})
    assert values == {"HOME_X": "h", "A": "pa$word", "B": "$HOME_X", "C": "$x"}


# --- load: precedence, paths, validation --------------------------------------------------


def test_process_env_beats_env_file_beats_defaults(tmp_path: Path) -> None:
    path = write_env(tmp_path / "stack.env", {"REDIS_IMAGE": None, "POSTGRES_PORT": "15432"})
    environ = {"STACK_ENV_FILE": str(path), "POSTGRES_PORT": "25432", "REDIS_PORT": "26379"}
    settings = load(environ)
    assert settings.postgres_port == 25432  # process env over the file
    assert settings.redis_port == 26379
    assert settings.adminer_port == int(VALID_ENV["ADMINER_PORT"])  # from the file
    assert settings.redis_image == "redis:7"  # neither: the default
    assert settings.env_file == path


def test_process_env_is_used_for_interpolation_in_the_env_file(tmp_path: Path) -> None:
    path = write_env(tmp_path / "stack.env", {"POSTGRES_DB": "${DB_FROM_ENV:-fallback}"})
    assert load({"STACK_ENV_FILE": str(path)}).postgres_db == "fallback"
    environ = {"STACK_ENV_FILE": str(path), "DB_FROM_ENV": "chosen"}
    assert load(environ).postgres_db == "chosen"


def test_stack_env_file_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    path = write_env(tmp_path / "sub" / "stack.env")
    monkeypatch.chdir(tmp_path)
    assert env_file_path({"STACK_ENV_FILE": "sub/stack.env"}) == tmp_path / "sub" / "stack.env"
    assert load({"STACK_ENV_FILE": "sub/stack.env"}).env_file == path


def test_without_stack_env_file_the_checkout_env_is_used() -> None:
    # Only the path is computed: the developer's .env is never read here.
    assert env_file_path({}) == DEFAULT_ENV_FILE
    assert env_file_path({"STACK_ENV_FILE": "  "}) == DEFAULT_ENV_FILE
    assert DEFAULT_ENV_FILE.name == ".env"


def test_missing_env_file_tells_to_run_inv_init(tmp_path: Path) -> None:
    with pytest.raises(StackError) as caught:
        load({"STACK_ENV_FILE": str(tmp_path / "missing.env")})
    assert not isinstance(caught.value, SettingsError)
    assert "missing.env" in caught.value.message
    assert "`inv init`" in caught.value.message
    assert caught.value.exit_code == 1


def test_every_problem_is_reported_at_once_naming_its_key(tmp_path: Path) -> None:
    path = write_env(
        tmp_path / "stack.env",
        {
            "POSTGRES_DB": None,
            "POSTGRES_PORT": "0",
            "REDIS_PORT": "70000",
            "ADMINER_PORT": "abc",
            "STACK_BACKEND": "docker",
            "COMPOSE_PROJECT_NAME": "AI Marketplace",
            "BIND_ADDRESS": "localhost",
            "STACK_READY_TIMEOUT": "0",
            "POSTGRES_PASSWORD": "",
            "REDIS_PASSWORD": "Zebra-Secret-77",
        },
    )
    with pytest.raises(SettingsError) as caught:
        load({"STACK_ENV_FILE": str(path)})
    problems = caught.value.problems
    expected_keys = [
        "POSTGRES_DB is missing",
        "POSTGRES_PORT='0'",
        "REDIS_PORT='70000'",
        "ADMINER_PORT='abc'",
        "STACK_BACKEND='docker'",
        "COMPOSE_PROJECT_NAME='AI Marketplace'",
        "BIND_ADDRESS='localhost'",
        "STACK_READY_TIMEOUT='0'",
        "POSTGRES_PASSWORD is empty",
    ]
    for key in expected_keys:
        assert any(p.startswith(key) for p in problems), (key, problems)
    assert len(problems) == len(expected_keys), problems
    message = caught.value.message
    assert "stack.env has 9 problems:" in message
    assert all(f"  - {p}" in message for p in problems)
    assert "Zebra-Secret-77" not in message


@pytest.mark.parametrize("timeout", ["-5", "abc", "0", "nan"])
def test_ready_timeout_must_be_a_positive_number(tmp_path: Path, timeout: str) -> None:
    path = write_env(tmp_path / "stack.env", {"STACK_READY_TIMEOUT": timeout})
    with pytest.raises(SettingsError) as caught:
        load({"STACK_ENV_FILE": str(path)})
    assert caught.value.problems == [
        f"STACK_READY_TIMEOUT={timeout!r} is not a positive number of seconds."
    ]


def test_ready_timeout_accepts_fractions(tmp_path: Path) -> None:
    path = write_env(tmp_path / "stack.env", {"STACK_READY_TIMEOUT": "2.5"})
    assert load({"STACK_ENV_FILE": str(path)}).ready_timeout == 2.5


def test_duplicate_ports_are_named_both(tmp_path: Path) -> None:
    path = write_env(tmp_path / "stack.env", {"POSTGRES_PORT": "5432", "ADMINER_PORT": "5432"})
    with pytest.raises(SettingsError) as caught:
        load({"STACK_ENV_FILE": str(path)})
    assert caught.value.problems == [
        "POSTGRES_PORT and ADMINER_PORT are both 5432: give each service its own port."
    ]


def test_a_problem_from_the_process_environment_is_reported_too(tmp_path: Path) -> None:
    path = write_env(tmp_path / "stack.env")
    with pytest.raises(SettingsError) as caught:
        load({"STACK_ENV_FILE": str(path), "REDIS_PASSWORD": ""})
    assert caught.value.problems[0].startswith("REDIS_PASSWORD is empty")


def test_problems_never_show_a_password(tmp_path: Path) -> None:
    path = write_env(
        tmp_path / "stack.env",
        {
            "POSTGRES_PASSWORD": "Pg-Hidden-31",
            "REDIS_PASSWORD": "Redis-Hidden-32",
            "POSTGRES_PORT": "x",
            "POSTGRES_USER": "",
            "DATABASE_URL": "postgresql://u:Url-Hidden-33@h:1/d",
        },
    )
    with pytest.raises(SettingsError) as caught:
        load({"STACK_ENV_FILE": str(path)})
    for secret in ("Pg-Hidden-31", "Redis-Hidden-32", "Url-Hidden-33"):
        assert secret not in str(caught.value)


def test_backend_name_is_case_insensitive_and_normalised(tmp_path: Path) -> None:
    path = write_env(tmp_path / "stack.env", {"STACK_BACKEND": "Compose"})
    settings = load({"STACK_ENV_FILE": str(path)})
    assert settings.backend == "compose"
    assert settings.values["STACK_BACKEND"] == "compose"


# --- secrets --------------------------------------------------------------------------------


def test_secret_never_shows_its_value() -> None:
    secret = Secret("Hunter2-Value")
    shown = [repr(secret), str(secret), f"{secret}", f"{secret!r}", "%s" % secret, f"{[secret]}"]  # noqa: UP031
    assert all("Hunter2-Value" not in text for text in shown), shown
    assert secret.reveal() == "Hunter2-Value"


def test_secret_compares_by_value_and_is_falsy_when_empty() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert not Secret("")
    assert Secret("x")


def test_settings_repr_shows_no_password_or_url(tmp_path: Path) -> None:
    settings = generated_settings(tmp_path)
    hidden = [
        settings.postgres_password.reveal(),
        settings.redis_password.reveal(),
        settings.database_url.reveal(),
        settings.redis_url.reveal(),
    ]
    for text in (repr(settings), str(settings), f"{settings}"):
        leaked = [secret for secret in hidden if secret in text]
        assert not leaked, f"Settings' repr shows secrets: {text}"


def test_mask_url_hides_only_the_password() -> None:
    assert (
        mask_url("postgresql://marketplace:pa55@127.0.0.1:5432/db")
        == "postgresql://marketplace:****@127.0.0.1:5432/db"
    )
    assert mask_url("redis://:pa55@127.0.0.1:6379/0") == "redis://:****@127.0.0.1:6379/0"
    assert mask_url("postgresql://127.0.0.1:5432/db") == "postgresql://127.0.0.1:5432/db"
    assert mask_url("postgresql://user@host/db") == "postgresql://user@host/db"


def test_mask_url_hides_every_part_of_a_password_holding_at_or_slash() -> None:
    # Clients take the host after the last @: so must the mask, or "ss/w" would show.
    masked = mask_url("redis://default:p@ss/w@127.0.0.1:6379/0")
    assert masked == "redis://default:****@127.0.0.1:6379/0"
    assert mask_url("postgresql://u:a@b@h:5432/db?x=a@b") == "postgresql://u:****@h:5432/db?x=a@b"


# --- derived URLs ---------------------------------------------------------------------------


def test_a_redis_password_its_config_file_cannot_hold_is_refused(tmp_path: Path) -> None:
    for bad in ("with space", 'with"quote', "back\\slash"):
        path = write_env(tmp_path / "stack.env", {"REDIS_PASSWORD": f"'{bad}'"})
        with pytest.raises(SettingsError, match="REDIS_PASSWORD contains a quote") as caught:
            load({"STACK_ENV_FILE": str(path)})
        assert bad not in caught.value.message


def test_derived_urls_quote_special_characters(tmp_path: Path) -> None:
    password = "p@ss:w/rd?#%x&"
    path = write_env(
        tmp_path / "stack.env",
        {"POSTGRES_PASSWORD": f"'{password}'", "REDIS_PASSWORD": f"'{password}'"},
    )
    settings = load({"STACK_ENV_FILE": str(path)})
    assert settings.postgres_password.reveal() == password
    db = urlsplit(settings.database_url.reveal())
    assert (db.scheme, db.hostname, db.port) == ("postgresql", "127.0.0.1", 15432)
    assert (db.username, unquote(db.password or ""), db.path) == (
        "marketplace",
        password,
        "/ai_marketplace",
    )
    redis = urlsplit(settings.redis_url.reveal())
    assert (redis.scheme, redis.hostname, redis.port, redis.path) == (
        "redis",
        "127.0.0.1",
        16379,
        "/0",
    )
    assert unquote(redis.password or "") == password
    assert password not in settings.database_url_masked
    assert settings.database_url_masked.startswith("postgresql://marketplace:****@127.0.0.1:")
    assert settings.redis_url_masked == "redis://default:****@127.0.0.1:16379/0"


def test_bind_all_interfaces_connects_through_loopback(tmp_path: Path) -> None:
    every_interface = "0.0.0.0"  # noqa: S104 - a setting under test, nothing binds here
    path = write_env(tmp_path / "stack.env", {"BIND_ADDRESS": every_interface})
    settings = load({"STACK_ENV_FILE": str(path)})
    assert settings.bind_address == every_interface
    assert settings.connect_host == "127.0.0.1"
    assert urlsplit(settings.database_url.reveal()).hostname == "127.0.0.1"
    assert urlsplit(settings.redis_url.reveal()).hostname == "127.0.0.1"


def test_ipv6_bind_address_is_bracketed_in_urls(tmp_path: Path) -> None:
    path = write_env(tmp_path / "stack.env", {"BIND_ADDRESS": "::"})
    settings = load({"STACK_ENV_FILE": str(path)})
    assert settings.connect_host == "::1"
    assert "@[::1]:15432/" in settings.database_url.reveal()
    assert urlsplit(settings.redis_url.reveal()).hostname == "::1"


def test_explicit_urls_in_the_env_file_are_kept(tmp_path: Path) -> None:
    url = "postgresql://other:pw@db.example:5432/other"
    path = write_env(tmp_path / "stack.env", {"DATABASE_URL": url})
    assert load({"STACK_ENV_FILE": str(path)}).database_url.reveal() == url


def test_subprocess_env_carries_the_merged_values_and_the_env_file(tmp_path: Path) -> None:
    path = write_env(tmp_path / "stack.env")
    settings = load({"STACK_ENV_FILE": str(path), "POSTGRES_PORT": "25432"})
    env = settings.subprocess_env({"PATH": "/usr/bin", "POSTGRES_PORT": "1"})
    assert env["PATH"] == "/usr/bin"
    assert env["POSTGRES_PORT"] == "25432"
    assert env["REDIS_PASSWORD"] == VALID_ENV["REDIS_PASSWORD"]
    assert env["STACK_ENV_FILE"] == str(path)
    assert env["DATABASE_URL"] == settings.database_url.reveal()


# --- create_env_file ------------------------------------------------------------------------


def test_create_env_file_is_private_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "new" / "stack.env"
    written = create_env_file(path, backend="native", environ={})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    settings = load({"STACK_ENV_FILE": str(path)})
    assert settings.backend == "native"
    assert settings.postgres_password.reveal() == written["POSTGRES_PASSWORD"]
    assert settings.redis_password.reveal() == written["REDIS_PASSWORD"]
    assert settings.project == "ai_marketplace"
    text = path.read_text(encoding="utf-8")
    assert "# --- PostgreSQL 15" in text  # the template's comments are kept
    assert not [v for v in envfile.parse_values(text).values() if PLACEHOLDER_PASSWORD in v]


def test_create_env_file_generates_new_distinct_passwords(tmp_path: Path) -> None:
    first = create_env_file(tmp_path / "a.env", backend="native", environ={})
    second = create_env_file(tmp_path / "b.env", backend="native", environ={})
    passwords = [v[k] for v in (first, second) for k in ("POSTGRES_PASSWORD", "REDIS_PASSWORD")]
    assert len(set(passwords)) == 4
    assert all(p != PLACEHOLDER_PASSWORD and len(p) >= 24 for p in passwords)


def test_create_env_file_urls_agree_with_passwords_and_ports(tmp_path: Path) -> None:
    path = tmp_path / "stack.env"
    environ = {"POSTGRES_PORT": "15433", "REDIS_PORT": "16380"}
    written = create_env_file(path, backend="compose", environ=environ)
    from_file = envfile.parse_values(path.read_text(encoding="utf-8"))
    db = urlsplit(from_file["DATABASE_URL"])
    assert unquote(db.password or "") == written["POSTGRES_PASSWORD"]
    assert (db.username, db.hostname, db.port, db.path) == (
        "marketplace",
        "127.0.0.1",
        15433,
        "/ai_marketplace",
    )
    redis = urlsplit(from_file["REDIS_URL"])
    assert unquote(redis.password or "") == written["REDIS_PASSWORD"]
    assert (redis.hostname, redis.port) == ("127.0.0.1", 16380)
    assert from_file["STACK_BACKEND"] == "compose"


def test_create_env_file_writes_process_env_values(tmp_path: Path) -> None:
    path = tmp_path / "stack.env"
    environ = {
        "COMPOSE_PROJECT_NAME": "aim_unit",
        "POSTGRES_IMAGE": "example/pg:15",
        "POSTGRES_PASSWORD": "Chosen-By-Me",
        "STACK_READY_TIMEOUT": "120",
        "UNRELATED": "not written",
    }
    written = create_env_file(path, backend="native", environ=environ)
    assert written["POSTGRES_PASSWORD"] == "Chosen-By-Me"
    assert written["REDIS_PASSWORD"] != PLACEHOLDER_PASSWORD
    settings = load({"STACK_ENV_FILE": str(path)})  # without that environment
    assert settings.project == "aim_unit"
    assert settings.postgres_image == "example/pg:15"
    assert settings.postgres_password.reveal() == "Chosen-By-Me"
    assert settings.ready_timeout == 120
    assert "UNRELATED" not in path.read_text(encoding="utf-8")


def test_create_env_file_keeps_a_process_env_password_with_quotes_and_dollars(
    tmp_path: Path,
) -> None:
    # `POSTGRES_PASSWORD="it's \$ecret" inv init`: later commands, without that variable,
    # must read back the very password the database was initialised with.
    password = "it's $ecret\\n"
    path = tmp_path / "stack.env"
    create_env_file(path, backend="native", environ={"POSTGRES_PASSWORD": password})
    settings = load({"STACK_ENV_FILE": str(path)})
    assert settings.postgres_password.reveal() == password
    assert unquote(urlsplit(settings.database_url.reveal()).password or "") == password


def test_create_env_file_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "stack.env"
    path.write_text("KEEP=me\n", encoding="utf-8")
    with pytest.raises(FileExistsError):
        create_env_file(path, backend="native", environ={})
    assert path.read_text(encoding="utf-8") == "KEEP=me\n"


# --- set_env_value --------------------------------------------------------------------------


def test_set_env_value_replaces_one_line_keeping_comments_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "stack.env"
    path.write_text(
        "# header comment\nSTACK_BACKEND=auto  \n# STACK_BACKEND=commented\nOTHER='x y'\n",
        encoding="utf-8",
    )
    path.chmod(0o640)
    envfile.update(path, {"STACK_BACKEND": "native"})
    assert path.read_text(encoding="utf-8") == (
        "# header comment\nSTACK_BACKEND=native\n# STACK_BACKEND=commented\nOTHER='x y'\n"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert not path.with_name("stack.env.partial").exists()


def test_set_env_value_appends_a_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "stack.env"
    path.write_text("A=1\n", encoding="utf-8")
    path.chmod(0o600)
    envfile.update(path, {"B": "two words"})
    assert envfile.parse_values(path.read_text(encoding="utf-8")) == {"A": "1", "B": "two words"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "",
        "two words",
        "it's",
        'say "hi"',
        "dollar $HOME and ${HOME}",
        "back\\slash",
        "hash # here",
        "it's $HOME",
        'it\'s "quoted"',
        "it's a\\nb",
    ],
)
def test_set_env_value_round_trips_any_value(tmp_path: Path, value: str) -> None:
    path = tmp_path / "stack.env"
    path.write_text("KEY=old\n", encoding="utf-8")
    envfile.update(path, {"KEY": value})
    assert envfile.parse_values(path.read_text(encoding="utf-8"), {"HOME": "/root"}) == {
        "KEY": value
    }


# --- the application's URLs -------------------------------------------------------------


def test_fullwidth_digits_are_no_port(tmp_path: Path) -> None:
    path = write_env(tmp_path / "stack.env", {"POSTGRES_PORT": "\uff15\uff14\uff13\uff12"})
    with pytest.raises(SettingsError) as caught:
        load({"STACK_ENV_FILE": str(path)})
    assert caught.value.problems[0].startswith("POSTGRES_PORT=")
    assert "is not a port" in caught.value.problems[0]


@pytest.mark.parametrize("key", ["POSTGRES_PASSWORD", "REDIS_PASSWORD"])
def test_a_password_with_a_line_break_is_refused_naming_its_key(tmp_path: Path, key: str) -> None:
    path = write_env(tmp_path / "stack.env", {key: '"line1\\nline2"'})
    with pytest.raises(SettingsError) as caught:
        load({"STACK_ENV_FILE": str(path)})
    assert caught.value.problems == [
        f"{key} contains a line break: the servers take a password of one line, so choose one "
        "without (a \\n inside double quotes is a line break)."
    ]
    assert "line1" not in caught.value.message


@pytest.mark.parametrize(
    ("url", "unset"),
    [
        ("", True),
        ("   ", True),
        ("postgresql://marketplace:change-me@127.0.0.1:5432/ai_marketplace", True),
        ("redis://default:change-me@10.0.0.9:1/0", True),  # whatever host or port
        ("postgresql://marketplace:real@127.0.0.1:5432/ai_marketplace", False),
        ("postgresql://127.0.0.1:5432/ai_marketplace", False),
    ],
)
def test_a_url_is_unset_when_empty_or_still_the_templates(url: str, unset: bool) -> None:
    assert url_unset(url) is unset


def test_placeholder_urls_are_derived_keeping_the_scheme_and_query(tmp_path: Path) -> None:
    path = write_env(
        tmp_path / "stack.env",
        {
            "DATABASE_URL": "postgresql+psycopg://x:change-me@h:1/x?sslmode=disable",
            "REDIS_URL": "redis://default:change-me@h:1/3",
        },
    )
    settings = load({"STACK_ENV_FILE": str(path)})
    assert settings.database_url.reveal() == (
        "postgresql+psycopg://marketplace:pg-Secret-1@127.0.0.1:15432/ai_marketplace"
        "?sslmode=disable"
    )
    assert settings.redis_url.reveal() == "redis://default:redis-Secret-2@127.0.0.1:16379/3"
    assert url_disagreements(settings, "DATABASE_URL") == []


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("postgresql://marketplace:pg-Secret-1@127.0.0.1:15432/ai_marketplace", []),
        ("postgres://marketplace:pg-Secret-1@localhost:15432/ai_marketplace", []),
        ("postgresql+psycopg://marketplace:pg-Secret-1@127.0.0.1:15432/ai_marketplace", []),
        ("postgresql://marketplace:pg-Secret-1@127.0.0.1:5432/ai_marketplace", ["port"]),
        ("postgresql://marketplace:other@127.0.0.1:15432/ai_marketplace", ["password"]),
        (
            "mysql://root:other@db.example:3306/shop",
            ["scheme", "host", "port", "user", "password", "database"],
        ),
        ("postgresql://marketplace:pg-Secret-1@127.0.0.1:15432", ["database"]),
        ("postgresql://marketplace:pg-Secret-1@127.0.0.1:99999/ai_marketplace", ["format"]),
    ],
)
def test_database_url_disagreements_name_each_part(
    tmp_path: Path, url: str, parts: list[str]
) -> None:
    path = write_env(tmp_path / "stack.env", {"DATABASE_URL": url})
    assert url_disagreements(load({"STACK_ENV_FILE": str(path)}), "DATABASE_URL") == parts


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("redis://default:redis-Secret-2@127.0.0.1:16379/0", []),
        ("redis://:redis-Secret-2@127.0.0.1:16379/5", []),
        ("redis://default:redis-Secret-2@127.0.0.1:6379/0", ["port"]),
        ("rediss://someone:x@10.1.1.1:16379/0", ["scheme", "host", "user", "password"]),
    ],
)
def test_redis_url_disagreements_name_each_part(tmp_path: Path, url: str, parts: list[str]) -> None:
    path = write_env(tmp_path / "stack.env", {"REDIS_URL": url})
    assert url_disagreements(load({"STACK_ENV_FILE": str(path)}), "REDIS_URL") == parts


def test_the_tasks_log_in_from_the_settings_never_from_database_url(tmp_path: Path) -> None:
    path = write_env(
        tmp_path / "stack.env", {"DATABASE_URL": "postgresql://evil:pw@203.0.113.9:5432/other"}
    )
    conninfo = load({"STACK_ENV_FILE": str(path)}).pg_conninfo()
    assert conninfo == {
        "host": "127.0.0.1",
        "hostaddr": "127.0.0.1",
        "port": "15432",
        "user": "marketplace",
        "password": "pg-Secret-1",
        "dbname": "ai_marketplace",
    }
