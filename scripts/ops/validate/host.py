"""This machine: the backend's tools, who holds the ports, who owns the compose project,
data of deleted checkouts, private backups. None needs a running stack.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from scripts.console import display_path
from scripts.errors import StackError
from scripts.infra import net, prerequisites, procs, run
from scripts.ops.validate.report import Report
from scripts.settings import PORT_KEY_OF, Settings

if TYPE_CHECKING:
    from scripts.backends.base import Backend


def check_tools(report: Report, backend: str, settings: Settings | None = None) -> None:
    if backend == "compose":
        _compose_tools(report)
        if settings is not None:
            _engine_reach(report, settings)
    else:
        _native_tools(report)
        _client_tools(report)


def _compose_tools(report: Report) -> None:
    from scripts.infra.compose_plugin import compose_version
    from scripts.infra.docker import engine_version

    area = "Tools"
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


def _engine_reach(report: Report, settings: Settings) -> None:
    """Where the engine publishes the ports, and who else can reach them there."""
    from scripts.infra import engine

    try:
        point = engine.endpoint(settings.subprocess_env())
    except StackError as exc:
        report.add("Tools", "Docker engine", "fail", exc.message)
        return
    area, name = "Tools", "published ports"
    if point.scheme == "ssh":
        report.add(area, name, "pass",
                   f"on the loopback of {point.hostname}, forwarded to {settings.bind_address} "
                   "here over SSH")  # fmt: skip
    elif not point.remote:
        report.add(area, name, "pass", f"on {settings.bind_address} of this machine")
    elif engine.is_loopback(settings.bind_address):
        report.add(area, name, "fail",
                   f"{point.named()} publishes them on the loopback of {point.hostname}, which "
                   "this machine cannot reach",
                   "use an ssh:// engine (the tasks forward the ports), or set BIND_ADDRESS to "
                   "an address of that host that this machine reaches")  # fmt: skip
    else:
        report.add(area, name, "warn",
                   f"BIND_ADDRESS={settings.bind_address} publishes PostgreSQL, Redis and "
                   f"Adminer on {point.hostname} ({point.named()}) beyond its loopback: anyone "
                   "who reaches that host reaches the database, and Redis's password crosses "
                   "the network in clear text",
                   "prefer an ssh:// engine, whose forwarding keeps every port on loopback, or "
                   "firewall those ports")  # fmt: skip


def _native_tools(report: Report) -> None:
    area = "Tools"
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


def _client_tools(report: Report) -> None:
    """pg_dump, pg_restore and psql on this machine, of the server's major version."""
    area = "Tools"
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
    result = run.run(argv, timeout=10)
    lines = result.stdout.strip().splitlines()
    return lines[0] if result.ok and lines else None


def check_ports(report: Report, settings: Settings, backend: Backend) -> None:
    try:
        states = backend.states(sizes=False)
    except StackError:  # e.g. no Docker engine: the Tools area says so; judge ports alone
        states = {}
    for service, key in PORT_KEY_OF.items():
        port = settings.port(service)
        try:
            free = net.is_free(settings.bind_address, port)
        except StackError as exc:  # BIND_ADDRESS is not an address of this machine
            report.add("Ports", f"{service} {port}", "fail", exc.message, "fix BIND_ADDRESS")
            continue
        if free:
            report.add("Ports", f"{service} {port}", "pass", "free")
            continue
        owners = net.listeners(port)
        ours = _ours(service, states, owners, backend, port, settings)
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


def check_owner(report: Report, backend: Backend) -> None:
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


def check_orphans(report: Report) -> None:
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
    owners: list[net.Listener],
    backend: Backend,
    port: int,
    settings: Settings,
) -> str:
    state = states.get(service)
    if state is None or not state.running:
        return ""
    if backend.name == "compose":
        from scripts.backends import compose_forward

        forwarding = compose_forward.current(settings)
        if forwarding is not None and any(o.pid == forwarding.pid for o in owners):
            return f"ssh forwarding (pid {forwarding.pid}) to container {state.detail}"
    if backend.name == "native":
        ours = procs.family(state.pid) if state.pid else set()
        return f"{service} (pid {state.pid})" if any(o.pid in ours for o in owners) else ""
    container = _container_publishing(port)
    return f"container {container}" if container == state.detail else ""


def _container_publishing(port: int) -> str:
    result = run.run(["docker", "ps", "--format", "{{.Names}}\t{{.Ports}}"])
    for line in result.stdout.splitlines():
        name, _, published = line.partition("\t")
        if re.search(rf":{port}->", published):
            return name
    return ""


def _describe_owner(owners: list[net.Listener], port: int) -> str:
    parts = []
    for owner in owners:
        if owner.name == "docker-proxy":
            container = _container_publishing(port)
            parts.append(
                f"container {container} of another compose project" if container else "Docker"
            )
        elif owner.pid is not None and owner.name in ("postgres", "redis-server"):
            where = procs.working_dir(owner.pid) or "?"
            parts.append(f"another {owner.describe()} working in {where}")
        else:
            parts.append(owner.describe())
    return ", ".join(parts)


def check_backups_private(report: Report, settings: Settings) -> None:
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
