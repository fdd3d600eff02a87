"""The checks behind `inv validate`: tools, env file, compose file, SQL files, ports, live
services and security, each with a status (pass / warn / fail / skip), a finding and the fix.
"""

from __future__ import annotations

import difflib
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scripts import envfile, ports, prerequisites
from scripts.console import display_path
from scripts.errors import StackError
from scripts.settings import (
    DEFAULTS,
    PLACEHOLDER_PASSWORD,
    PORT_KEY_OF,
    PROCESS_ONLY_KEYS,
    ROOT,
    URL_KEYS,
    Settings,
    env_file_path,
    merge,
    problems_in,
    url_disagreements,
    url_unset,
)

if TYPE_CHECKING:
    from scripts.backends import Backend

AREAS = ("Tools", "Env file", "Compose file", "SQL files", "Ports", "Data", "Services", "Security")
CORE_TABLES = ("users", "ai_agents", "reviews", "transactions")
EXTENSIONS = ("uuid-ossp", "pgcrypto")
WEAK = {"password", "postgres", "redis", "secret", "admin", "123456", "12345678", "changeme"}
_SQL_NAME = re.compile(r"^(\d+)[-_][a-z0-9][a-z0-9_-]*\.sql$")


@dataclass(frozen=True)
class Check:
    area: str
    name: str
    status: str  # pass | warn | fail | skip
    finding: str
    fix: str = ""


class Report:
    """The checks in the order they ran, with a count per status."""

    def __init__(self) -> None:
        self.checks: list[Check] = []

    def add(self, area: str, name: str, status: str, finding: str, fix: str = "") -> None:
        self.checks.append(Check(area, name, status, finding, fix))

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("pass", "warn", "fail", "skip"), 0)
        for check in self.checks:
            counts[check.status] += 1
        return counts

    def as_json(self) -> dict[str, Any]:
        return {"checks": [asdict(c) for c in self.checks], "summary": self.counts()}


def run(*, offline: bool, environ: Mapping[str, str] | None = None) -> Report:
    """Every check; live ones (services, security probes) are skipped with `offline`."""
    environ = os.environ if environ is None else environ
    report = Report()
    settings = _env_file(report, environ)
    backend_name = _backend_name(settings, environ)
    # Independent groups, mostly waiting on subprocesses: run them side by side.
    from concurrent.futures import ThreadPoolExecutor

    parts = [Report(), Report(), Report()]
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = [
            pool.submit(_tools, parts[0], backend_name),
            pool.submit(_compose_file, parts[1], settings),
            pool.submit(_sql_files, parts[2]),
        ]
        for future in done:
            future.result()
    for part in parts:
        report.checks += part.checks
    if settings is None:
        for area in ("Ports", "Services", "Security"):
            report.add(area, "all", "skip", "the env file must be fixed first")
        return report
    from scripts.backends import get_backend

    backend = get_backend(settings, backend_name)
    _ports(report, settings, backend)
    _owner(report, backend)
    _orphans(report)
    _backups_private(report, settings)
    if offline:
        report.add("Services", "all", "skip", "skipped with --offline")
        report.add("Security", "live probes", "skip", "skipped with --offline")
        return report
    _services(report, settings)
    _security(report, settings)
    return report


def _backend_name(settings: Settings | None, environ: Mapping[str, str]) -> str:
    from scripts.backends import resolve_backend_name

    if settings is not None:
        try:
            return resolve_backend_name(settings)
        except StackError:  # e.g. a Docker socket this user may not use: Tools says so
            return "native"
    path = env_file_path(environ)
    try:  # the env file's choice counts even when another of its keys is bad
        from_file = envfile.parse_values(envfile.read_text(path), environ)
    except StackError:
        from_file = {}
    configured = merge(from_file, environ).get("STACK_BACKEND", "auto").strip().lower()
    if configured in ("native", "compose"):
        return configured
    from scripts.docker_engine import compose_version, engine_version

    try:
        return "compose" if engine_version() and compose_version() else "native"
    except StackError:
        return "native"


# --- tools -----------------------------------------------------------------------------------


