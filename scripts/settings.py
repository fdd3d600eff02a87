"""Stack settings: the env file and the process environment merged into one validated object.

Owns the env-file format, precedence (process env > env file > defaults), derived URLs,
masking of secrets, and the creation of .env from .env.example with generated passwords.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from scripts.console import display_path as _display
from scripts.errors import StackError

ROOT = Path(__file__).resolve().parent.parent
ENV_EXAMPLE = ROOT / ".env.example"
DEFAULT_ENV_FILE = ROOT / ".env"
BACKENDS = ("auto", "compose", "native")
PLACEHOLDER_PASSWORD = "change-me"  # noqa: S105 - the marker that init replaces
PASSWORD_KEYS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD")

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
    "POSTGRES_PORT": "5432",
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
_INTERPOLATION = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?-)?(?P<default>[^}]*)\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)
# A quoted value, optionally followed by a comment: 'literal' or "with \" escapes".
_QUOTED = re.compile(r"""^(?:'(?P<single>[^']*)'|"(?P<double>(?:[^"\\]|\\.)*)")(?:\s+#.*)?$""")
_LINE = re.compile(r"^\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(?P<value>.*?)\s*$")


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
    postgres_db: str
    postgres_port: int
    redis_image: str
    redis_password: Secret
    redis_port: int
    adminer_image: str
    adminer_port: int
    database_url: Secret
    redis_url: Secret
    values: Mapping[str, str] = field(repr=False)  # merged raw values, secrets included

    @property
    def root(self) -> Path:
        return ROOT

    @property
    def connect_host(self) -> str:
        """The address clients on this machine use to reach the published ports."""
        return connect_host(self.bind_address)

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


def parse_env_text(text: str, lookup: Mapping[str, str] | None = None) -> dict[str, str]:
    """Parse .env text the way Docker Compose does for the cases this project uses.

    KEY=VALUE lines, `export` prefix, # comments, single quotes (literal), double quotes
    (escapes), and ${VAR} / ${VAR:-default} / $VAR interpolation from earlier keys, then
    from `lookup` (the process environment).
    """
    values: dict[str, str] = {}
    outer = {} if lookup is None else lookup
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE.match(raw)
        if match is None:
            continue  # not KEY=VALUE: `inv validate` reports it (Docker Compose refuses it)
        key, value = match["key"], match["value"]
        quoted = _QUOTED.match(value)
        if quoted and quoted["single"] is not None:
            values[key] = quoted["single"]
            continue
        if quoted and quoted["double"] is not None:
            value = _unescape(quoted["double"])
        else:
            value = re.sub(r"\s+#.*$", "", value)  # trailing comment on an unquoted value
        values[key] = _interpolate(value, values, outer)
    return values


def _unescape(value: str) -> str:
    escapes = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$$"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m[1], "\\" + m[1]), value)


