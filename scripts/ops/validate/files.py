"""The repository's files: the compose file's structure (and `docker compose config`), the
init scripts and migrations named in order and parsed as PostgreSQL SQL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scripts.console import display_path
from scripts.errors import StackError
from scripts.infra import run
from scripts.ops.validate.report import Report
from scripts.settings import PORT_KEY_OF, ROOT, Settings

_SQL_NAME = re.compile(r"^(\d+)[-_][a-z0-9][a-z0-9_-]*\.sql$")


def check_compose_file(report: Report, settings: Settings | None) -> None:
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
    from scripts.infra.compose_plugin import compose_version

    if settings is None or compose_version() is None:
        why = "the env file must be fixed first" if settings is None else "no Docker Compose v2"
        report.add(area, "docker compose config", "skip", why)
        return
    from scripts.backends.compose import compose_argv

    result = run.run(compose_argv(settings, "config", "--quiet"), env=settings.subprocess_env())
    report.add(
        area,
        "docker compose config",
        "pass" if result.ok else "fail",
        "Compose accepts the file with this env file" if result.ok else result.last_line(),
        "" if result.ok else "fix what Compose names",
    )


def _at(document: Any, *keys: str) -> Any:
    """document[k1][k2]... where each level exists and is a mapping, else {}."""
    for key in keys:
        document = document.get(key) if isinstance(document, dict) else None
    return document if document is not None else {}


def _compose_structure(document: Any) -> Iterator[tuple[str, bool, str]]:
    services = _at(document, "services")
    for service in ("postgres", "redis", "adminer"):
        yield f"service {service}", service in services, f"service {service} defined"
    profiles = _at(document, "services", "adminer", "profiles")
    yield "tools profile", profiles == ["tools"], "adminer runs in profile tools"
    volumes = _at(document, "volumes")
    for volume in ("postgres_data", "redis_data"):
        yield f"volume {volume}", volume in volumes, f"named volume {volume}"
    network = str(_at(document, "networks", "default", "name") or "")
    yield "network", network.endswith("_network"), "default network named <project>_network"
    for service in ("postgres", "redis"):
        test = _at(document, "services", service, "healthcheck", "test")
        yield f"{service} healthcheck", bool(test), f"{service} has a healthcheck"
    for service, key in PORT_KEY_OF.items():
        published = " ".join(str(p) for p in _at(document, "services", service, "ports") or [])
        ok = f"${{{key}" in published and "${BIND_ADDRESS" in published
        yield f"{service} ports", ok, f"{service} publishes ${{BIND_ADDRESS}}:${{{key}}}"


def check_sql_files(report: Report) -> None:
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
        from scripts.ops import migrations

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