def _tools(report: Report, backend: str) -> None:
    area = "Tools"
    if backend == "compose":
        from scripts.docker_engine import compose_version, engine_version

        try:
            engine = engine_version()
        except StackError as exc:
            report.add(area, "Docker engine", "fail", exc.message)
            engine = None
        else:
            report.add(
                area,
                "Docker engine",
                "pass" if engine else "fail",
                f"answers, version {engine}" if engine else "no Docker engine answers",
                "" if engine else "start it with `inv setup`, or set STACK_BACKEND=native",
            )
        compose = compose_version()
        report.add(
            area,
            "Docker Compose v2",
            "pass" if compose else "fail",
            f"version {compose}" if compose else "`docker compose version` does not answer",
            "" if compose else "run `inv setup` to link Compose v2",
        )
        return
    for check in prerequisites.native_checks(with_tools=True):
        tools_only = check.needed_for == "adminer"
        name = check.name.split(" (")[0]
        if check.ok:
            report.add(area, name, "pass", f"{check.found}")
        else:
            report.add(
                area,
                name,
                "warn" if tools_only else "fail",
                check.problem or "not found" + (" (needed by `inv up` only)" if tools_only else ""),
                "run `inv setup`",
            )
    bindir = prerequisites.postgres_bindir()
    if bindir is not None:
        for tool in ("psql", "pg_dump", "pg_restore"):
            version = _first_line([str(bindir / tool), "--version"])
            ok = version is not None and f" {prerequisites.PG_MAJOR}." in version
            report.add(
                area,
                f"{tool} (host)",
                "pass" if ok else "fail",
                version or f"{bindir / tool} does not run",
                "" if ok else f"install PostgreSQL {prerequisites.PG_MAJOR}'s client tools",
            )


def _first_line(argv: list[str]) -> str | None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = result.stdout.strip().splitlines()
    return lines[0] if result.returncode == 0 and lines else None


# --- env file --------------------------------------------------------------------------------


def _env_file(report: Report, environ: Mapping[str, str]) -> Settings | None:
    area = "Env file"
    path = env_file_path(environ)
    shown = display_path(path)
    if not path.is_file():
        report.add(
            area,
            "exists",
            "fail",
            f"no env file at {shown}",
            "run `inv init` to create it from .env.example (passwords are generated)",
        )
        return None
    report.add(area, "exists", "pass", shown)
    mode = path.stat().st_mode & 0o777
    report.add(
        area,
        "private",
        "pass" if not mode & 0o077 else "fail",
        f"mode {mode:04o}" + ("" if not mode & 0o077 else ": other users can read the passwords"),
        "" if not mode & 0o077 else f"chmod 600 {shown}",
    )
    _git_ignored(report, path)
    try:
        text = envfile.read_text(path)
    except StackError as exc:
        report.add(area, "readable", "fail", exc.message, "save it as UTF-8, readable by you")
        return None
    parsed = envfile.parse(text, environ)
    for note in parsed.notes(shown):
        report.add(area, "format", "warn", note)
    _unknown_keys(report, text)
    problems = problems_in(merge(parsed.values, environ))
    for problem in problems:
        report.add(area, problem.split(" ", 1)[0].split("=", 1)[0], "fail", problem)
    if problems:
        return None
    report.add(area, "values", "pass", "every key present and valid")
    from scripts.settings import load

    settings = load(environ)
    _passwords(report, settings)
    _urls(report, settings)
    return settings


def _git_ignored(report: Report, path: Path) -> None:
    area = "Env file"
    if not path.resolve().is_relative_to(ROOT) or shutil.which("git") is None:
        report.add(area, "ignored by git", "pass", "outside the repository")
        return
    result = subprocess.run(
        ["git", "check-ignore", "--quiet", str(path)], cwd=ROOT, capture_output=True, check=False
    )
    if result.returncode == 0:
        report.add(area, "ignored by git", "pass", ".gitignore keeps it out of commits")
    elif result.returncode == 1:
        report.add(
            area,
            "ignored by git",
            "fail",
            f"{display_path(path)} is not ignored: its passwords could be committed",
            f"add {path.name} to .gitignore",
        )
    else:
        report.add(area, "ignored by git", "skip", "not a git checkout")


def _unknown_keys(report: Report, text: str) -> None:
    known = [*DEFAULTS, *PROCESS_ONLY_KEYS]
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = re.match(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=", stripped)
        if match is None:
            report.add(
                "Env file",
                f"line {number}",
                "fail",
                f"line {number} is not KEY=VALUE: Docker Compose refuses such a file",
                "fix or remove the line",
            )
            continue
        key = match[1]
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]}?" if close else "remove it if it is a leftover"
            report.add("Env file", key, "warn", f"{key} is not a setting of the stack", hint)


