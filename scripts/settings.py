"""Stack settings: the env file and the process environment merged into one validated object.

Owns precedence (process env > env file > defaults), validation, masking of secrets, and the
creation of .env from .env.example with generated passwords. The file's text is
scripts.envfile's; the application's URLs (derived, compared) are scripts.urls'.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from scripts import envfile, names
from scripts.console import display_path as _display
from scripts.envfile import PLACEHOLDER_PASSWORD
from scripts.errors import StackError
from scripts.names import MAIN
from scripts.urls import URL_KEYS, derive_url, mask_url, url_host, url_unset

ROOT = Path(__file__).resolve().parent.parent
ENV_EXAMPLE = ROOT / ".env.example"
DEFAULT_ENV_FILE = ROOT / ".env"
BACKENDS = ("auto", "compose", "native")
ADMIN_PASSWORD_KEY = "POSTGRES_ADMIN_PASSWORD"  # noqa: S105 - a key name
PASSWORD_KEYS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", ADMIN_PASSWORD_KEY)

# Every key the stack reads, with its default; None marks a key the env file must set.
DEFAULTS: dict[str, str | None] = {
    "STACK_BACKEND": "auto",
    "COMPOSE_PROJECT_NAME": "ai_marketplace",
    "STACK_STATE_DIR": ".stack",
    "BACKUP_DIR": "backups",
    "BIND_ADDRESS": "127.0.0.1",
    "STACK_READY_TIMEOUT": "60",
    "POSTGRES_IMAGE": "postgres:15",
    "POSTGRES_USER": None,
    "POSTGRES_PASSWORD": None,
    "POSTGRES_DB": None,
    "POSTGRES_BRANCH": "main",
    "POSTGRES_PORT": "5432",
    "POSTGRES_ADMIN_USER": "postgres",
    # Empty in env files from before the admin role: `inv up-core` generates it then.
    "POSTGRES_ADMIN_PASSWORD": "",
    "REDIS_IMAGE": "redis:7",
    "REDIS_PASSWORD": None,
    "REDIS_PORT": "6379",
    "ADMINER_IMAGE": "adminer:4.8.1",
    "ADMINER_PORT": "8080",
    "DATABASE_URL": "",
    "REDIS_URL": "",
}
# Keys read from the process environment only, never from an env file.
PROCESS_ONLY_KEYS = ("STACK_ENV_FILE",)
PORT_KEYS = ("POSTGRES_PORT", "REDIS_PORT", "ADMINER_PORT")
PORT_KEY_OF = {"postgres": "POSTGRES_PORT", "redis": "REDIS_PORT", "adminer": "ADMINER_PORT"}

_PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_ASCII_PORT = re.compile(r"[0-9]{1,5}")


class SettingsError(StackError):
    """The env file or the environment holds values the stack cannot use."""

    def __init__(self, source: Path, problems: list[str]) -> None:
        self.problems = problems
        count = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{_display(source)} has {count}:\n{lines}")


class Secret:
    """A secret string that never shows its value in repr, str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and secrets.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"