def _interpolate(value: str, earlier: Mapping[str, str], outer: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match["braced"] or match["plain"]
        found = outer.get(name, earlier.get(name))
        if match["op"] == ":-" and not found:
            return match["default"]
        if match["op"] == "-" and found is None:
            return match["default"]
        return found or ""

    parts = value.split("$$")  # $$ is a literal dollar sign
    return "$".join(_INTERPOLATION.sub(replace, part) for part in parts)


def read_env_file(path: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StackError(
            f"No env file at {_display(path)}: run `inv init` to create one from .env.example."
        ) from None
    except PermissionError:
        raise StackError(
            f"Cannot read {_display(path)}: make it readable by you (chmod 600 {path})."
        ) from None
    except UnicodeDecodeError:
        raise StackError(f"{_display(path)} is not UTF-8 text: save it as UTF-8.") from None
    return parse_env_text(text, os.environ if environ is None else environ)


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the env file named by STACK_ENV_FILE (default .env), apply the environment."""
    environ = os.environ if environ is None else environ
    path = env_file_path(environ)
    return _build(path, merge(read_env_file(path, environ), environ))


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
    for key in ("POSTGRES_USER", "POSTGRES_DB"):
        if key in raw and not text(key):
            problems.append(f"{key} is empty: set a name (see .env.example).")
        elif len(text(key).encode()) > 63:
            problems.append(f"{key} is longer than PostgreSQL's 63-byte limit: shorten it.")
    problems += [
        f"{key} is empty: set a password, or remove the env file and run `inv init` to "
        "generate one."
        for key in PASSWORD_KEYS
        if key in raw and not raw[key]
    ]
    if re.search(r'["\\\s]', raw.get("REDIS_PASSWORD", "")):
        problems.append(
            "REDIS_PASSWORD contains a quote, backslash or white space, which Redis's config "
            "file cannot hold: choose a password without them."
        )
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


def _port_problems(raw: Mapping[str, str]) -> list[str]:
    problems: list[str] = []
    seen: dict[int, str] = {}
    for key in PORT_KEYS:
        value = raw.get(key, "").strip()
        if not (value.isdigit() and 1 <= int(value) <= 65535):
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
    return number if number > 0 else None


def _build(path: Path, raw: dict[str, str]) -> Settings:
    if problems := problems_in(raw):
        raise SettingsError(path, problems)

    def text(key: str) -> str:
        return raw.get(key, "").strip()

    bind = text("BIND_ADDRESS")
    backend = text("STACK_BACKEND").lower()
    ports = {key: int(text(key)) for key in PORT_KEYS}
    host = url_host(connect_host(bind))
    pg_password, redis_password = raw["POSTGRES_PASSWORD"], raw["REDIS_PASSWORD"]
    database_url = text("DATABASE_URL") or (
        f"postgresql://{quote(text('POSTGRES_USER'), safe='')}:{quote(pg_password, safe='')}"
        f"@{host}:{ports['POSTGRES_PORT']}/{quote(text('POSTGRES_DB'), safe='')}"
    )
    redis_url = text("REDIS_URL") or (
        f"redis://default:{quote(redis_password, safe='')}@{host}:{ports['REDIS_PORT']}/0"
    )
    state_dir = Path(text("STACK_STATE_DIR")).expanduser()
    backup_dir = Path(text("BACKUP_DIR")).expanduser()
    values = dict(raw)
    values.update(DATABASE_URL=database_url, REDIS_URL=redis_url, STACK_BACKEND=backend)
    return Settings(
        env_file=path,
        backend=backend,
        project=text("COMPOSE_PROJECT_NAME"),
        state_dir=state_dir if state_dir.is_absolute() else ROOT / state_dir,
        backup_dir=backup_dir if backup_dir.is_absolute() else ROOT / backup_dir,
        bind_address=bind,
        ready_timeout=float(text("STACK_READY_TIMEOUT")),
        postgres_image=text("POSTGRES_IMAGE"),
        postgres_user=text("POSTGRES_USER"),
        postgres_password=Secret(pg_password),
        postgres_db=text("POSTGRES_DB"),
        postgres_port=ports["POSTGRES_PORT"],
        redis_image=text("REDIS_IMAGE"),
        redis_password=Secret(redis_password),
        redis_port=ports["REDIS_PORT"],
        adminer_image=text("ADMINER_IMAGE"),
        adminer_port=ports["ADMINER_PORT"],
        database_url=Secret(database_url),
        redis_url=Secret(redis_url),
        values=values,
    )


def connect_host(bind_address: str) -> str:
    """Where clients on this machine reach ports bound to `bind_address` (wildcard: loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind_address, bind_address)  # noqa: S104


def url_host(host: str) -> str:
    """A host as URLs write it: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host else host


def _is_ip(value: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def mask_url(url: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:****@host/db

    Everything up to the last @ before the query goes: a password holding an unquoted @ or /
    (which clients then misread) still shows none of itself.
    """
    from urllib.parse import urlsplit

    if urlsplit(url).password is None:
        return url
    head, mark, query = url.partition("?")
    return re.sub(r"^([A-Za-z][\w+.-]*://[^:/@]*:).*@", r"\1****@", head) + mark + query


def create_env_file(
    path: Path, *, backend: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Write a new env file from .env.example: generated passwords, URLs to match, mode 0600.

    Values set in the process environment are written as they are, so the file agrees
    with what this process uses. Returns the values written. Refuses to overwrite.
    """
    environ = os.environ if environ is None else environ
    template = ENV_EXAMPLE.read_text(encoding="utf-8")
    values = parse_env_text(template)
    for key in values:
        if key in environ:
            values[key] = environ[key]
    for key in PASSWORD_KEYS:
        if values.get(key, PLACEHOLDER_PASSWORD) == PLACEHOLDER_PASSWORD:
            values[key] = secrets.token_urlsafe(24)
    values["STACK_BACKEND"] = backend
    for url_key in ("DATABASE_URL", "REDIS_URL"):
        if url_key not in environ:
            values[url_key] = ""  # derived below from the values just chosen
    derived = _build(path, values)
    values["DATABASE_URL"] = derived.database_url.reveal()
    values["REDIS_URL"] = derived.redis_url.reveal()

    lines = []
    for line in template.splitlines():
        match = _LINE.match(line)
        if match and not line.lstrip().startswith("#") and match["key"] in values:
            lines.append(f"{match['key']}={_quote_env(values[match['key']])}")
        else:
            lines.append(line)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return values


def set_env_value(path: Path, key: str, value: str) -> None:
    """Set one key in an env file in place, keeping its comments and mode."""
    lines = path.read_text(encoding="utf-8").splitlines()
    new_line = f"{key}={_quote_env(value)}"
    for index, line in enumerate(lines):
        match = _LINE.match(line)
        if match and not line.lstrip().startswith("#") and match["key"] == key:
            lines[index] = new_line
            break
    else:
        lines.append(new_line)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    partial.chmod(path.stat().st_mode & 0o777)
    partial.replace(path)


def _quote_env(value: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_.,:/@%+=?&\[\]-]*", value):
        return value
    if "'" not in value:
        return f"'{value}'"  # single quotes: literal, no escapes, no interpolation
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$")
    return f'"{escaped}"'