def _passwords(report: Report, settings: Settings) -> None:
    for key, secret in (
        ("POSTGRES_PASSWORD", settings.postgres_password.reveal()),
        ("REDIS_PASSWORD", settings.redis_password.reveal()),
    ):
        if secret == PLACEHOLDER_PASSWORD:
            report.add(
                "Env file",
                key,
                "fail",
                f"{key} is still the placeholder from .env.example",
                "set a real password (inv init generates one for a new env file)",
            )
        elif len(secret) < 12 or secret.lower() in WEAK:
            report.add(
                "Env file",
                key,
                "warn",
                f"{key} is weak ({len(secret)} characters)",
                "use 12 or more random characters",
            )
        else:
            report.add("Env file", key, "pass", f"{len(secret)} characters, not a placeholder")


def _urls(report: Report, settings: Settings) -> None:
    from scripts.preflight import url_sentence

    for key in URL_KEYS:
        if url_unset(settings.file_values.get(key, "")):
            report.add(
                "Env file",
                key,
                "warn",
                f"{key} is not set in the env file: the application reading it gets none",
                "any `inv` task (e.g. `inv status`) writes the stack's URL there",
            )
        elif parts := url_disagreements(settings, key):
            report.add("Env file", key, "fail", url_sentence(settings, key, parts))
        else:
            report.add("Env file", key, "pass", "agrees with the stack's settings")


# --- compose file ----------------------------------------------------------------------------