@dataclass(frozen=True)
class Settings:
    """Everything the tasks need to know about one stack."""

    env_file: Path
    backend: str  # auto | compose | native, as configured
    project: str
    state_dir: Path
    backup_dir: Path
    bind_address: str
    ready_timeout: float
    postgres_image: str
    postgres_user: str
    postgres_password: Secret
    postgres_db: str  # the database every task acts on: the current branch's
    postgres_port: int
    postgres_admin_user: str
    postgres_admin_password: Secret  # empty until `inv up-core` makes one (older env files)
    redis_image: str
    redis_password: Secret
    redis_port: int
    adminer_image: str
    adminer_port: int
    # The application's URLs as the env file (or the environment) sets them, or derived from
    # the settings above where unset. The tasks never connect through them.
    database_url: Secret
    redis_url: Secret
    values: Mapping[str, str] = field(repr=False)  # merged raw values, secrets included
    file_values: Mapping[str, str] = field(repr=False, default_factory=dict)  # the file's alone
    file_notes: tuple[str, ...] = ()  # what the env file's text deserves a warning for
    postgres_base_db: str = ""  # POSTGRES_DB: the database the first start created (main's)
    postgres_branch: str = MAIN  # POSTGRES_BRANCH
    # The IP of a remote Docker engine reached over tcp://, whose host publishes the ports
    # (set by the compose backend's preflight); "" when they are on this machine.
    engine_address: str = ""

    @property
    def root(self) -> Path:
        return ROOT

    @property
    def connect_host(self) -> str:
        """The address clients on this machine use to reach the published ports."""
        return self.engine_address or connect_host(self.bind_address)

    def port(self, service: str) -> int:
        """The published port of postgres, redis or adminer."""
        return int(self.values[PORT_KEY_OF[service]])

    @property
    def adminer_url(self) -> str:
        return f"http://{url_host(self.connect_host)}:{self.adminer_port}/"

    @property
    def database_url_masked(self) -> str:
        return mask_url(self.database_url.reveal())

    @property
    def redis_url_masked(self) -> str:
        return mask_url(self.redis_url.reveal())

    def pg_conninfo(self, dbname: str | None = None, *, admin: bool = False) -> dict[str, str]:
        """Where and as whom the tasks log in to the stack's PostgreSQL: from POSTGRES_* and
        BIND_ADDRESS only, never from DATABASE_URL (psycopg.connect keyword arguments). As
        the application's role, or with `admin` as the stack's superuser."""
        user, password = (
            (self.postgres_admin_user, self.postgres_admin_password)
            if admin
            else (self.postgres_user, self.postgres_password)
        )
        return {
            "host": self.connect_host,
            "hostaddr": self.connect_host,  # an IP (BIND_ADDRESS is one): beats PGHOSTADDR
            "port": str(self.postgres_port),
            "user": user,
            "password": password.reveal(),
            "dbname": self.postgres_db if dbname is None else dbname,
        }

    def subprocess_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The process environment with this stack's merged values (for docker compose)."""
        env = dict(os.environ if base is None else base)
        env.update(self.values)
        env["STACK_ENV_FILE"] = str(self.env_file)
        return env


