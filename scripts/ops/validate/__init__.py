"""The checks behind `inv validate`: tools, env file, compose file, SQL files, ports, data, live
services and security, each with a status (pass / warn / fail / skip), a finding and the fix.

One module per area: env.py, files.py, host.py (tools, ports, data), live.py (services,
security). A new check is a function there, called from `run`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from scripts import envfile
from scripts.errors import StackError
from scripts.ops.validate import env, files, host, live
from scripts.ops.validate.report import AREAS, Check, Report
from scripts.settings import Settings, env_file_path, merge

__all__ = ["AREAS", "Check", "Report", "run"]


def run(*, offline: bool, environ: Mapping[str, str] | None = None) -> Report:
    """Every check; live ones (services, security probes) are skipped with `offline`."""
    environ = os.environ if environ is None else environ
    report = Report()
    settings = env.check_env_file(report, environ)
    backend_name = _backend_name(settings, environ)
    if settings is not None and backend_name == "compose":
        from scripts.ops.preflight import on_engine_host

        try:
            settings = on_engine_host(settings)
        except StackError as exc:
            report.add("Tools", "Docker engine", "fail", exc.message)
    # Independent groups, mostly waiting on subprocesses: run them side by side.
    from scripts.infra.wait import concurrently

    parts = [Report(), Report(), Report()]
    concurrently(
        {
            "tools": lambda: host.check_tools(parts[0], backend_name, settings),
            "compose file": lambda: files.check_compose_file(parts[1], settings),
            "sql files": lambda: files.check_sql_files(parts[2]),
        }
    )
    for part in parts:
        report.checks += part.checks
    if settings is None:
        for area in ("Ports", "Services", "Security"):
            report.add(area, "all", "skip", "the env file must be fixed first")
        return report
    from scripts.backends import get_backend

    backend = get_backend(settings, backend_name)
    host.check_ports(report, settings, backend)
    host.check_owner(report, backend)
    host.check_orphans(report)
    host.check_backups_private(report, settings)
    if offline:
        report.add("Services", "all", "skip", "skipped with --offline")
        report.add("Security", "live probes", "skip", "skipped with --offline")
        return report
    live.check_services(report, settings)
    live.check_security(report, settings)
    return report


def _backend_name(settings: Settings | None, environ: Mapping[str, str]) -> str:
    """The backend the checks are about, even when the env file has other problems."""
    from scripts.backends.base import resolve

    if settings is not None:
        try:
            return resolve(settings.backend)[0]
        except StackError:  # e.g. a Docker socket this user may not use: Tools says so
            return "native"
    path = env_file_path(environ)
    try:  # the env file's choice counts even when another of its keys is bad
        from_file = envfile.parse_values(envfile.read_text(path), environ)
    except StackError:
        from_file = {}
    configured = merge(from_file, environ).get("STACK_BACKEND", "auto").strip().lower()
    try:
        return resolve(configured if configured in ("native", "compose") else "auto")[0]
    except StackError:
        return "native"