def _compose_file(report: Report, settings: Settings | None) -> None:
    import yaml

    area = "Compose file"
    path = ROOT / "docker-compose.yml"
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        report.add(area, "parses", "fail", f"{display_path(path)}: {exc}", "fix the YAML")
        return
    report.add(area, "parses", "pass", display_path(path))
    missing = [finding for _name, ok, finding in _compose_structure(document) if not ok]
    report.add(
        area,
        "structure",
        "fail" if missing else "pass",
        "; ".join(f"expected: {m}" for m in missing)
        if missing
        else "services, tools profile, volumes, network, healthchecks, env-driven ports",
        "restore what is missing (see git history)" if missing else "",
    )
    from scripts.docker_engine import compose_version

    if settings is None or compose_version() is None:
        why = "the env file must be fixed first" if settings is None else "no Docker Compose v2"
        report.add(area, "docker compose config", "skip", why)
        return
    from scripts.backends.compose import compose_argv

    result = subprocess.run(
        compose_argv(settings, "config", "--quiet"),
        env=settings.subprocess_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
    report.add(
        area,
        "docker compose config",
        "pass" if result.returncode == 0 else "fail",
        "Compose accepts the file with this env file" if result.returncode == 0 else detail,
        "" if result.returncode == 0 else "fix what Compose names",
    )


def _compose_structure(document: Any) -> Iterator[tuple[str, bool, str]]:
    services = (document or {}).get("services") or {}
    for service in ("postgres", "redis", "adminer"):
        yield f"service {service}", service in services, f"service {service} defined"
    adminer = services.get("adminer") or {}
    yield "tools profile", adminer.get("profiles") == ["tools"], "adminer runs in profile tools"
    volumes = (document or {}).get("volumes") or {}
    for volume in ("postgres_data", "redis_data"):
        yield f"volume {volume}", volume in volumes, f"named volume {volume}"
    network = ((document or {}).get("networks") or {}).get("default") or {}
    yield (
        "network",
        str(network.get("name", "")).endswith("_network"),
        "default network named <project>_network",
    )
    for service in ("postgres", "redis"):
        test = ((services.get(service) or {}).get("healthcheck") or {}).get("test")
        yield f"{service} healthcheck", bool(test), f"{service} has a healthcheck"
    for service, key in PORT_KEY_OF.items():
        published = " ".join(str(p) for p in (services.get(service) or {}).get("ports") or [])
        ok = f"${{{key}" in published and "${BIND_ADDRESS" in published
        yield f"{service} ports", ok, f"{service} publishes ${{BIND_ADDRESS}}:${{{key}}}"


# --- SQL files -------------------------------------------------------------------------------


def _sql_files(report: Report) -> None:
    area = "SQL files"
    init_dir = ROOT / "docker" / "init-scripts"
    scripts = sorted(p for p in init_dir.glob("*") if p.suffix in (".sql", ".sh", ".gz"))
    if not scripts:
        report.add(area, "init scripts", "fail", f"no init scripts in {display_path(init_dir)}")
    numbers: dict[str, Path] = {}
    for path in scripts:
        match = _SQL_NAME.match(path.name)
        if path.suffix == ".sql" and match is None:
            report.add(area, path.name, "fail", "not named NN-name.sql", "rename it so it sorts")
            continue
        if match is not None and match[1] in numbers:
            report.add(
                area,
                path.name,
                "fail",
                f"shares number {match[1]} with {numbers[match[1]].name}",
                "give each file its own number",
            )
        if match is not None:
            numbers[match[1]] = path
        _parse(report, path)
    migrations_dir = ROOT / "docker" / "migrations"
    try:
        from scripts import migrations

        found = migrations.discover(migrations_dir)
    except StackError as exc:
        report.add(area, "migrations", "fail", exc.message)
        return
    report.add(area, "migrations", "pass", f"{len(found)} migration file(s), names in order")
    for path in sorted(migrations_dir.glob("*.sql")):
        _parse(report, path)


def _parse(report: Report, path: Path) -> None:
    if path.suffix != ".sql":
        report.add("SQL files", path.name, "skip", "not plain SQL: checked when it runs")
        return
    from pglast import parser

    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        parser.parse_sql(text)
    except parser.ParseError as exc:
        location = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
        line = text.count("\n", 0, location) + 1 if location is not None else None
        where = f" at line {line}" if line else ""
        report.add(
            "SQL files",
            path.name,
            "fail",
            f"{display_path(path)}{where}: {exc.args[0]}",
            "fix the SQL",
        )
        return
    report.add("SQL files", path.name, "pass", "parses as PostgreSQL SQL")


# --- ports -----------------------------------------------------------------------------------


def _ports(report: Report, settings: Settings, backend: Backend) -> None:
    try:
        states = backend.states(sizes=False)
    except StackError:  # e.g. no Docker engine: the Tools area says so; judge ports alone
        states = {}
    for service, key in PORT_KEY_OF.items():
        port = settings.port(service)
        try:
            free = ports.is_free(settings.bind_address, port)
        except StackError as exc:  # BIND_ADDRESS is not an address of this machine
            report.add("Ports", f"{service} {port}", "fail", exc.message, "fix BIND_ADDRESS")
            continue
        if free:
            report.add("Ports", f"{service} {port}", "pass", "free")
            continue
        owners = ports.listeners(port)
        ours = _ours(service, states, owners, backend, port)
        if ours:
            report.add("Ports", f"{service} {port}", "pass", f"held by this stack's {ours}")
            continue
        report.add(
            "Ports",
            f"{service} {port}",
            "fail",
            f"port {port} is held by {_describe_owner(owners, port)}",
            f"stop that, or set {key} to a free port",
        )


def _owner(report: Report, backend: Backend) -> None:
    if backend.name != "compose":
        return
    try:
        problem = backend.ownership_problem()
    except StackError as exc:  # no engine: the Tools area says so
        report.add("Ports", "compose project", "skip", exc.message)
        return
    if problem:
        report.add("Ports", "compose project", "fail", problem)
    else:
        report.add("Ports", "compose project", "pass", "owned by this checkout, or by none yet")


def _orphans(report: Report) -> None:
    from scripts.backends.native.layout import orphans_problem

    problem = orphans_problem()
    report.add(
        "Data",
        "orphaned data dirs",
        "warn" if problem else "pass",
        problem or "no data dir of a deleted checkout",
    )


def _ours(
    service: str,
    states: Mapping[str, Any],
    owners: list[ports.Listener],
    backend: Backend,
    port: int,
) -> str:
    state = states.get(service)
    if state is None or not state.running:
        return ""
    if backend.name == "native":
        pid = int(state.detail.removeprefix("pid ")) if state.detail.startswith("pid ") else -1
        return f"{service} (pid {pid})" if any(o.pid == pid for o in owners) else ""
    container = _container_publishing(port)
    return f"container {container}" if container == state.detail else ""


def _container_publishing(port: int) -> str:
    result = subprocess.run(
        ["docker", "ps", "--format", "{{.Names}}\t{{.Ports}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in result.stdout.splitlines():
        name, _, published = line.partition("\t")
        if re.search(rf":{port}->", published):
            return name
    return ""


def _describe_owner(owners: list[ports.Listener], port: int) -> str:
    parts = []
    for owner in owners:
        if owner.name == "docker-proxy":
            container = _container_publishing(port)
            parts.append(
                f"container {container} of another compose project" if container else "Docker"
            )
        elif owner.pid is not None and owner.name in ("postgres", "redis-server"):
            try:
                where = os.readlink(f"/proc/{owner.pid}/cwd")  # noqa: PTH115
            except OSError:
                where = "?"
            parts.append(f"another {owner.describe()} working in {where}")
        else:
            parts.append(owner.describe())
    return ", ".join(parts)


# --- live services ---------------------------------------------------------------------------


def _services(report: Report, settings: Settings) -> None:
    from scripts.probes import ProtocolError, RedisError, redis_command
    from scripts.stack import probe_for

    for service in ("postgres", "redis"):
        result = probe_for(settings, service)()
        report.add(
            "Services",
            f"{service} answers",
            "pass" if result.ok else "fail",
            result.detail,
            "" if result.ok else "start it with `inv up-core`; see `inv logs`",
        )
        if service == "postgres" and result.ok:
            try:
                _schema(report, settings)
            except StackError as exc:  # e.g. DATABASE_URL points elsewhere than POSTGRES_*
                report.add("Services", "schema", "fail", exc.message, "fix DATABASE_URL")
        if service == "redis" and result.ok:
            try:
                reply = redis_command(
                    (settings.connect_host, settings.redis_port),
                    settings.redis_password.reveal(),
                    "CONFIG",
                    "GET",
                    "appendonly",
                )
            except (OSError, RedisError, ProtocolError) as exc:
                report.add("Services", "redis AOF", "warn", f"CONFIG GET failed: {exc}")
            else:
                on = isinstance(reply, list) and b"yes" in reply
                report.add(
                    "Services",
                    "redis AOF",
                    "pass" if on else "fail",
                    "appendonly yes" if on else "appendonly is off: data is lost on a crash",
                    "" if on else "keep docker/redis/redis.conf's appendonly yes",
                )
    from scripts import swap

    leftover = swap.leftovers_problem(settings)
    report.add(
        "Services",
        "restore leftovers",
        "warn" if leftover else "pass",
        leftover or "no scratch or set-aside database, no temporary role",
    )
    adminer = probe_for(settings, "adminer")()
    if adminer.refused:
        report.add("Services", "adminer answers", "skip", "not started (`inv up` starts it)")
    else:
        report.add(
            "Services",
            "adminer answers",
            "pass" if adminer.ok else "fail",
            adminer.detail,
            "" if adminer.ok else "see `inv logs -s adminer`",
        )


def _schema(report: Report, settings: Settings) -> None:
    from scripts.database import connect

    area = "Services"
    with connect(settings) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        }
        missing = [t for t in CORE_TABLES if t not in tables]
        report.add(
            area,
            "schema tables",
            "fail" if missing else "pass",
            f"missing: {', '.join(missing)}"
            if missing
            else "users, ai_agents, reviews, transactions",
            "run `inv reset` then `inv init` to recreate the schema" if missing else "",
        )
        extensions = {r[0] for r in conn.execute("SELECT extname FROM pg_extension").fetchall()}
        absent = [e for e in EXTENSIONS if e not in extensions]
        report.add(
            area,
            "extensions",
            "fail" if absent else "pass",
            f"missing: {', '.join(absent)}" if absent else "uuid-ossp, pgcrypto",
            "CREATE EXTENSION them (see 01-init-database.sql)" if absent else "",
        )
        triggered = {
            r[0]
            for r in conn.execute(
                """
                SELECT c.relname FROM pg_trigger t
                JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid
                WHERE NOT t.tgisinternal AND p.proname = 'set_updated_at'
                """
            ).fetchall()
        }
        untriggered = [t for t in CORE_TABLES if t in tables and t not in triggered]
        report.add(
            area,
            "updated_at triggers",
            "fail" if untriggered else "pass",
            f"no updated_at trigger on: {', '.join(untriggered)}"
            if untriggered
            else "on all 4 tables",
            "recreate them (see 01-init-database.sql)" if untriggered else "",
        )
        unindexed = [
            f"{r[0]}.{r[1]}"
            for r in conn.execute(
                """
                SELECT c.conrelid::regclass::text, a.attname
                FROM pg_constraint c
                JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
                WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace
                  AND NOT EXISTS (
                    SELECT 1 FROM pg_index i
                    WHERE i.indrelid = c.conrelid AND i.indkey[0] = c.conkey[1])
                """
            ).fetchall()
        ]
        report.add(
            area,
            "foreign-key indexes",
            "warn" if unindexed else "pass",
            f"no index on: {', '.join(unindexed)}" if unindexed else "every foreign key is indexed",
            "add an index (a migration)" if unindexed else "",
        )
        if "users" in tables:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE email = 'admin@example.com'), count(*) FROM users"
            ).fetchone()
            seeded = row is not None and row[0] > 0
            report.add(
                area,
                "seed data",
                "pass" if seeded else "warn",
                f"{row[1] if row else 0} users, dev logins present"
                if seeded
                else "the dev seed is missing",
                "" if seeded else "run `inv db.seed`",
            )