def env_file_path(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    chosen = environ.get("STACK_ENV_FILE", "").strip()
    if not chosen:
        return DEFAULT_ENV_FILE
    path = Path(chosen).expanduser()
    return path if path.is_absolute() else (Path.cwd() / path)


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the env file named by STACK_ENV_FILE (default .env), apply the environment."""
    environ = os.environ if environ is None else environ
    path = env_file_path(environ)
    parsed = envfile.read(path, environ)
    return _build(
        path,
        merge(parsed.values, environ),
        file_values=parsed.values,
        notes=tuple(parsed.notes(_display(path))),
    )


def merge(from_file: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """Every key the stack reads: process environment, else the env file, else the default."""
    merged: dict[str, str] = {}
    for key, default in DEFAULTS.items():
        if key in environ:
            merged[key] = environ[key]
        elif key in from_file:
            merged[key] = from_file[key]
        elif default is not None:
            merged[key] = default
    return merged


def problems_in(raw: Mapping[str, str]) -> list[str]:
    """Every problem with the merged values, each naming the key and the fix (secrets masked)."""

    def text(key: str) -> str:
        return raw.get(key, "").strip()

    problems = [
        f"{key} is missing: add it (see .env.example)."
        for key, default in DEFAULTS.items()
        if default is None and key not in raw
    ]
    if text("STACK_BACKEND").lower() not in BACKENDS:
        problems.append(
            f"STACK_BACKEND={text('STACK_BACKEND')!r} is not a backend: "
            "use auto, compose or native."
        )
    if not _PROJECT_NAME.match(text("COMPOSE_PROJECT_NAME")):
        problems.append(
            f"COMPOSE_PROJECT_NAME={text('COMPOSE_PROJECT_NAME')!r} is not a valid project name: "
            "use lowercase letters, digits, '-' and '_', starting with a letter or digit."
        )
    if not _is_ip(text("BIND_ADDRESS")):
        problems.append(
            f"BIND_ADDRESS={text('BIND_ADDRESS')!r} is not an IP address: use 127.0.0.1 "
            "(this machine only) or 0.0.0.0 (every interface)."
        )
    problems += _port_problems(raw)
    for key in ("POSTGRES_USER", "POSTGRES_DB", "POSTGRES_ADMIN_USER"):
        if key in raw and not text(key):
            problems.append(f"{key} is empty: set a name (see .env.example).")
        elif len(text(key).encode()) > 63:
            problems.append(f"{key} is longer than PostgreSQL's 63-byte limit: shorten it.")
    problems += _branch_problems(text("POSTGRES_DB"), text("POSTGRES_BRANCH") or MAIN)
    if text("POSTGRES_ADMIN_USER") and text("POSTGRES_ADMIN_USER") == text("POSTGRES_USER"):
        problems.append(
            "POSTGRES_ADMIN_USER and POSTGRES_USER are both "
            f"{text('POSTGRES_USER')!r}: the application's role must not be the superuser, so "
            "give each its own name (the default admin is postgres)."
        )
    problems += _password_problems(raw)
    if _positive(text("STACK_READY_TIMEOUT")) is None:
        problems.append(
            f"STACK_READY_TIMEOUT={text('STACK_READY_TIMEOUT')!r} is not a positive number "
            "of seconds."
        )
    problems += [
        f"{key} is empty: name an image, e.g. {DEFAULTS[key]}."
        for key in ("POSTGRES_IMAGE", "REDIS_IMAGE", "ADMINER_IMAGE")
        if not text(key)
    ]
    problems += [
        f"{key} is empty: name a directory, e.g. {DEFAULTS[key]}."
        for key in ("STACK_STATE_DIR", "BACKUP_DIR")
        if not text(key)
    ]
    return problems


def _branch_problems(base: str, branch: str) -> list[str]:
    if bad := names.problem("branch", branch):
        return [f"POSTGRES_BRANCH: {bad} `inv db.branch --list` shows the branches."]
    if long := names.too_long(base, branch, names.branch_database(base, branch)):
        return [f"POSTGRES_BRANCH: {long}"]
    return []


def _password_problems(raw: Mapping[str, str]) -> list[str]:
    problems = []
    for key in PASSWORD_KEYS:
        value = raw.get(key)
        if value is None:
            continue
        if not value and key != ADMIN_PASSWORD_KEY:
            problems.append(
                f"{key} is empty: set a password, or remove the env file and run `inv init` to "
                "generate one."
            )
        elif re.search(r"[\r\n\0]", value):
            problems.append(
                f"{key} contains a line break: the servers take a password of one line, so "
                "choose one without (a \\n inside double quotes is a line break)."
            )
        elif key == "REDIS_PASSWORD" and re.search(r'["\\\s]', value):
            problems.append(
                "REDIS_PASSWORD contains a quote, backslash or white space, which Redis's "
                "config file cannot hold: choose a password without them."
            )
    return problems


def _port_problems(raw: Mapping[str, str]) -> list[str]:
    problems: list[str] = []
    seen: dict[int, str] = {}
    for key in PORT_KEYS:
        value = raw.get(key, "").strip()
        # ASCII digits only: str.isdigit() also takes fullwidth digits, which no server reads.
        if not (_ASCII_PORT.fullmatch(value) and 1 <= int(value) <= 65535):
            problems.append(f"{key}={value!r} is not a port: use a whole number from 1 to 65535.")
        elif int(value) in seen:
            problems.append(
                f"{seen[int(value)]} and {key} are both {value}: give each service its own port."
            )
        else:
            seen[int(value)] = key
    return problems


def _positive(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number > 0 and number != float("inf") else None


def _build(
    path: Path,
    raw: dict[str, str],
    *,
    file_values: Mapping[str, str] | None = None,
    notes: tuple[str, ...] = (),
) -> Settings:
    if problems := problems_in(raw):
        raise SettingsError(path, problems)

    def text(key: str) -> str:
        return raw.get(key, "").strip()

    bind = text("BIND_ADDRESS")
    backend = text("STACK_BACKEND").lower()
    ports = {key: int(text(key)) for key in PORT_KEYS}
    state_dir = Path(text("STACK_STATE_DIR")).expanduser()
    backup_dir = Path(text("BACKUP_DIR")).expanduser()
    values = dict(raw)
    values["STACK_BACKEND"] = backend
    settings = Settings(
        env_file=path,
        backend=backend,
        project=text("COMPOSE_PROJECT_NAME"),
        state_dir=state_dir if state_dir.is_absolute() else ROOT / state_dir,
        backup_dir=backup_dir if backup_dir.is_absolute() else ROOT / backup_dir,
        bind_address=bind,
        ready_timeout=float(text("STACK_READY_TIMEOUT")),
        postgres_image=text("POSTGRES_IMAGE"),
        postgres_user=text("POSTGRES_USER"),
        postgres_password=Secret(raw["POSTGRES_PASSWORD"]),
        postgres_db=names.branch_database(text("POSTGRES_DB"), text("POSTGRES_BRANCH") or MAIN),
        postgres_base_db=text("POSTGRES_DB"),
        postgres_branch=text("POSTGRES_BRANCH") or MAIN,
        postgres_port=ports["POSTGRES_PORT"],
        postgres_admin_user=text("POSTGRES_ADMIN_USER"),
        postgres_admin_password=Secret(raw.get(ADMIN_PASSWORD_KEY, "")),
        redis_image=text("REDIS_IMAGE"),
        redis_password=Secret(raw["REDIS_PASSWORD"]),
        redis_port=ports["REDIS_PORT"],
        adminer_image=text("ADMINER_IMAGE"),
        adminer_port=ports["ADMINER_PORT"],
        database_url=Secret(""),
        redis_url=Secret(""),
        values=values,
        file_values=dict(file_values or {}),
        file_notes=notes,
    )
    database_url = text("DATABASE_URL")
    redis_url = text("REDIS_URL")
    if url_unset(database_url):
        database_url = derive_url(settings, "DATABASE_URL", database_url)
    if url_unset(redis_url):
        redis_url = derive_url(settings, "REDIS_URL", redis_url)
    values.update(DATABASE_URL=database_url, REDIS_URL=redis_url)
    return dataclasses.replace(
        settings, database_url=Secret(database_url), redis_url=Secret(redis_url)
    )


def placeholder_passwords(settings: Settings) -> list[str]:
    """The password keys that still hold .env.example's placeholder."""
    return [key for key in PASSWORD_KEYS if settings.values.get(key) == PLACEHOLDER_PASSWORD]


def connect_host(bind_address: str) -> str:
    """Where clients on this machine reach ports bound to `bind_address` (wildcard: loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind_address, bind_address)  # noqa: S104


def _is_ip(value: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def new_password() -> str:
    """A generated password: random, URL-safe (nothing any reader or URL needs to escape)."""
    return secrets.token_urlsafe(24)


def create_env_file(
    path: Path, *, backend: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Write a new env file from .env.example: generated passwords, URLs to match, mode 0600.

    Values set in the process environment are written as they are, so the file agrees
    with what this process uses. Returns the values written. Refuses to overwrite.
    """
    environ = os.environ if environ is None else environ
    template = ENV_EXAMPLE.read_text(encoding="utf-8")
    values = envfile.parse_values(template)
    for key in values:
        if key in environ:
            values[key] = environ[key]
    for key in PASSWORD_KEYS:
        if values.get(key, PLACEHOLDER_PASSWORD) == PLACEHOLDER_PASSWORD:
            values[key] = new_password()
    values["STACK_BACKEND"] = backend
    for url_key in URL_KEYS:
        if url_key not in environ:
            values[url_key] = ""  # derived below from the values just chosen
    derived = _build(path, values)
    values["DATABASE_URL"] = derived.database_url.reveal()
    values["REDIS_URL"] = derived.redis_url.reveal()

    lines = []
    for line in template.splitlines():
        match = envfile.LINE.match(line)
        if match and not line.lstrip().startswith("#") and match["key"] in values:
            lines.append(f"{match['key']}={envfile.quote(values[match['key']])}")
        else:
            lines.append(line)
    envfile.write(path, "\n".join(lines) + "\n", mode=0o600, exclusive=True)
    return values