# --- security --------------------------------------------------------------------------------


def _security(report: Report, settings: Settings) -> None:
    from scripts.probes import PgError, PgLogin, ProtocolError, RedisError, pg_query, redis_command

    area = "Security"
    for service in PORT_KEY_OF:
        port = settings.port(service)
        addresses = _listening(port)
        if not addresses:
            continue
        wrong = sorted(a for a in addresses if a != settings.bind_address)
        report.add(
            area,
            f"{service} bind",
            "fail" if wrong else "pass",
            f"listens on {', '.join(wrong)}:{port}, BIND_ADDRESS is {settings.bind_address}"
            if wrong
            else f"listens on {settings.bind_address}:{port} only",
            "restart it (`inv down`, `inv up-core`) so it binds BIND_ADDRESS" if wrong else "",
        )
    host = settings.connect_host

    def rejected(password: str) -> bool | None:
        login = PgLogin(
            host, settings.postgres_port, settings.postgres_user, password, settings.postgres_db
        )
        try:
            pg_query(login, "SELECT 1", timeout=5)
        except PgError as exc:
            return exc.code in ("28P01", "28000")
        except (OSError, ProtocolError):
            return None
        return False

    for what, password in (("wrong password", secrets.token_urlsafe(16)), ("no password", "")):
        verdict = rejected(password)
        if verdict is None:
            report.add(area, f"postgres {what}", "skip", "PostgreSQL does not answer")
        else:
            report.add(
                area,
                f"postgres {what}",
                "pass" if verdict else "fail",
                f"a login with {what} is refused" if verdict else f"a login with {what} gets in",
                "" if verdict else "require scram-sha-256 for every connection in pg_hba.conf",
            )
    _least_privilege(report, settings)
    try:
        reply = redis_command((host, settings.redis_port), None, "PING", timeout=5)
    except RedisError as exc:
        refused = "NOAUTH" in str(exc)
        report.add(
            area,
            "redis without password",
            "pass" if refused else "warn",
            "unauthenticated commands are refused" if refused else str(exc),
        )
    except (OSError, ProtocolError):
        report.add(area, "redis without password", "skip", "Redis does not answer")
    else:
        report.add(
            area,
            "redis without password",
            "fail",
            f"an unauthenticated PING answers {reply!r}",
            "set requirepass (REDIS_PASSWORD) and restart Redis",
        )


def _least_privilege(report: Report, settings: Settings) -> None:
    from scripts.probes import PgError, ProtocolError, pg_query
    from scripts.roles import login

    try:
        rows, _ = pg_query(
            login(settings), "SELECT rolsuper FROM pg_roles WHERE rolname = current_user", 5
        )
    except (OSError, PgError, ProtocolError):
        report.add("Security", "application role", "skip", "PostgreSQL does not answer")
        return
    superuser = bool(rows) and rows[0][0] == "t"
    report.add(
        "Security",
        "application role",
        "fail" if superuser else "pass",
        f"{settings.postgres_user} is a superuser"
        if superuser
        else f"{settings.postgres_user} owns its database and is no superuser",
        "run `inv up-core`: it gives the tasks an admin role and takes superuser away"
        if superuser
        else "",
    )


def _listening(port: int) -> set[str]:
    return {address for address, listening, _ in ports.listen_table() if listening == port}


def _backups_private(report: Report, settings: Settings) -> None:
    directory = settings.backup_dir
    if not directory.is_dir():
        report.add("Security", "backups private", "pass", "no backups yet")
        return
    exposed = [
        p
        for p in directory.rglob("*")
        if p.is_file() and p.name != ".gitkeep" and p.stat().st_mode & 0o077
    ]
    if exposed:
        names = ", ".join(display_path(p) for p in exposed[:3]) + (" …" if len(exposed) > 3 else "")
        report.add(
            "Security",
            "backups private",
            "fail",
            f"{len(exposed)} backup file(s) readable by others: {names}",
            f"chmod -R go-rwx {display_path(directory)}",
        )
    else:
        report.add("Security", "backups private", "pass", "readable by you alone")
